"""A real PostgreSQL for the local stack's Prefect server (``make up DB=postgres``, the bench's ``pg-workers``).

Debian's ``postgresql`` package (installed with apt-get when it is missing and we are root), one cluster in
``<state>/postgres``, listening on 127.0.0.1 only, its unix socket in ``<state>/postgres-socket``, a role and a
database ``prefect`` owned by it. PostgreSQL refuses to run as root, so as root its programs run as the OS user
``postgres`` (the package creates it) through ``runuser``, and the two directories belong to that user.

The role's password is generated once and kept in ``<state>/postgres-password`` (mode 0600, never printed or
logged); it reaches PostgreSQL on psql's stdin (not its command line, which ``ps`` shows), with statement
logging off for that session, and the Prefect server in ``PREFECT_API_DATABASE_CONNECTION_URL``.
``LocalPostgres.url()`` holds it; ``shown_url()`` is the one to print.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

PG_BASE = Path("/usr/lib/postgresql")
OS_USER = "postgres"  # the package's user; runs the server when we are root
ROLE = DATABASE = "prefect"
PROGRAMS = ("initdb", "postgres", "pg_ctl", "psql", "pg_isready")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed and could not be installed here (the message says why and what to do)."""


@dataclass(frozen=True)
class LocalPostgres:
    """A running local cluster: where it lives and where it listens."""

    bin_dir: Path
    state: Path
    port: int
    pid: int

    @property
    def data_dir(self) -> Path:
        return self.state / "postgres"

    def url(self) -> str:
        """The SQLAlchemy URL Prefect's server takes. It holds the password: never print or log it."""
        password = quote(password_file(self.state).read_text().strip(), safe="")
        return f"postgresql+asyncpg://{ROLE}:{password}@127.0.0.1:{self.port}/{DATABASE}"

    def query(self, sql: str, database: str = DATABASE) -> str:
        """``sql`` run by psql as the server's superuser over the unix socket; its rows, unaligned.

        Raises:
            subprocess.CalledProcessError: psql failed.
        """
        psql = [str(self.bin_dir / "psql"), "-X", "-At", "-h", str(self.state / "postgres-socket")]
        cmd = _as_server_user([*psql, "-p", str(self.port), "-d", database, "-v", "ON_ERROR_STOP=1"])
        return subprocess.run(cmd, input=sql, capture_output=True, text=True, check=True).stdout

    def shown_url(self) -> str:
        """The URL without its password, for output."""
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{DATABASE}  (password: {password_file(self.state)})"


def password_file(state: Path) -> Path:
    return state / "postgres-password"


