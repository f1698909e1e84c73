"""``make up`` / ``make down``: the whole local stack in the background, and gone again.

``up`` starts a Prefect server (SQLite; its UI on http://127.0.0.1:4200 when that port is free), the local
Azure stand-in with the demo images in ``sourceregistry``, runs ``acr-transfer setup``, deploys prefect.yaml
(then setup again, which makes ``route`` a choice of route names in the run forms), starts a process worker and
the event receiver, and prints the UI and receiver URLs and a ``curl`` of an ACR push webhook to try. Everything
lives in ``.stack/`` (logs, pids, ``env`` to source); ``down`` stops every process it started.

``up --db postgres`` (``make up DB=postgres``) first starts a real PostgreSQL in ``.stack/postgres``
(``deployments/postgres.py``) and puts the Prefect server on it; ``up --workers N`` (``make up WORKERS=N``)
starts N process workers on the one work pool.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deployments import postgres

ROOT = Path(__file__).resolve().parents[1]
PREFECT_PORT = 4200  # Prefect's own default: the URL a newcomer expects


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_or_free(preferred: int) -> int:
    """``preferred`` when nothing listens on it on 127.0.0.1, else any free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


@dataclass
class Stack:
    """The processes of one local stack and the environment that reaches them."""

    home: Path
    env: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    database: postgres.LocalPostgres | None = None  # None: the Prefect server keeps its SQLite file

    def _start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it from here on
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pids[name] = proc.pid
        (self.home / "pids.json").write_text(json.dumps(self.pids))
        return proc

    def _wait(self, what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}; see {self.home / (what + '.log')}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"{what} not ready after {timeout:.0f} s; see {self.home / (what + '.log')}")

    def start_postgres(self) -> None:
        """A local PostgreSQL in ``<home>/postgres`` for the Prefect server (start it before the server)."""
        self.database = postgres.start(self.home)
        self.urls["PostgreSQL"] = self.database.shown_url()

    def start_prefect(self) -> None:
        port = port_or_free(PREFECT_PORT)
        api = f"http://127.0.0.1:{port}/api"
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true",
            # the UI asks /ui-settings for its API URL, which the server derives from these settings, not from
            # `--port`: without them it would send the browser to 4200 whatever port the server is on
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": api,
        }
        # on SQLite a request that read and then writes while another wrote meets SQLITE_BUSY at once (no busy wait
        # cures it), which the server answers with 503 and, unless this is on, does not log: prefect.log says why
        env.setdefault("PREFECT_SERVER_LOG_RETRYABLE_ERRORS", "true")
        env.pop("PREFECT_API_URL", None)
        if self.database is not None:  # only the server's environment holds the password, never `env`
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database.url()
        proc = self._start(
            "prefect",
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env,
        )

        def healthy() -> bool:
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self._wait("prefect", healthy, proc, timeout=120)
        self.env["PREFECT_API_URL"] = api
        self.urls["Prefect UI"] = f"http://127.0.0.1:{port}"

    def start_standin(self, *flags: str) -> None:
        state = self.home / "emulator"
        proc = self._start(
            "emulator", [sys.executable, "-m", "emulator", "up", "--state-dir", str(state), *flags], dict(os.environ)
        )
        env_file = state / "env"
        log = self.home / "emulator.log"
        self._wait("emulator", lambda: "emulator ready:" in log.read_text(errors="replace"), proc)
        self.env.update(read_env(env_file))
        topology = json.loads((state / "topology.json").read_text())
        self.env["TARGET_VAULT_URL"] = topology["vaults"]["targetvault"]["url"]
        self.urls["ARM (stand-in)"] = self.env["ACR_TRANSFER_ARM_ENDPOINT"]

    def child_env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.env,
            "PREFECT_HOME": str(self.home / "prefect-client"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }

    def seed_demo_images(self) -> None:
        """The demo images in ``sourceregistry``, so a first ``transfer`` of route ``demo`` passes preflight."""
        from deployments.demo import push_demo_images  # here: deployments.demo imports this module

        push_demo_images(self.env)

    def _run(self, what: str, cmd: list[str], env: dict[str, str]) -> None:
        log = self.home / "deploy.log"
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        with log.open("a") as out:
            out.write(f"$ {shlex.join(cmd[1:])}\n{done.stdout}{done.stderr}\n")
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed (exit {done.returncode}); see {log}")

    def setup_and_deploy(self) -> str:
        env = self.child_env()
        setup = [sys.executable, "-m", "deployments", "setup"]
        self._run("acr-transfer setup", setup, env)  # first: prefect.yaml reads the pool variable it creates
        self._run("prefect deploy --all", [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], env)
        # again, now that the deployments exist: deploying wrote their parameter schemas from the flow
        # signatures, and setup turns `route` into a choice of route names (idempotent)
        self._run("acr-transfer setup (route choices)", setup, env)
        return env.get("ACR_TRANSFER_WORK_POOL", "acr-transfer")

    def start_worker(self, pool: str, count: int = 1, limit: int | None = None) -> None:
        """``count`` process workers on ``pool`` (logs ``worker.log``, ``worker-2.log``, …), each running at
        most ``limit`` flow runs at once when given."""
        for i in range(1, count + 1):
            cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool]
            if count > 1:
                cmd += ["--name", f"acr-transfer-worker-{i}"]
            if limit is not None:
                cmd += ["--limit", str(limit)]
            self._start("worker" if i == 1 else f"worker-{i}", cmd, self.child_env())

    def worker_logs(self) -> dict[str, Path]:
        """Each worker's log file, by the name ``pids.json`` knows it by."""
        return {name: self.home / f"{name}.log" for name in self.pids if name.startswith("worker")}

    def start_receiver(self) -> None:
        secret_file = self.home / "events-secret"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(24))
            secret_file.chmod(0o600)
        self.env["ACR_TRANSFER_EVENTS_SECRET"] = secret_file.read_text().strip()
        port = free_port()
        proc = self._start(
            "receiver",
            [sys.executable, "-m", "deployments", "events", "serve", "--host", "127.0.0.1", "--port", str(port)],
            self.child_env(),
        )
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self._wait("receiver", healthy, proc)
        self.urls["event receiver"] = f"{url}  (POST /eventgrid, POST /acr/<registry>; key: {secret_file})"
        self.env["ACR_TRANSFER_EVENTS_URL"] = url

    def push_webhook_curl(self, repository: str = "demo/hello", tag: str = "v1") -> str:
        """A ready-to-paste ``curl`` of the webhook ACR sends when ``repository:tag`` is pushed to
        ``sourceregistry``, keyed with ``x-events-key`` read from the secret file (never the key itself: this
        text is printed). Each paste gets a new delivery id, so the receiver does not drop it as a repeat."""
        digest, size, media_type = self._manifest("sourceregistry", repository, tag)
        body = {
            "id": "@ID@",
            "timestamp": "@TIME@",
            "action": "push",
            "target": {
                "mediaType": media_type,
                "size": size,
                "digest": digest,
                "length": size,
                "repository": repository,
                "tag": tag,
            },
            "request": {"id": "@ID@", "host": "sourceregistry.azurecr.io", "method": "PUT", "useragent": "curl"},
        }
        data = (
            json.dumps(body, separators=(",", ":"))
            .replace("@ID@", "push-'\"$(date +%s)\"'")
            .replace("@TIME@", "'\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"'")
        )
        key_file = shlex.quote(str(self.home / "events-secret"))
        return (
            f"curl -sS {shlex.quote(self.env['ACR_TRANSFER_EVENTS_URL'] + '/acr/sourceregistry')} \\\n"
            f"  -H \"x-events-key: $(cat {key_file})\" -H 'Content-Type: application/json' \\\n"
            f"  -d '{data}'"
        )

    def _manifest(self, registry: str, repository: str, tag: str) -> tuple[str, int, str]:
        """Digest, size and media type of ``repository:tag`` in the stand-in's ``registry``."""
        topology = json.loads(Path(self.env["ACR_TRANSFER_EMULATOR_TOPOLOGY"]).read_text())
        host = topology["registries"][registry]["login_server"]
        admin = topology["registries"][registry]["admin"]  # the stand-in's registries ask for credentials
        accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
        r = httpx.head(
            f"https://{host}/v2/{repository}/manifests/{tag}",
            headers={"Accept": accept},
            auth=(admin["username"], admin["password"]),
            verify=ssl.create_default_context(cafile=self.env["REQUESTS_CA_BUNDLE"]),
        )
        r.raise_for_status()
        return r.headers["Docker-Content-Digest"], int(r.headers["Content-Length"]), r.headers["Content-Type"]

    def write_env(self) -> None:
        keep = {k: v for k, v in self.env.items() if k != "ACR_TRANSFER_EVENTS_SECRET"}
        (self.home / "env").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in keep.items()))

    def down(self) -> None:
        pids_file = self.home / "pids.json"
        pids = json.loads(pids_file.read_text()) if pids_file.exists() else self.pids
        workers = sorted(name for name in pids if name.startswith("worker"))
        for name in ("receiver", *workers, "emulator", "prefect"):
            if name in pids:
                _stop_group(pids[name])
        postgres.stop(self.home)  # last: the server is gone, so no session holds it up
        pids_file.unlink(missing_ok=True)


