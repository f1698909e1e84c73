"""Run ``sync-routes`` over a routes file in this process, for the sync crash test to kill.

    python -m tests.faults.sync_runner ROUTES_FILE MAX_CONCURRENT

The stand-in's env and PREFECT_API_URL must already be in the environment (the test passes its own).
"""

from __future__ import annotations

import sys

from flows.routes import sync_routes


def main(routes_file: str, max_concurrent: str) -> int:
    sync_routes(routes_file=routes_file, max_concurrent=int(max_concurrent))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
