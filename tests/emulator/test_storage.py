"""Blob storage of the stand-in: real Azurite behind the fault-injecting TLS proxy, driven by the real SDK.

One Azurite process and one proxy serve the whole module (Azurite takes ~2 s to start). Every client talks
to the proxy (``https://127.0.0.1:<proxy port>/<account>``), exactly as the product talks to the topology's
blob endpoint, so these tests also prove the proxy is transparent to shared key, SAS and OAuth auth and to
Azurite's cross-account copy.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gc
import hashlib
import json
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.storage.blob import (
    BlobServiceClient,
    ContentSettings,
    LinearRetry,
    generate_blob_sas,
    generate_container_sas,
)

from emulator.azurite import Azurite, AzuriteError, account_keys, azurite_binary
from emulator.control import Controller
from emulator.httpserver import TlsEndpoint, free_port
from emulator.storage_proxy import StorageProxy, storage_proxy_app
from emulator.tls import TlsFiles, ensure_tls

pytestmark = pytest.mark.integration

SRC, DST = "sourcestorage", "targetstorage"
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- fixtures


@dataclass
class Storage:
    """The running storage stack: Azurite, the proxy on its own event-loop thread, and the controller."""

    state_dir: Path
    tls: TlsFiles
    keys: dict[str, str]
    azurite: Azurite
    controller: Controller
    endpoint: TlsEndpoint
    loop: asyncio.AbstractEventLoop
    proxy: StorageProxy
    serving: Any = None
    clients: list[BlobServiceClient] = field(default_factory=list)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the proxy's loop (Azurite start/stop belong there too) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def url(self, account: str) -> str:
        """The account's blob endpoint: the proxy, path-style."""
        return f"{self.endpoint.url}/{account}"

    def service(self, account: str, credential: Any = "key", **kw: Any) -> BlobServiceClient:
        """An SDK client through the proxy; ``"key"`` means the account's shared key. Retries are fast so a
        retried fault costs 0.1 s instead of the default 15+ s backoff."""
        if credential == "key":
            credential = {"account_name": account, "account_key": self.keys[account]}
        if "retry_total" not in kw:
            kw.setdefault("retry_policy", fast_retry())
        client = BlobServiceClient(self.url(account), credential=credential, connection_verify=str(self.tls.ca), **kw)
        self.clients.append(client)
        return client


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    """Azurite with two accounts, the proxy served over TLS in a background thread, and a Controller."""
    state_dir = tmp_path_factory.mktemp("state")
    tls = ensure_tls(state_dir)
    keys = account_keys(state_dir, [SRC, DST])
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="storage-proxy", daemon=True)
    thread.start()
    azurite = Azurite(state_dir, tls, keys)
    controller = Controller()
    app = storage_proxy_app(azurite.url, tls.ca, controller)
    endpoint = TlsEndpoint("storage", app, tls)
    s = Storage(state_dir, tls, keys, azurite, controller, endpoint, loop, app.app)
    try:
        t0 = time.monotonic()
        s.run(azurite.start())
        print(f"azurite started in {time.monotonic() - t0:.2f} s")
        s.serving = asyncio.run_coroutine_threadsafe(endpoint.serve(), loop)
        wait_until_serving(endpoint, s.serving)
        s.service(SRC).create_container("data")
        s.service(DST).create_container("import")
        yield s
    finally:
        teardown(s, thread)


def wait_until_serving(endpoint: TlsEndpoint, serving: Any, timeout: float = 10) -> None:
    """Block until uvicorn accepts connections. Raises: RuntimeError if it stopped or never started."""
    deadline = time.monotonic() + timeout
    while not endpoint.server.started:
        if serving.done() or time.monotonic() > deadline:
            raise RuntimeError(f"the storage proxy did not start: {serving}")
        time.sleep(0.01)


def teardown(s: Storage, thread: threading.Thread) -> None:
    """Close clients, stop Azurite and the proxy, and end the loop thread."""
    for client in s.clients:
        client.close()
    # sockets of failed requests live on in pytest's exception info until collected; the proxy's
    # graceful shutdown would wait for them
    gc.collect()
    try:
        s.run(s.azurite.stop())  # first, so its keep-alive connections (copy-source HEADs) close too
        if s.serving is not None:
            s.endpoint.stop()
            s.serving.result(10)
        s.run(s.proxy.aclose())
    finally:
        s.loop.call_soon_threadsafe(s.loop.stop)
        thread.join(5)
        s.loop.close()


