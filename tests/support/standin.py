"""Start and drive the local Azure stand-in from tests (a real process, reached only over the network)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from deployments.stack import read_env as read_env_file

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StandIn:
    """A running stand-in: its process, state directory, env and topology, and its control API."""

    state_dir: Path
    process: subprocess.Popen[str]
    env: dict[str, str] = field(default_factory=dict)
    topology: dict[str, Any] = field(default_factory=dict)
    startup_seconds: float = 0.0

    @property
    def ca(self) -> str:
        return self.env["REQUESTS_CA_BUNDLE"]

    @property
    def control(self) -> str:
        return self.env["ACR_TRANSFER_EMULATOR_CONTROL"]

    def http(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=self.ca), timeout=30)

    def add_fault(self, **rule: Any) -> dict[str, Any]:
        with self.http() as c:
            r = c.post(f"{self.control}/faults", json=rule)
            r.raise_for_status()
            return dict(r.json())

    def clear_faults(self) -> None:
        with self.http() as c:
            c.delete(f"{self.control}/faults").raise_for_status()

    def faults(self) -> list[dict[str, Any]]:
        """The fault rules in force, each with its ``hits`` so far."""
        with self.http() as c:
            return list(c.get(f"{self.control}/faults").json())

    def runs(self) -> list[dict[str, Any]]:
        """Every run the engine knows: name, registry, provisioningState, status, finished_at."""
        with self.http() as c:
            return list(c.get(f"{self.control}/runs").json())

    def set_speed(self, min_seconds: float) -> None:
        """How long every run takes at least, from now on."""
        with self.http() as c:
            c.post(f"{self.control}/speed", json={"min_seconds": min_seconds}).raise_for_status()

    def set_outcome(self, run_name: str, **outcome: Any) -> None:
        with self.http() as c:
            c.post(f"{self.control}/runs/{run_name}/outcome", json=outcome).raise_for_status()

    def requests(self, service: str | None = None) -> list[dict[str, Any]]:
        with self.http() as c:
            log = c.get(f"{self.control}/requests").json()
        return [r for r in log if service is None or r["service"] == service]

    def clear_requests(self) -> None:
        with self.http() as c:
            c.delete(f"{self.control}/requests").raise_for_status()

    def registry_admin(self, registry: str) -> tuple[str, str]:
        """The admin user name and password of ``registry`` (basic auth on its data plane; never print them)."""
        admin = self.topology["registries"][registry]["admin"]
        return str(admin["username"]), str(admin["password"])

    def token_lifetimes(self) -> dict[str, float]:
        """Seconds the registries' access, refresh and anonymous tokens live, as issued from now on."""
        with self.http() as c:
            return dict(c.get(f"{self.control}/registry-tokens").json())

    def set_token_lifetimes(
        self,
        access_seconds: float | None = None,
        refresh_seconds: float | None = None,
        anonymous_seconds: float | None = None,
    ) -> dict[str, float]:
        """Change the lifetimes of registry tokens issued from now on; returns the ones in force before, to
        restore with ``set_token_lifetimes(**before)``."""
        before = self.token_lifetimes()
        wanted = {
            "access_seconds": access_seconds,
            "refresh_seconds": refresh_seconds,
            "anonymous_seconds": anonymous_seconds,
        }
        body = {k: v for k, v in wanted.items() if v is not None}
        with self.http() as c:
            c.post(f"{self.control}/registry-tokens", json=body).raise_for_status()
        return before

    def anonymous_pull(self, registry: str, enabled: bool | None = None) -> bool:
        """Whether ``registry`` hands out anonymous pull tokens; switches it first when ``enabled`` is given."""
        url = f"{self.control}/registries/{registry}/anonymous-pull"
        with self.http() as c:
            r = c.get(url) if enabled is None else c.post(url, json={"enabled": enabled})
            r.raise_for_status()
            return bool(r.json()["enabled"])

    def storage_key(self, account: str) -> str:
        return str(json.loads((self.state_dir / "storage-keys.json").read_text())[account])

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def start_standin(state_dir: Path, *extra: str, timeout: float = 60) -> StandIn:
    """Start ``python -m emulator up`` and wait for its ready line.

    Raises:
        RuntimeError: it exited or did not get ready in time (with its output).
    """
    cmd = [sys.executable, "-m", "emulator", "up", "--state-dir", str(state_dir), *extra]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    lines = []
    deadline = started + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("emulator ready: "):
            env_path = Path(line.split(": ", 1)[1].strip())
            stand_in = StandIn(state_dir, proc, startup_seconds=time.monotonic() - started)
            stand_in.env = read_env_file(env_path)
            stand_in.topology = json.loads((state_dir / "topology.json").read_text())
            _drain(proc)
            return stand_in
    proc.kill()
    raise RuntimeError("stand-in did not start:\n" + "".join(lines) + (proc.stdout.read() or ""))


def _drain(proc: subprocess.Popen[str]) -> None:
    """Keep reading the stand-in's output so it never blocks on a full pipe."""
    import threading

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if os.environ.get("STANDIN_VERBOSE"):
                sys.stderr.write(line)

    threading.Thread(target=pump, daemon=True).start()