def find_bin_dir(base: Path = PG_BASE) -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that holds every program we run, or None."""
    found = []
    for candidate in base.glob("*/bin") if base.is_dir() else []:
        version = candidate.parent.name
        if version.isdigit() and all(os.access(candidate / p, os.X_OK) for p in PROGRAMS):
            found.append((int(version), candidate))
    return max(found)[1] if found else None


def ensure_installed() -> Path:
    """Debian's PostgreSQL programs, installing the ``postgresql`` package first when they are missing.

    Raises:
        PostgresUnavailable: not installed, and we are not root or there is no apt-get, or apt-get failed.
    """
    found = find_bin_dir()
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable(
            f"PostgreSQL is not installed (no {PG_BASE}/<version>/bin) and cannot be installed here "
            f"(needs root and apt-get): install Debian's `postgresql` package"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"]
    done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # a stale package list: refresh it once and try again
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
    found = find_bin_dir()
    if found is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise PostgresUnavailable(f"`apt-get install postgresql` failed (exit {done.returncode}): {' / '.join(tail)}")
    return found


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", OS_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _owned_dir(path: Path) -> None:
    """``path`` exists, mode 0700, owned by the user the server runs as."""
    path.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(path, OS_USER, OS_USER)
    path.chmod(0o700)


def _reachable(state: Path) -> None:
    """The server's user may enter ``state`` (search permission on it and on every directory above it).

    Raises:
        PostgresUnavailable: naming the first directory it may not enter.
    """
    if os.geteuid() != 0:
        return
    if state.stat().st_uid == 0:  # ours: let the server's user through, without letting it list it
        state.chmod(stat.S_IMODE(state.stat().st_mode) | 0o011)
    probe = subprocess.run(_as_server_user(["test", "-x", str(state)]), capture_output=True)
    if probe.returncode == 0:
        return
    blocked = next(
        (p for p in [*reversed(state.parents), state] if not stat.S_IMODE(p.stat().st_mode) & 0o001),
        state,
    )
    raise PostgresUnavailable(
        f"PostgreSQL runs as the OS user {OS_USER}, which may not enter {blocked} (on the way to {state}): "
        f"`chmod o+x {blocked}`, or keep the stack's state directory somewhere it can reach"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], what: str, log: Path, stdin: str | None = None) -> None:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    with log.open("a") as out:  # the command line and its output; stdin (which may hold the password) is not kept
        out.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}); see {log}")


def _setup_sql(password: str) -> str:
    # idempotent: a second `make up` finds the role and the database and only sets the password again
    return "\n".join(
        [
            "SET log_statement = 'none';",
            "SET log_min_error_statement = 'panic';",  # a failing statement is not echoed into the server log
            f"SELECT 'CREATE ROLE {ROLE} LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}')",
            "\\gexec",
            f"ALTER ROLE {ROLE} WITH LOGIN PASSWORD '{password}';",
            f"SELECT 'CREATE DATABASE {DATABASE} OWNER {ROLE}'"
            f" WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}')",
            "\\gexec",
            "",
        ]
    )


def start(state: Path, timeout: float = 60) -> LocalPostgres:
    """Initialise (once) and start the cluster of ``state``, with role and database ``prefect``.

    Raises:
        PostgresUnavailable: PostgreSQL is missing and cannot be installed, or its user cannot reach ``state``.
        RuntimeError: initdb, the server or the role setup failed (the message names the log).
    """
    bin_dir = ensure_installed()
    state.mkdir(parents=True, exist_ok=True)
    _reachable(state)
    data, sock, log = state / "postgres", state / "postgres-socket", state / "postgres.log"
    stop(state)  # a server this state directory left running is stopped, not doubled
    _owned_dir(data)
    _owned_dir(sock)
    pw_file = password_file(state)
    if not pw_file.exists():
        pw_file.touch(mode=0o600)
        pw_file.write_text(secrets.token_urlsafe(24))
    pw_file.chmod(0o600)
    if not (data / "PG_VERSION").exists():
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "--auth-local=peer", "--auth-host=scram-sha-256"]
        _run(_as_server_user([*initdb, "--encoding=UTF8", "--locale=C.UTF-8"]), "initdb", log)
    port = _free_port()
    server = [
        str(bin_dir / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"unix_socket_directories={sock}",
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            _as_server_user(server), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    (state / "postgres.json").write_text(json.dumps({"pid": proc.pid, "port": port, "bin_dir": str(bin_dir)}))
    ready = [str(bin_dir / "pg_isready"), "-q", "-h", str(sock), "-p", str(port)]
    deadline = time.monotonic() + timeout
    while subprocess.run(ready).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(state)
            raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1:{port}; see {log}")
        time.sleep(0.3)
    psql = [str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(sock), "-p", str(port), "postgres"]
    _run(_as_server_user(psql), "creating the prefect role and database", log, stdin=_setup_sql(pw_file.read_text()))
    return LocalPostgres(bin_dir=bin_dir, state=state, port=port, pid=proc.pid)


def stop(state: Path, grace: float = 30) -> bool:
    """Stop the cluster ``start`` left running in ``state`` (fast shutdown: sessions end, data is kept);
    returns whether one was running."""
    record = state / "postgres.json"
    if not record.exists():
        return False
    info = json.loads(record.read_text())
    pg_ctl = [str(Path(info["bin_dir"]) / "pg_ctl"), "stop", "-D", str(state / "postgres"), "-m", "fast", "-w"]
    stopped = subprocess.run(_as_server_user([*pg_ctl, "-t", str(int(grace))]), capture_output=True).returncode == 0
    if not stopped:  # not started far enough for pg_ctl, or stuck: its process group goes
        with contextlib.suppress(ProcessLookupError):
            os.killpg(info["pid"], signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(info["pid"], os.WNOHANG)  # our child when this process started it
    record.unlink(missing_ok=True)
    return True