def _stop_group(pid: int, grace: float = 8) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``grace`` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        # a leader this process started stays a zombie until it is reaped, and a zombie still answers signal 0:
        # unreaped, every stop waited out its whole grace (the PostgreSQL stack's teardown took 40 s)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def up(
    home: Path,
    *,
    db: str = "sqlite",
    workers: int = 1,
    worker_limit: int | None = None,
    standin_flags: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Stack:
    """Start everything and return the stack (the caller prints or tests it).

    Args:
        home: The state directory (logs, pids, ``env``; PostgreSQL's data with ``db="postgres"``).
        db: ``sqlite`` (the Prefect server's own file) or ``postgres`` (a local PostgreSQL started first).
        workers: How many process workers poll the work pool.
        worker_limit: At most this many flow runs at once per worker (Prefect's ``--limit``); None: no limit.
        standin_flags: Extra flags of ``python -m emulator up`` (``--run-seconds``, ``--arm-read-burst``, …).
        env: Environment for setup, the workers and the receiver (e.g. ``ACR_TRANSFER_ROUTES``).

    Raises:
        postgres.PostgresUnavailable: ``db="postgres"`` and PostgreSQL cannot be installed here.
        ValueError: an unknown ``db`` or fewer than one worker.
    """
    if db not in ("sqlite", "postgres") or workers < 1:
        raise ValueError(f"db must be sqlite or postgres (not {db!r}) and workers at least 1 (not {workers})")
    home.mkdir(parents=True, exist_ok=True)
    stack = Stack(home, env=dict(env or {}))
    try:
        if db == "postgres":
            _step(f"starting PostgreSQL (data: {home / 'postgres'})")
            stack.start_postgres()
        _step("starting the Prefect server")
        stack.start_prefect()
        _step("starting the local Azure stand-in")
        stack.start_standin(*standin_flags)
        stack.seed_demo_images()
        stack.env.setdefault(
            "ACR_TRANSFER_ROUTES", os.environ.get("ACR_TRANSFER_ROUTES") or str(ROOT / "routes.example.yaml")
        )
        _step(f"acr-transfer setup, prefect deploy --all (log: {home / 'deploy.log'})")
        pool = stack.setup_and_deploy()
        _step(
            "starting the worker and the event receiver"
            if workers == 1
            else f"starting {workers} workers and the event receiver"
        )
        stack.start_worker(pool, workers, worker_limit)
        stack.start_receiver()
        stack.write_env()
    except BaseException:
        stack.down()
        raise
    return stack


