"""DigestLookup.prefetch lists every repository of both sides at once, and leaves a failure for the lookup."""

from __future__ import annotations

import threading
import time

import pytest

from acr_transfer.azure.acr_listing import DigestLookup
from acr_transfer.errors import TransientError
from acr_transfer.refs import ArtifactRef


class SlowListing:
    """A registry listing that takes 0.2 s a repository and counts how many listings run at once."""

    def __init__(self, failing: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.failing, self.listed, self.in_flight, self.most = failing, [], 0, 0
        self.lock = threading.Lock()

    def tag_digests(self, login_server: str, repo: str, wanted: set[str], budget: int) -> dict[str, str | None]:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(0.2)
        with self.lock:
            self.in_flight -= 1
            self.listed.append((login_server, repo))
        if repo in self.failing:
            raise TransientError(f"registry {login_server} answered 503 to the tags of {repo}")
        return {t: f"sha256:{repo}-{t}" for t in wanted}


def refs(repos: int, tags: int = 5) -> list[ArtifactRef]:
    return [ArtifactRef.parse(f"app{r}:v{t}") for r in range(repos) for t in range(tags)]


def test_both_sides_repositories_are_listed_together_and_once() -> None:
    listing = SlowListing()
    source = DigestLookup(listing, "source.example", refs(4))  # type: ignore[arg-type]
    target = DigestLookup(listing, "target.example", refs(4))  # type: ignore[arg-type]
    source.prefetch(target)
    assert sorted(listing.listed) == sorted(
        (h, f"app{r}") for h in ("source.example", "target.example") for r in range(4)
    )
    assert listing.most > 1  # at once, not one after another
    assert source("app2", "v3") == "sha256:app2-v3" and target("app0", "v1") == "sha256:app0-v1"
    assert len(listing.listed) == 8  # the lookups read what was prefetched


def test_a_listing_that_fails_in_prefetch_raises_when_its_artifact_is_asked_for() -> None:
    listing = SlowListing(failing={"app1"})
    lookup = DigestLookup(listing, "source.example", refs(2))  # type: ignore[arg-type]
    lookup.prefetch()  # quiet
    assert lookup("app0", "v0") == "sha256:app0-v0"
    with pytest.raises(TransientError, match="503 to the tags of app1"):
        lookup("app1", "v0")
