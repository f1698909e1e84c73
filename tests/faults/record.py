"""What the fault tests observed, for ``make faults-report``: one JSON line per case.

The tests append to the file named by ``ACR_TRANSFER_FAULTS_REPORT`` (nothing is written when it is unset);
``python -m tests.faults.report`` turns the lines into the README's Reliability tables.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPORT_ENV = "ACR_TRANSFER_FAULTS_REPORT"


def record(table: str, **row: Any) -> None:
    """Append one observed case to the report file, when one is being written."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"table": table, **row}, sort_keys=True) + "\n")
