"""Run one transfer on the stand-in's default topology in this process, for the crash tests to kill.

    python -m tests.faults.crash_runner STATE_DIR ROUTE ARTIFACT TRANSFER_ID

The stand-in's env must already be in the environment (the test passes its own).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flows.transfer import registry_transfer
from tests.support.standin import StandIn
from tests.support.transfer import request, route


def main(state_dir: str, route_name: str, artifact: str, transfer_id: str) -> int:
    topology = json.loads((Path(state_dir) / "topology.json").read_text())
    standin = StandIn(Path(state_dir), None, topology=topology)  # type: ignore[arg-type]
    result = registry_transfer(request(route(standin, route_name), [artifact], transfer_id=transfer_id))
    return 0 if result.succeeded else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