def _step(what: str) -> None:
    print(f"▶ {what}", flush=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m deployments.stack")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite", help="the Prefect server's database")
    parser.add_argument("--workers", type=int, default=1, help="process workers on the work pool (default 1)")
    args = parser.parse_args(argv)
    home = Path(os.environ.get("ACR_TRANSFER_STACK_DIR", ROOT / ".stack")).resolve()
    if args.command == "down":
        Stack(home).down()
        print("local stack stopped")
        return 0
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if (home / "pids.json").exists() or (home / "postgres.json").exists():
        print(f"a stack is already running from {home}; `make down` first", file=sys.stderr)
        return 1
    try:
        stack = up(home, db=args.db, workers=args.workers)
    except postgres.PostgresUnavailable as e:
        print(f"make up DB=postgres: {e}", file=sys.stderr)
        return 1
    print()
    for name, url in stack.urls.items():
        print(f"{name:>16}: {url}")
    print(f"{'environment':>16}: source {home / 'env'}")
    print(f"{'logs':>16}: {home}/*.log   (stop with `make down`)")
    print(
        "\nTry it: in the UI, Deployments → transfer → Run → Custom run, route demo. Or push demo/hello:v1 the way"
        " ACR's webhook reports it (export-on-push then exports route airgap-out):\n"
    )
    print(stack.push_webhook_curl())
    return 0


if __name__ == "__main__":
    sys.exit(main())
