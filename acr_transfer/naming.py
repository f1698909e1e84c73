"""Artifacts, batches, and the names every step derives from one transfer id.

Run and blob names are functions of (transfer id, batch, attempt): a retried or restarted flow computes
the same names and so finds what an earlier attempt created, instead of transferring twice. ACR run
names are 5-50 characters of ``[A-Za-z0-9]``; ours are ``x<tid>b<NNN>a<K>`` (export) and
``i<tid>b<NNN>a<K>`` (import).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime

from acr_transfer.errors import ConfigError, shown
from acr_transfer.refs import ArtifactRef, RunName

MAX_PER_RUN = 50
MAX_ARTIFACTS = 2500  # 50 runs of 50; the setting max_artifacts may change it
TRANSFER_ID = re.compile(r"[a-z0-9]{6,20}")
BLOB_CHARS = re.compile(r"^[A-Za-z0-9._/-]+\Z")


def normalise_artifact(ref: str) -> str:
    """``repo`` → ``repo:latest``; ``repo:tag`` and ``repo@sha256:…`` stay as they are (see :class:`ArtifactRef`).

    Raises:
        ConfigError: naming the reference and what is wrong with it.
    """
    return str(ArtifactRef.parse(ref))


def normalise_artifacts(refs: list[str], limit: int = MAX_ARTIFACTS) -> list[str]:
    """Normalise and de-duplicate, keeping the first order; every bad reference is reported at once.

    Args:
        refs: artifact references.
        limit: the most a request may name (checked first, so a huge list fails at once).

    Raises:
        ConfigError: the list is empty, too long, or holds invalid references (all named).
    """
    if not refs:
        raise ConfigError("no artifacts to transfer: give the route 'artifacts' or pass --artifact")
    if len(refs) > limit:
        raise ConfigError(too_many_artifacts(len(refs), limit))
    seen: dict[str, None] = {}
    problems = []
    for ref in refs:
        try:
            seen.setdefault(normalise_artifact(ref), None)
        except ConfigError as e:
            problems.append(e.message)
    if problems:
        shown = problems[:10] + ([f"… and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise ConfigError("invalid artifacts:\n  " + "\n  ".join(shown))
    return list(seen)


def too_many_artifacts(count: int, limit: int) -> str:
    """The message for a request naming more artifacts than ``limit``."""
    return (
        f"{count} artifacts are more than one transfer takes ({limit}, {-(-limit // MAX_PER_RUN)} runs of "
        f"{MAX_PER_RUN}); split them over several transfers or raise ACR_TRANSFER_MAX_ARTIFACTS"
    )


def batches(artifacts: list[str], size: int = MAX_PER_RUN) -> list[list[str]]:
    """Split into runs of at most ``size`` (ACR takes at most 50 artifacts per run)."""
    size = max(1, min(size, MAX_PER_RUN))
    return [artifacts[i : i + size] for i in range(0, len(artifacts), size)]


def derive_transfer_id(seed: str) -> str:
    """A stable 12-character id from a seed (the flow run id): the same seed gives the same id."""
    return hashlib.sha256(seed.encode()).hexdigest()[:12]


def run_name(kind: str, transfer_id: str, batch: int, attempt: int) -> str:
    """``x…`` for export, ``i…`` for import; always 5-50 alphanumerics (see :class:`RunName`)."""
    if kind not in ("export", "import"):
        raise ValueError(f"run kind must be export or import, not {kind!r}")
    return str(RunName("export" if kind == "export" else "import", transfer_id, batch, attempt))


def blob_path_problem(value: str) -> str | None:
    """What makes a blob name unsafe to hand to ARM and storage, or None.

    Unicode letters and punctuation are fine (both escape them on the wire); what could change which blob is
    meant, or how a log line reads, is not: empty, '.' or '..' segments (so no leading '/', '//' or trailing
    '/'), a trailing '.', backslashes, control and format characters, separators other than ' ', surrogates.
    """
    segments = value.split("/")
    if not value or len(value) > 1024:
        return f"blob name '{shown(value)}' must be 1-1024 characters (it has {len(value)})"
    if any(s in ("", ".", "..") for s in segments) or value.endswith("."):
        return f"blob name '{shown(value)}' has an empty, '.' or '..' segment or ends in '/' or '.'"
    odd = next((ch for ch in value if ch == "\\" or (unicodedata.category(ch)[0] in "CZ" and ch != " ")), None)
    if odd is not None:
        return f"blob name '{shown(value)}' holds {shown(repr(odd))} (no backslashes, control or invisible characters)"
    return None


def blob_name(template: str, *, route: str, transfer_id: str, batch: int, when: datetime | None = None) -> str:
    """Render the route's blob name template and check it is a safe blob path.

    Raises:
        ConfigError: the result is empty, too long, has '..'/empty segments or odd characters.
    """
    when = when or datetime.now(UTC)
    try:
        name = template.format(route=route, transfer_id=transfer_id, batch=f"{batch:03d}", date=when.strftime("%Y%m%d"))
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"blob_name_template '{shown(template)}' cannot be rendered: {shown(str(e))}") from None
    if not BLOB_CHARS.match(name) or blob_path_problem(name):
        raise ConfigError(
            f"blob name '{shown(name)}' from template '{shown(template)}' is not a safe blob path: use letters, "
            "digits, '.', '_', '-' and '/' between non-empty segments, no '..'"
        )
    return name


@dataclass(frozen=True)
class BatchPlan:
    """One export run + one blob + one import run."""

    index: int
    artifacts: list[str]
    blob_name: str

    def export_run(self, transfer_id: str, attempt: int) -> str:
        return run_name("export", transfer_id, self.index, attempt)

    def import_run(self, transfer_id: str, attempt: int) -> str:
        return run_name("import", transfer_id, self.index, attempt)


@dataclass(frozen=True)
class TransferPlan:
    """Everything derived before anything is created."""

    route: str
    transfer_id: str
    artifacts: list[str]
    batches: list[BatchPlan] = field(default_factory=list)


def plan_transfer(
    route: str,
    template: str,
    transfer_id: str,
    refs: list[str],
    batch_size: int = MAX_PER_RUN,
    max_artifacts: int = MAX_ARTIFACTS,
) -> TransferPlan:
    """Normalise, de-duplicate and batch the artifacts and name every blob.

    ``{date}`` renders today's UTC date: a transfer resumed on another day would derive other blob names,
    so resumable routes should leave it out (the default template does).

    Raises:
        ConfigError: bad or too many artifacts, or a bad blob name.
    """
    if not TRANSFER_ID.fullmatch(transfer_id):
        raise ConfigError(f"transfer id '{shown(transfer_id)}' must be 6-20 lowercase letters or digits")
    artifacts = normalise_artifacts(refs, max_artifacts)
    return plan_batches(route, template, transfer_id, batches(artifacts, batch_size))


def plan_batches(route: str, template: str, transfer_id: str, chunks: list[list[str]]) -> TransferPlan:
    """Name the blob of every batch of an already cut plan (a sync's frozen batches; none at all is a plan
    that sends nothing).

    Raises:
        ConfigError: a batch holds more than ACR takes, or the template gives two batches one blob name.
    """
    if any(len(chunk) > MAX_PER_RUN for chunk in chunks):
        raise ConfigError(f"a batch holds more than {MAX_PER_RUN} artifacts, more than ACR takes in one run")
    artifacts = [ref for chunk in chunks for ref in chunk]
    plans = [
        BatchPlan(i, list(chunk), blob_name(template, route=route, transfer_id=transfer_id, batch=i))
        for i, chunk in enumerate(chunks, start=1)
    ]
    if len({p.blob_name for p in plans}) != len(plans):
        raise ConfigError(
            f"blob_name_template '{shown(template)}' must contain {{batch}} when a transfer has several batches"
        )
    return TransferPlan(route, transfer_id, artifacts, plans)
