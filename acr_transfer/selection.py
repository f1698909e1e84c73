"""Which of a source's tags a route's ``select:`` wants in sync, and why each other one is left out.

The rules apply in one order, and the first that leaves a thing out is the reason reported for it:

    repositories / exclude_repositories   globs over the repository path
    digest tags set aside                  ``sha256-<hex>`` (the referrers tag index) and cosign's
                                           ``sha256-<hex>.sig|.att|.sbom``: they travel as referrers of their subject
    tags / exclude_tags                    regexes, each matching the whole tag
    semver                                 tags that are versions in a range (any of a list)
    latest                                 the N most recently updated survivors per repository

Pure: listings in (``acr_transfer.listing.ListedTag``), decisions out; no I/O, no Prefect. The rules of a
:class:`~acr_transfer.models.Selection` are compiled once (``acr_transfer.patterns``) and cached, since a
selection runs over 10 000+ tags.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from acr_transfer.errors import shown
from acr_transfer.listing import ListedTag
from acr_transfer.models import Selection
from acr_transfer.patterns import Range, glob_pattern, parse_range, parse_version, tag_pattern

DIGEST_TAG = re.compile(r"sha256-(?P<hex>[0-9a-f]{64})(?:\.(?:sig|att|sbom))?")


@dataclass(frozen=True)
class Excluded:
    """One thing not selected (``repo`` or ``repo:tag``) and the rule that said so."""

    what: str
    rule: str


@dataclass(frozen=True)
class Selected:
    """What a selection chose, sorted by (repo, tag), and everything it left out with its reason."""

    tags: list[ListedTag]
    excluded: list[Excluded]


def is_digest_tag(tag: str) -> bool:
    """Whether ``tag`` names a digest rather than a release: ``sha256-<64 hex>`` or cosign's ``….sig/.att/.sbom``."""
    return DIGEST_TAG.fullmatch(tag) is not None


def digest_tag_subject(tag: str) -> str | None:
    """The digest a digest tag refers to (``sha256:<hex>``), or None for an ordinary tag."""
    m = DIGEST_TAG.fullmatch(tag)
    return f"sha256:{m['hex']}" if m else None


@dataclass(frozen=True)
class _Rules:
    """A selection compiled: each rule's text (for reasons) and its compiled form."""

    repositories: tuple[tuple[str, re.Pattern[str]], ...]
    exclude_repositories: tuple[tuple[str, re.Pattern[str]], ...]
    tags: tuple[tuple[str, re.Pattern[str]], ...]
    exclude_tags: tuple[tuple[str, re.Pattern[str]], ...]
    semver: tuple[Range, ...] | None
    semver_text: str
    latest: int | None

    def repository_excluded(self, repo: str) -> str | None:
        if not any(rx.fullmatch(repo) for _, rx in self.repositories):
            return f"not matched by repositories {_listed(t for t, _ in self.repositories)}"
        return next((f"exclude_repositories '{t}'" for t, rx in self.exclude_repositories if rx.fullmatch(repo)), None)

    def tag_excluded(self, tag: str) -> str | None:
        """The reason a tag of a selected repository is left out before ``latest`` applies, or None."""
        subject = digest_tag_subject(tag)
        if subject:
            return f"referrer tag of {subject}"
        if self.tags and not any(rx.fullmatch(tag) for _, rx in self.tags):
            return f"not matched by tags {_listed(t for t, _ in self.tags)}"
        excluded = next((t for t, rx in self.exclude_tags if rx.fullmatch(tag)), None)
        if excluded is not None:
            return f"exclude_tags '{excluded}'"
        if self.semver is not None:
            version = parse_version(tag)
            if version is None:
                return f"not semver (semver {self.semver_text})"
            if not any(version in r for r in self.semver):
                return f"outside semver {self.semver_text}"
        return None


def _listed(texts: Iterable[str]) -> str:
    return shown("[" + ", ".join(f"'{t}'" for t in texts) + "]", 200)


