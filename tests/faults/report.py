"""Turn the fault tests' observations into the README's Reliability tables (``make faults-report``).

    python -m tests.faults.report build/faults.jsonl [docs/faults-report.md] [README.md]

Writes the markdown file and replaces the README's text between the faults-report markers with it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- faults-report:begin -->", "<!-- faults-report:end -->"
TARGET_ORDER = [
    "ARM PUT run",
    "ARM GET run",
    "ARM list runs",
    "Key Vault get secret",
    "storage list",
    "storage copy",
    "registry pull",
]
FAULT_ORDER = ["429 + Retry-After", "500", "503", "dropped connection", "2 s latency"]


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def render(records: list[dict[str, Any]]) -> str:
    """Markdown: the fault matrix, the crash table and the permanent-fault table (last record of a case wins)."""
    tables = ("matrix", "crash", "permanent", "durability")
    by_table: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {t: {} for t in tables}
    for r in records:
        if r["table"] == "matrix":
            by_table["matrix"][(r["target"], r["fault"])] = r
        elif r["table"] == "crash":
            by_table["crash"][(r["point"],)] = r
        elif r["table"] == "permanent":
            by_table["permanent"][(r["fault"], r["caught"])] = r
        elif r["table"] == "durability":
            by_table["durability"][(r["case"],)] = r
    written = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    out = [f"_Written by `make faults-report` on {written} from {len(records)} cases._", ""]
    out += _matrix(by_table["matrix"])
    out += _crashes(by_table["crash"].values())
    out += _permanent(by_table["permanent"].values())
    out += _durability(by_table["durability"].values())
    return "\n".join(out).rstrip() + "\n"


def _matrix(cases: dict[tuple[str, ...], dict[str, Any]]) -> list[str]:
    if not cases:
        return []
    faults = [f for f in FAULT_ORDER if any(k[1] == f for k in cases)]
    targets = [t for t in TARGET_ORDER if any(k[0] == t for k in cases)]
    lines = [
        "**Transient faults** — each cell is one real transfer with the fault injected into the first matching "
        "requests (two for errors, one for latency): ✓ = completed with digests equal and exactly one Succeeded "
        "export and import run; then, for the request that suffered most, how many times it was sent from its "
        "first fault to its first clean answer, and the seconds that took (Retry-After and backoff included).",
        "",
        "| call \\ fault | " + " | ".join(faults) + " |",
        "|---|" + "---|" * len(faults),
    ]
    for t in targets:
        cells = []
        for f in faults:
            r = cases.get((t, f))
            cells.append("—" if r is None else f"✓ {r['attempts']} req, {r['recover_seconds']:.1f} s")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    total = sum(r["transfer_seconds"] for r in cases.values())
    lines += ["", f"{len(cases)} transfers, {total / len(cases):.1f} s each on average (runs of 0.3 s).", ""]
    return lines


def _crashes(cases: Iterable[dict[str, Any]]) -> list[str]:
    rows = list(cases)
    if not rows:
        return []
    lines = [
        "**A crash at every step** — the transfer's process is SIGKILLed at the point, then the same transfer id "
        "is run again:",
        "",
        "| killed | outcome of the re-run | export runs | import runs | blobs left (as an uninterrupted run) "
        "| re-run took |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        blobs = ", ".join(f"`{b}`" for b in r["blobs_left"]) or "none"
        lines.append(
            f"| {r['point']} | {r['outcome']} | {r['export_runs']} | {r['import_runs']} | {blobs} "
            f"| {r['recover_seconds']:.1f} s |"
        )
    return [*lines, ""]


def _permanent(cases: Iterable[dict[str, Any]]) -> list[str]:
    rows = list(cases)
    if not rows:
        return []
    lines = [
        "**Permanent faults** — one attempt, one message, no retry:",
        "",
        "| fault | caught by | run PUTs | task attempts | message |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        message = r["message"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['fault']} | {r['caught']} | {r['run_puts']} | {r['attempts']} | {message} |")
    return [*lines, ""]


def _durability(cases: Iterable[dict[str, Any]]) -> list[str]:
    rows = list(cases)
    if not rows:
        return []
    lines = [
        "**Outages and kills longer than a retry** — a service down for longer than any fixed retry budget, or a "
        "whole `sync-routes` killed:",
        "",
        "| case | outcome | observed |",
        "|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['outcome']} | {r['observed']} |")
    return [*lines, ""]


def splice(readme: str, table: str) -> str:
    """The README with the text between the markers replaced (the markers kept)."""
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"README has no {BEGIN} … {END} markers to write the report between")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    source = Path(argv[0])
    if not source.exists():
        print(f"no observations in {source}: run the fault tests with ACR_TRANSFER_FAULTS_REPORT set", file=sys.stderr)
        return 1
    out = Path(argv[1]) if len(argv) > 1 else Path("docs/faults-report.md")
    readme = Path(argv[2]) if len(argv) > 2 else Path("README.md")
    table = render(load(source))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Reliability: fault-injection report\n\n" + table, encoding="utf-8")
    readme.write_text(splice(readme.read_text(encoding="utf-8"), table), encoding="utf-8")
    print(f"wrote {out} and the Reliability section of {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
