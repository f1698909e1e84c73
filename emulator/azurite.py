"""Run Azurite, Microsoft's Blob storage emulator, as the stand-in's storage service.

One ``azurite-blob`` process serves every storage account of the topology (``AZURITE_ACCOUNTS``), because
Azurite performs a cross-account server-side copy only between accounts of the same instance. It listens on
127.0.0.1 over TLS with the stand-in's certificate and accepts OAuth bearer tokens (``--oauth basic``), so
the Azure SDKs use shared keys, SAS tokens and ``DefaultAzureCredential`` against it unchanged.

Azurite is not re-implemented here: SAS expiry, permissions and ``spr=https`` are enforced by Azurite itself.
Blob data and the account keys live in the state directory, so a restarted stand-in still serves the blobs
and still accepts the SAS tokens it handed out before.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from emulator.httpserver import free_port
from emulator.tls import TlsFiles

PROJECT_ROOT = Path(__file__).resolve().parent.parent
READY_MARKER = b"successfully listens"
KEYS_FILE = "storage-keys.json"
LOG_FILE = "azurite.log"
STOP_GRACE_SECONDS = 3.0

# Azurite runs in its own session, so it would outlive a Python process that dies of an exception without
# stopping it (and keep its port); stop whatever is still running when the interpreter exits
_RUNNING: weakref.WeakSet[Azurite] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for azurite in list(_RUNNING):
        azurite.stop_sync()


class AzuriteError(RuntimeError):
    """Azurite could not be started (not installed, exited early, or never became ready)."""


def azurite_binary() -> Path:
    """The ``azurite-blob`` executable: ``$AZURITE_BLOB``, else ``<root>/node_modules/.bin/azurite-blob``.

    Raises:
        AzuriteError: the executable does not exist.
    """
    override = os.environ.get("AZURITE_BLOB")
    path = Path(override) if override else PROJECT_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if not path.exists():
        raise AzuriteError(f"Azurite is not installed: run `npm ci` in {PROJECT_ROOT} (looked for {path})")
    return path


def account_keys(state_dir: Path, names: Iterable[str]) -> dict[str, str]:
    """The base64 account key of each storage account, created once and kept in the state directory.

    Keys are 64 random bytes, like Azure's. They are persisted (mode 0600) so that blobs written and SAS
    tokens signed before a restart stay valid after it.

    Args:
        state_dir: the stand-in's state directory.
        names: storage account names.

    Returns:
        ``{account name: base64 key}`` for ``names``, in that order.
    """
    path = state_dir / KEYS_FILE
    keys: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted = list(names)
    missing = [n for n in wanted if n not in keys]
    if missing:
        for name in missing:
            keys[name] = base64.b64encode(secrets.token_bytes(64)).decode()
        state_dir.mkdir(parents=True, exist_ok=True)
        # write the new file private from the start; a key is as good as a password
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keys, f, indent=2)
        os.replace(tmp, path)
    path.chmod(0o600)
    return {n: keys[n] for n in wanted}


class Azurite:
    """One ``azurite-blob`` process for all storage accounts, over TLS on 127.0.0.1.

    Args:
        state_dir: the stand-in's state directory; data goes to ``<state_dir>/azurite``, the process's output
            to ``<state_dir>/azurite.log``.
        tls: the stand-in's CA and server certificate (Azurite serves the certificate and trusts the CA).
        accounts: ``{account name: base64 key}``, e.g. from ``account_keys``.
        port: the port to listen on; a free one when None.
        binary: the ``azurite-blob`` executable; ``azurite_binary()`` when None.
        stop_timeout: seconds ``stop`` waits after SIGTERM before it SIGKILLs.
    """

    def __init__(
        self,
        state_dir: Path,
        tls: TlsFiles,
        accounts: dict[str, str],
        port: int | None = None,
        binary: Path | None = None,
        stop_timeout: float = STOP_GRACE_SECONDS,
    ) -> None:
        if not accounts:
            raise ValueError("Azurite needs at least one storage account")
        self.state_dir = state_dir
        self.tls = tls
        self.accounts = dict(accounts)
        self.port = port or free_port()
        self.binary = binary
        self.stop_timeout = stop_timeout
        self.log_path = state_dir / LOG_FILE
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """Azurite's own endpoint (clients normally reach it through the storage proxy)."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id (also its process group id) while running."""
        return self.process.pid if self.process else None

    def args(self) -> list[str]:
        """The command line.

        ``--loose`` is deliberately absent: all the product's SDK calls work without it. Strict mode only
        refuses (400) the headers Azurite cannot honour (``x-ms-range-get-content-crc64`` and
        customer-provided encryption keys); ``--loose`` would accept and silently ignore them instead.
        """
        binary = self.binary or azurite_binary()
        return [
            str(binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--location",
            str(self.state_dir / "azurite"),
            "--skipApiVersionCheck",  # the SDK's x-ms-version is newer than Azurite knows
            "--disableTelemetry",
            "--cert",
            str(self.tls.cert),
            "--key",
            str(self.tls.key),
            "--oauth",
            "basic",
            # no access log: its lines carry SAS signatures, and the proxy's request log covers each request
            "--silent",
        ]

    def env(self) -> dict[str, str]:
        """The process environment: the accounts, and trust in the stand-in's CA, because Azurite validates a
        copy source by sending a HEAD to the source URL itself (over https, through the proxy)."""
        env = dict(os.environ)
        env["AZURITE_ACCOUNTS"] = ";".join(f"{name}:{key}" for name, key in self.accounts.items())
        env["NODE_EXTRA_CA_CERTS"] = str(self.tls.ca)
        # that HEAD goes to 127.0.0.1; an outbound proxy from the environment must not intercept it
        no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
        env["NO_PROXY"] = env["no_proxy"] = no_proxy
        return env

    async def start(self, timeout: float = 30.0) -> None:
        """Spawn Azurite and return once it listens.

        The process gets its own session (process group) so that ``stop`` can signal the whole tree. Its
        output goes straight to the log file, so nothing has to keep draining a pipe.

        Raises:
            AzuriteError: not installed, exited before listening, or not listening within ``timeout``.
        """
        if self.process is not None and self.process.poll() is None:
            return
        args, env = self.args(), self.env()
        (self.state_dir / "azurite").mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        offset = self._log.tell()
        self.process = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _RUNNING.add(self)
        deadline = time.monotonic() + timeout
        while not self._ready(offset):
            if self.process.poll() is not None:
                code = self.process.returncode
                await self.stop()
                raise AzuriteError(f"Azurite exited with status {code} before listening:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                await self.stop()
                raise AzuriteError(f"Azurite did not listen within {timeout:g} s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    def _ready(self, offset: int) -> bool:
        """Whether this run's output (after ``offset`` in the log) has the "successfully listens" line."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return READY_MARKER in f.read()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of Azurite's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        """Stop Azurite (see ``stop_sync``) without blocking the event loop."""
        await asyncio.to_thread(self.stop_sync)

    def stop_sync(self) -> None:
        """SIGTERM the process group, wait (3 s by default) for Azurite to save its data, then SIGKILL it.

        Idempotent. Leaves no process of the group behind.
        """
        process, self.process = self.process, None
        _RUNNING.discard(self)
        if process is not None:
            pgid = process.pid  # session leader: its pid is the group id
            _signal_group(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=self.stop_timeout)
            # also reaches any child Azurite may have left in the group
            _signal_group(pgid, signal.SIGKILL)
            process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group, ignoring a group that no longer exists."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