def _compiled(sel: Selection) -> _Rules:
    semver = [sel.semver] if isinstance(sel.semver, str) else sel.semver
    return _rules(
        tuple(sel.repositories),
        tuple(sel.exclude_repositories),
        tuple(sel.tags),
        tuple(sel.exclude_tags),
        None if semver is None else tuple(semver),
        isinstance(sel.semver, list),
        sel.latest,
    )


@lru_cache(maxsize=256)
def _rules(
    repositories: tuple[str, ...],
    exclude_repositories: tuple[str, ...],
    tags: tuple[str, ...],
    exclude_tags: tuple[str, ...],
    semver: tuple[str, ...] | None,
    semver_is_list: bool,
    latest: int | None,
) -> _Rules:
    # keyed by the rules' text: a Selection holds lists, so it is not hashable itself
    semver_text = "" if semver is None else _listed(semver) if semver_is_list else f"'{shown(semver[0], 200)}'"
    return _Rules(
        repositories=tuple((g, glob_pattern(g)) for g in repositories),
        exclude_repositories=tuple((g, glob_pattern(g)) for g in exclude_repositories),
        tags=tuple((p, tag_pattern(p)) for p in tags),
        exclude_tags=tuple((p, tag_pattern(p)) for p in exclude_tags),
        semver=None if semver is None else tuple(parse_range(r) for r in semver),
        semver_text=semver_text,
        latest=latest,
    )


def repository_excluded(sel: Selection, repo: str) -> str | None:
    """Why ``repo`` is not selected (``not matched by repositories [...]``, ``exclude_repositories '…'``), or
    None when it is."""
    return _compiled(sel).repository_excluded(repo)


def select_tags(sel: Selection, repo: str, tags: list[ListedTag]) -> tuple[list[ListedTag], list[Excluded]]:
    """The tags of one repository that ``sel`` selects (sorted by tag), and the others with their reasons.

    Every rule applies, the repository's too: a repository ``sel`` leaves out selects nothing and is reported
    once, as itself. ``latest`` keeps the N most recently ``updated`` of the tags that pass the other rules
    (of equal times, the first by name).
    """
    rules = _compiled(sel)
    reason = rules.repository_excluded(repo)
    if reason is not None:
        return [], [Excluded(repo, reason)]
    kept: list[ListedTag] = []
    excluded: list[Excluded] = []
    for listed in sorted(tags, key=lambda t: t.tag):
        reason = rules.tag_excluded(listed.tag)
        if reason is None:
            kept.append(listed)
        else:
            excluded.append(Excluded(listed.reference, reason))
    if rules.latest is not None and len(kept) > rules.latest:
        newest = sorted(kept, key=lambda t: t.updated, reverse=True)[: rules.latest]  # stable: ties stay by name
        chosen = {t.tag for t in newest}
        older = f"older than the latest {rules.latest}"
        excluded.extend(Excluded(t.reference, older) for t in kept if t.tag not in chosen)
        excluded.sort(key=lambda e: e.what)
        kept = [t for t in kept if t.tag in chosen]
    return kept, excluded


def select(sel: Selection, listing: Mapping[str, list[ListedTag]]) -> Selected:
    """Every tag of ``listing`` (repository → its tags) that ``sel`` selects, sorted by (repo, tag), and what it
    leaves out: a repository once, as itself; a tag of a selected repository as ``repo:tag``."""
    tags: list[ListedTag] = []
    excluded: list[Excluded] = []
    for repo in sorted(listing):
        kept, left_out = select_tags(sel, repo, listing[repo])
        tags.extend(kept)
        excluded.extend(left_out)
    return Selected(tags, excluded)


def pushed_excluded(sel: Selection, repo: str, tag: str) -> str | None:
    """Why a tag just pushed is not selected, or None when it is. ``latest`` does not apply: a push is the
    newest tag of its repository."""
    rules = _compiled(sel)
    return rules.repository_excluded(repo) or rules.tag_excluded(tag)
