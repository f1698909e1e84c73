"""References as values: an artifact (``repo``, ``repo:tag``, ``repo@sha256:…``) and our derived run names.

This is the only module that knows what those strings mean. Everything else parses once, with
:meth:`ArtifactRef.parse` or :meth:`RunName.parse`, and passes the value (or its ``str()``) around:

>>> ArtifactRef.parse("team/app")
ArtifactRef(repository='team/app', tag='latest', digest=None)
>>> str(ArtifactRef.parse("team/app@sha256:" + "a" * 64)).endswith("a" * 64)
True
>>> RunName.parse("xabc123b002a1")
RunName(kind='export', transfer_id='abc123', batch=2, attempt=1)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from acr_transfer.errors import ConfigError, shown

# the OCI distribution spec's repository name grammar (path components joined by '/')
REPO_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"{REPO_PART}(?:/{REPO_PART})*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
ANY_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")  # what a registry may announce
MAX_REFERENCE = 512
MAX_REPOSITORY = 256
DEFAULT_TAG = "latest"


@dataclass(frozen=True, order=True)
class ArtifactRef:
    """One artifact in a registry: a repository and either a tag or a digest (never both, never neither)."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ArtifactRef:
        """Parse and normalise: ``repo`` → ``repo:latest``; ``repo:tag`` and ``repo@sha256:…`` stay.

        Raises:
            ConfigError: naming the reference and what is wrong with it (empty, too long, a registry host in
                front, a bad repository, tag or digest).
        """
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(
                f"artifact {shown(text)!r} is empty or not text; use repo, repo:tag or repo@sha256:<64 hex>"
            )
        ref = text.strip()
        if len(ref) > MAX_REFERENCE:
            raise ConfigError(f"artifact '{shown(ref, 40)}' is longer than {MAX_REFERENCE} characters")
        tag: str | None
        digest: str | None
        if "@" in ref:
            repo, _, digest = ref.partition("@")
            if not DIGEST.fullmatch(digest):
                raise ConfigError(f"artifact '{shown(ref)}' has an invalid digest; expected sha256:<64 lowercase hex>")
            tag = None
        else:
            slash, colon = ref.rfind("/"), ref.rfind(":")
            repo, tag = (ref[:colon], ref[colon + 1 :]) if colon > slash else (ref, DEFAULT_TAG)
            if not TAG.fullmatch(tag):
                raise ConfigError(f"artifact '{shown(ref)}' has an invalid tag '{shown(tag)}'")
            digest = None
        first = repo.split("/", 1)[0]
        if "/" in repo and first != ".." and ("." in first or ":" in first or first == "localhost"):
            raise ConfigError(
                f"artifact '{shown(ref)}' starts with a registry host '{shown(first)}'; name the repository only "
                "(the route says which registry)"
            )
        if not is_repository(repo):
            raise ConfigError(
                f"artifact '{shown(ref)}' has an invalid repository '{shown(repo)}': lowercase letters, digits and "
                ". _ - separators, path segments joined by '/'"
            )
        return cls(repo, tag, digest)

    @classmethod
    def lenient(cls, text: str) -> ArtifactRef | None:
        """:meth:`parse`, or None for text that is no reference (e.g. what a service reported)."""
        try:
            return cls.parse(text)
        except ConfigError:
            return None

    @property
    def reference(self) -> str:
        """What follows the repository in a manifest URL: the digest, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def by_digest(self) -> bool:
        return self.digest is not None

    def with_digest(self, digest: str) -> ArtifactRef:
        """The same repository, pinned to ``digest`` (what a tag resolved to)."""
        return ArtifactRef(self.repository, None, digest)

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}" if self.digest else f"{self.repository}:{self.tag}"


def is_repository(name: str) -> bool:
    """A valid OCI repository name of at most 256 characters."""
    return len(name) <= MAX_REPOSITORY and REPOSITORY.fullmatch(name) is not None


def is_tag(name: str) -> bool:
    return TAG.fullmatch(name) is not None


RunKind = Literal["export", "import"]
_PREFIX: dict[str, RunKind] = {"x": "export", "i": "import"}
_RUN = re.compile(r"(?P<kind>[xi])(?P<tid>[a-z0-9]{6,20})b(?P<batch>\d{3,})a(?P<attempt>\d+)")
ACR_NAME = re.compile(r"[A-Za-z0-9]{5,50}")


@dataclass(frozen=True)
class RunName:
    """The name of one attempt of one batch's export or import run: ``x<tid>b<NNN>a<K>`` / ``i<tid>b<NNN>a<K>``.

    Derived from the transfer id, so a retried or restarted flow finds what an earlier attempt created.
    """

    kind: RunKind
    transfer_id: str
    batch: int
    attempt: int

    @classmethod
    def parse(cls, name: str) -> RunName | None:
        """The parts of one of our run names; None for any other name (a trigger's run, someone else's)."""
        m = _RUN.fullmatch(name)
        if m is None:
            return None
        return cls(_PREFIX[m["kind"]], m["tid"], int(m["batch"]), int(m["attempt"]))

    def __str__(self) -> str:
        prefix = "x" if self.kind == "export" else "i"
        name = f"{prefix}{self.transfer_id}b{self.batch:03d}a{self.attempt}"
        if not ACR_NAME.fullmatch(name):
            raise ConfigError(f"derived run name '{shown(name)}' is not 5-50 letters or digits")
        return name
