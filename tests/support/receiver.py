"""The event receiver as a real process, for tests: start it on a free port and wait until it serves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_receiver(secret: str, log: Path, *, via_cli: bool = False) -> tuple[str, subprocess.Popen[bytes]]:
    """``python -m deployments.events --port P`` (or ``acr-transfer events serve``, ``via_cli``) keyed with
    ``secret``, emitting to this process's Prefect API; returns its base URL and process once ``/healthz``
    answers (its output goes to ``log``).

    Raises:
        AssertionError: it exited or did not serve within 60 s (with its output).
    """
    from prefect.settings import PREFECT_API_URL

    port = free_port()
    command = ["deployments", "events", "serve"] if via_cli else ["deployments.events"]
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "ACR_TRANSFER_EVENTS_SECRET": secret}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return base, proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the event receiver did not start:\n" + log.read_text())
        time.sleep(0.2)
