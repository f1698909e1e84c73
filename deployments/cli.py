"""The ``acr-transfer`` command.

``acr-transfer emulator …`` hands over to the stand-in program (``python -m emulator``) by exec, so the
product never imports the stand-in.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``acr-transfer`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "emulator":
        os.execv(sys.executable, [sys.executable, "-m", "emulator", *argv[1:]])
    parser = argparse.ArgumentParser(prog="acr-transfer", description="Drive Azure Container Registry transfers.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("emulator", help="the local Azure stand-in: `acr-transfer emulator up --help`")
    parser.parse_args(argv)
    return 0
