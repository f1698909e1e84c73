"""``make test``: the suite as a few pytest sessions side by side, each with its own stand-in and Prefect server.

Most of the suite's time is waiting (runs that take seconds, polls, restarts, a browser), not CPU, so sessions
run concurrently finish in a fraction of the time one session takes. Each shard is a whole pytest session and
ends with the secret-hygiene test (``tests/zz_hygiene``) over what *that* session left behind: its own Prefect
server's records, its own stand-in's secrets, its own captured output.

Arguments after the script's name go to every pytest session (e.g. ``-x``, ``-k expr``); naming test paths
runs one ordinary session instead of the shards.

Each shard's output goes to ``build/test-<shard>.log``; the script prints one line per shard as it finishes and
then the whole log of every shard that failed. Exit code: 0 when every shard passed, else the first failing
shard's code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
HYGIENE = "tests/zz_hygiene"
# balanced by measured durations (waiting, mostly): the stand-in's own guarantees and the fault suite, the
# flows and CLI against a real Prefect server, the local stack with its browser, and the pure unit tests
LONG_FAULTS = [  # each waits out minutes of outage, a kill or a restart
    "tests/faults/test_sync_crash.py",
    "tests/faults/test_service_outages.py",
    "tests/faults/test_prefect_bookkeeping.py",
    "tests/faults/test_prefect_restart.py",
]
SHARDS: dict[str, list[str]] = {
    "faults": ["tests/faults", *(f"--ignore={p}" for p in LONG_FAULTS)],
    "long-faults": LONG_FAULTS,
    "integration": ["tests/integration"],
    "stack-emulator-unit": ["tests/stack", "tests/emulator", "tests/unit"],
}
RUNS_NO_FLOWS = {"stack-emulator-unit"}  # the stack's flows run on its own server, not the session's


def _names_paths(args: list[str]) -> bool:
    return any(not a.startswith("-") and (ROOT / a.split("::")[0]).exists() for a in args)


def main(argv: list[str]) -> int:
    if _names_paths(argv):  # the user chose what to run: one ordinary session
        return subprocess.call([sys.executable, "-m", "pytest", *argv], cwd=ROOT)
    BUILD.mkdir(exist_ok=True)
    started = time.monotonic()
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, paths in SHARDS.items():
        log = BUILD / f"test-{name}.log"
        basetemp = f"--basetemp={BUILD / f'pytest-{name}'}"
        cmd = [sys.executable, "-m", "pytest", *paths, HYGIENE, basetemp, "-p", "no:cacheprovider", *argv]
        out = log.open("wb")
        env = {**os.environ, "ACR_TRANSFER_SHARD_RUNS_FLOWS": "0" if name in RUNS_NO_FLOWS else "1"}
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env), log)
        shown = " ".join(p for p in paths if not p.startswith("--"))
        print(f"▶ shard {name}: {shown} (+ secret hygiene) → {log.relative_to(ROOT)}", flush=True)
    codes: dict[str, int] = {}
    while len(codes) < len(procs):
        for name, (proc, log) in procs.items():
            if name in codes or proc.poll() is None:
                continue
            codes[name] = proc.returncode
            lines = log.read_text(errors="replace").strip().splitlines()
            summary = lines[-1] if lines else "(no output)"
            mark = "✓" if proc.returncode == 0 else "✗"
            print(f"{mark} shard {name} ({time.monotonic() - started:.0f} s): {summary}", flush=True)
        time.sleep(1)
    for name, code in codes.items():
        if code != 0:
            print(f"\n{'=' * 30} shard {name} (exit {code}) {'=' * 30}")
            print(procs[name][1].read_text(errors="replace"))
    print(f"whole suite: {time.monotonic() - started:.0f} s")
    failed = [code for code in codes.values() if code != 0]
    return failed[0] if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