@pytest.fixture(autouse=True)
def clean_controller(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with no fault rules and an empty request log."""
    if "storage" in request.fixturenames:
        s: Storage = request.getfixturevalue("storage")
        s.controller.clear_rules()
        s.controller.log.clear()
    yield


# ---------------------------------------------------------------------------------------------- helpers


def fake_jwt(
    aud: str = "https://storage.azure.com",
    iss: str = "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
    ttl: int = 3600,
) -> str:
    """An unsigned JWT: Azurite ``--oauth basic`` checks iss, aud and times, not the signature."""

    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"aud": aud, "iss": iss, "iat": now - 60, "nbf": now - 60, "exp": now + ttl}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


class StaticTokenCredential:
    """A TokenCredential handing out fake JWTs, and recording the scopes it was asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kw: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(fake_jwt(), int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.scopes.append(scopes)
        return AccessTokenInfo(fake_jwt(), int(time.time()) + 3600)


def fast_retry() -> LinearRetry:
    """3 retries 0.1 s apart (the default backoff is 15 s and more)."""
    # backoff is annotated int, but it is seconds used in float arithmetic
    return LinearRetry(backoff=0.1, random_jitter_range=0, retry_total=3)  # type: ignore[arg-type]


def status_and_code(error: HttpResponseError) -> tuple[int | None, str | None]:
    """HTTP status and storage error code (the SDK sets ``error_code`` on storage errors only)."""
    return error.status_code, getattr(error, "error_code", None)


def in_hours(hours: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)


def log_for(s: Storage, path: str) -> list[tuple[str, int]]:
    """(method, status) of each logged request to ``path``, in order."""
    return [(e["method"], e["status"]) for e in s.controller.log if e["path"] == path]


def rss_bytes() -> int:
    """This process's resident set size (the proxy runs in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_during(work: Callable[[], T]) -> tuple[T, int]:
    """Run ``work`` while sampling RSS every 5 ms; returns its result and the peak growth in bytes."""
    base, peak, done = rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return result, max(peak[0], rss_bytes()) - base


# ---------------------------------------------------------------------------------------------- auth


def test_shared_key_upload_download_list(storage: Storage) -> None:
    container = storage.service(SRC).get_container_client("data")
    # a name that needs percent-encoding proves the proxy forwards the raw path untouched
    name = "dir/a b+ç&=.txt"
    container.upload_blob(name, b"hello through the proxy", overwrite=True)
    assert container.download_blob(name).readall() == b"hello through the proxy"
    assert name in [b.name for b in container.list_blobs(name_starts_with="dir/")]
    assert container.get_blob_client(name).get_blob_properties().size == 23  # a HEAD


def test_read_only_https_sas_lists_but_cannot_write(storage: Storage) -> None:
    storage.service(SRC).get_blob_client("data", "ro.txt").upload_blob(b"x", overwrite=True)
    sas = generate_container_sas(
        SRC, "data", account_key=storage.keys[SRC], permission="rl", expiry=in_hours(1), protocol="https"
    )
    assert "spr=https" in sas
    container = storage.service(SRC, sas, retry_total=0).get_container_client("data")
    assert "ro.txt" in [b.name for b in container.list_blobs()]
    assert container.download_blob("ro.txt").readall() == b"x"
    with pytest.raises(HttpResponseError) as e:
        container.upload_blob("nope.txt", b"y")
    assert status_and_code(e.value) == (403, "AuthorizationPermissionMismatch")


def test_expired_sas_is_rejected(storage: Storage) -> None:
    sas = generate_container_sas(SRC, "data", account_key=storage.keys[SRC], permission="rl", expiry=in_hours(-1))
    container = storage.service(SRC, sas, retry_total=0).get_container_client("data")
    with pytest.raises(HttpResponseError) as e:
        list(container.list_blobs())
    assert status_and_code(e.value) == (403, "AuthorizationFailure")


def test_oauth_bearer_token(storage: Storage) -> None:
    credential = StaticTokenCredential()
    container = storage.service(DST, credential).get_container_client("import")
    container.upload_blob("oauth.txt", b"token", overwrite=True)
    assert container.download_blob("oauth.txt").readall() == b"token"
    assert ("https://storage.azure.com/.default",) in credential.scopes


# ---------------------------------------------------------------------------------------------- copy


@pytest.mark.parametrize("dest_auth", ["key", "sas"])
def test_cross_account_copy_through_proxy(storage: Storage, dest_auth: str) -> None:
    data = os.urandom(256 * 1024)
    name = f"run{dest_auth}.tar"
    source = storage.service(SRC).get_blob_client("data", name)
    source.upload_blob(
        data,
        overwrite=True,
        metadata={"category": "acr-transfer-blob"},
        content_settings=ContentSettings(content_md5=bytearray(hashlib.md5(data).digest())),
    )
    src_sas = generate_blob_sas(
        SRC, "data", name, account_key=storage.keys[SRC], permission="r", expiry=in_hours(1), protocol="https"
    )
    dest_credential: Any = "key"
    if dest_auth == "sas":
        dest_credential = generate_container_sas(
            DST, "import", account_key=storage.keys[DST], permission="cw", expiry=in_hours(1)
        )
    dest = storage.service(DST, dest_credential).get_blob_client("import", name)
    copy = dest.start_copy_from_url(f"{source.url}?{src_sas}")
    assert copy["copy_status"] == "success"
    # read back with the key: a cw SAS cannot read
    props = storage.service(DST).get_blob_client("import", name).get_blob_properties()
    assert props.copy.status == "success"
    assert props.metadata == {"category": "acr-transfer-blob"}
    assert bytes(props.content_settings.content_md5 or b"") == hashlib.md5(data).digest()
    assert props.size == len(data)
    # Azurite checked the source by a HEAD of the proxy URL: it came back through the proxy
    assert ("HEAD", 200) in log_for(storage, f"/{SRC}/data/{name}")


def test_copy_without_source_sas_is_refused(storage: Storage) -> None:
    source = storage.service(SRC).get_blob_client("data", "private.tar")
    source.upload_blob(b"p", overwrite=True)
    dest = storage.service(DST, retry_total=0).get_blob_client("import", "private.tar")
    with pytest.raises(HttpResponseError) as e:
        dest.start_copy_from_url(source.url)
    assert status_and_code(e.value) == (403, "CannotVerifyCopySource")


# ---------------------------------------------------------------------------------------------- faults


@pytest.mark.faults
def test_503_with_retry_after_is_retried(storage: Storage) -> None:
    blob = storage.service(SRC).get_blob_client("data", "retry.bin")
    blob.upload_blob(b"retry me", overwrite=True)
    path = f"/{SRC}/data/retry.bin"
    rule = storage.controller.add_rule(
        {"service": "storage", "method": "GET", "path": path, "status": 503, "retry_after": 1}
    )
    assert blob.download_blob().readall() == b"retry me"
    assert rule.hits == 1
    statuses = [status for method, status in log_for(storage, path) if method == "GET"]
    assert statuses[0] == 503 and statuses[1] in (200, 206) and len(statuses) == 2


@pytest.mark.faults
def test_503_body_is_a_storage_error(storage: Storage) -> None:
    storage.controller.add_rule({"service": "storage", "method": "GET", "path": "/data/", "status": 503})
    blob = storage.service(SRC, retry_total=0).get_blob_client("data", "retry.bin")
    with pytest.raises(HttpResponseError) as e:
        blob.download_blob()
    assert status_and_code(e.value) == (503, "ServiceUnavailable")


@pytest.mark.faults
def test_reset_is_a_connection_error_and_retried(storage: Storage) -> None:
    blob_name, path = "reset.bin", f"/{SRC}/data/reset.bin"
    storage.service(SRC).get_blob_client("data", blob_name).upload_blob(b"r", overwrite=True)
    storage.controller.add_rule({"service": "storage", "method": "GET", "path": path, "reset": True})
    no_retry = storage.service(SRC, retry_total=0).get_blob_client("data", blob_name)
    with pytest.raises((ServiceRequestError, ServiceResponseError)):
        no_retry.download_blob()
    storage.controller.add_rule({"service": "storage", "method": "GET", "path": path, "reset": True})
    assert storage.service(SRC).get_blob_client("data", blob_name).download_blob().readall() == b"r"
    statuses = [status for method, status in log_for(storage, path) if method == "GET"]
    assert statuses[:2] == [0, 0] and statuses[2] in (200, 206)


@pytest.mark.faults
def test_delay(storage: Storage) -> None:
    blob = storage.service(SRC).get_blob_client("data", "slow.bin")
    blob.upload_blob(b"s", overwrite=True)
    storage.controller.add_rule({"service": "storage", "method": "HEAD", "path": "slow.bin", "delay": 0.6})
    t0 = time.monotonic()
    assert blob.get_blob_properties().size == 1
    assert time.monotonic() - t0 >= 0.6


def test_upstream_down_is_502(tmp_path: Path) -> None:
    """No Azurite at all: the proxy itself answers 502 with a storage-style error."""
    ca = ensure_tls(tmp_path).ca

    async def call() -> httpx.Response:
        app = storage_proxy_app(f"https://127.0.0.1:{free_port()}", ca, Controller())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://x") as client:
            return await client.get(f"/{SRC}/data/x")

    response = asyncio.run(call())
    assert response.status_code == 502
    assert response.headers["x-ms-error-code"] == "UpstreamConnectionFailed"
    assert "<Error><Code>UpstreamConnectionFailed</Code><Message>" in response.text


# ---------------------------------------------------------------------------------------------- size


def test_20_mib_streams_through_the_proxy(storage: Storage) -> None:
    """Upload and download 20 MiB with a streaming client: the proxy must not buffer the blob."""
    chunk, count = os.urandom(1024 * 1024), 20
    size, digest = len(chunk) * count, hashlib.md5(chunk * count).digest()
    sas = generate_container_sas(SRC, "data", account_key=storage.keys[SRC], permission="rcw", expiry=in_hours(1))
    url = f"{storage.url(SRC)}/data/big.bin?{sas}"
    verify = ssl.create_default_context(cafile=str(storage.tls.ca))
    with httpx.Client(verify=verify, timeout=60) as client:

        def upload() -> int:
            headers = {"x-ms-blob-type": "BlockBlob", "content-length": str(size)}
            return client.put(url, content=(chunk for _ in range(count)), headers=headers).status_code

        def download() -> tuple[int, bytes]:
            md5 = hashlib.md5()
            with client.stream("GET", url) as response:
                for part in response.iter_raw():
                    md5.update(part)
            return response.status_code, md5.digest()

        status, up_growth = peak_rss_during(upload)
        assert status == 201
        (status, got), down_growth = peak_rss_during(download)
    assert (status, got) == (200, digest)
    props = storage.service(SRC).get_blob_client("data", "big.bin").get_blob_properties()
    assert props.size == size and bytes(props.content_settings.content_md5 or b"") == digest
    print(f"RSS growth: upload {up_growth / 2**20:.1f} MiB, download {down_growth / 2**20:.1f} MiB")
    assert up_growth < size / 2 and down_growth < size / 2


# ---------------------------------------------------------------------------------------------- Azurite


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURITE_BLOB", "/nonexistent/azurite-blob")
    with pytest.raises(AzuriteError, match=r"Azurite is not installed: run `npm ci` in "):
        azurite_binary()


def test_account_keys_are_persisted_privately(tmp_path: Path) -> None:
    first = account_keys(tmp_path, ["a1", "a2"])
    assert len(base64.b64decode(first["a1"])) == 64 and first["a1"] != first["a2"]
    assert account_keys(tmp_path, ["a2", "a1", "a3"]) == {**first, "a3": account_keys(tmp_path, ["a3"])["a3"]}
    assert stat.S_IMODE((tmp_path / "storage-keys.json").stat().st_mode) == 0o600


def test_exit_before_listening_reports_the_log(tmp_path: Path) -> None:
    tls = ensure_tls(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        azurite = Azurite(tmp_path, tls, account_keys(tmp_path, ["a1"]), port=taken.getsockname()[1])
        with pytest.raises(AzuriteError, match="EADDRINUSE") as e:
            asyncio.run(azurite.start())
    assert "exited with status" in str(e.value)
    assert azurite.process is None


def gone(pid: int) -> bool:
    """Whether a process no longer runs (a zombie waiting for init to reap it counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def test_stop_kills_a_tree_that_ignores_sigterm(tmp_path: Path) -> None:
    """A stand-in that ignores SIGTERM and has a child: both are SIGKILLed after the grace period."""
    fake = tmp_path / "fake-azurite"
    fake.write_text(
        "#!/bin/sh\ntrap '' TERM\nsleep 300 &\necho child=$!\n"
        "echo 'Azurite Blob service successfully listens on https://127.0.0.1:1'\nwait\n"
    )
    fake.chmod(0o755)
    azurite = Azurite(tmp_path, ensure_tls(tmp_path), {"a1": "a2V5"}, binary=fake, stop_timeout=0.3)
    asyncio.run(azurite.start(timeout=10))
    leader = azurite.pid
    child = int(azurite.log_tail().split("child=")[1].split()[0])
    assert leader is not None and not gone(child)
    azurite.stop_sync()
    deadline = time.monotonic() + 2
    while not (gone(leader) and gone(child)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(leader) and gone(child)


def test_restart_keeps_blobs_keys_and_sas(storage: Storage) -> None:
    """Last on purpose: it restarts the module's Azurite (same state dir, same port, so the proxy stays)."""
    storage.service(SRC).get_blob_client("data", "keep.txt").upload_blob(b"kept", overwrite=True)
    sas = generate_blob_sas(SRC, "data", "keep.txt", account_key=storage.keys[SRC], permission="r", expiry=in_hours(1))
    old = storage.azurite
    pid = old.pid
    assert pid is not None
    storage.run(old.stop())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing left in Azurite's process group either

    keys = account_keys(storage.state_dir, [SRC, DST])
    assert keys == storage.keys
    storage.azurite = Azurite(storage.state_dir, storage.tls, keys, port=old.port)
    t0 = time.monotonic()
    storage.run(storage.azurite.start())
    print(f"azurite restarted in {time.monotonic() - t0:.2f} s")
    blob = storage.service(SRC, sas).get_blob_client("data", "keep.txt")
    assert blob.download_blob().readall() == b"kept"
