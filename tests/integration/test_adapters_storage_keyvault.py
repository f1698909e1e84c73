"""The Key Vault and Blob storage adapters against the stand-in: real SDKs, real TLS, real Azurite.

What is proven here: secrets are read and parsed without their value ever reaching an error; storage errors
are classified with a fix; the bridge is a server-side copy (the request log shows no GET of the source blob by
this process), keeps metadata and Content-MD5, resumes idempotently, and honours a 503's Retry-After.
"""

from __future__ import annotations

import hashlib
import os
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobServiceClient, ContentSettings

from acr_transfer.azure.keyvault import KeyVaultSecrets, SecretDisabledError
from acr_transfer.azure.storage import BlobStorage
from acr_transfer.errors import (
    AuthError,
    NotFoundError,
    PermanentError,
    SasTokenError,
    ServiceUnavailableError,
    ThrottledError,
    TransientError,
)
from acr_transfer.retry import call_with_retries
from acr_transfer.sas import SasToken
from acr_transfer.settings import Settings
from tests.support import azure
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

SRC, DST = "sourcestorage", "targetstorage"


@dataclass
class Env:
    """The adapters under test, built for the stand-in, and the facts the tests need."""

    standin: StandIn
    vault: KeyVaultSecrets
    storage: BlobStorage
    export_sas: SasToken
    bridge_sas: SasToken
    signatures: list[str]  # every sig= value seen; none may appear in an error

    def container(self, account: str, container: str = "transfer") -> str:
        return str(self.standin.topology["storage_accounts"][account]["containers"][container])

    def secret_uri(self, vault: str, name: str) -> str:
        return f"{self.standin.topology['vaults'][vault]['url']}/secrets/{name}"

    def keyed(self, account: str) -> BlobServiceClient:
        """A client with the account key, to put test blobs in place the way the export run does."""
        return BlobServiceClient(
            self.standin.topology["storage_accounts"][account]["blob_endpoint"],
            credential={"account_name": account, "account_key": self.standin.storage_key(account)},
            connection_verify=self.standin.ca,
        )

    def upload(self, account: str, blob: str, data: bytes, *, container: str = "transfer", **meta: str) -> bytes:
        md5 = hashlib.md5(data).digest()
        with self.keyed(account) as svc:
            svc.get_blob_client(container, blob).upload_blob(
                data,
                overwrite=True,
                metadata=meta if meta else {"category": "acr-transfer-blob"},
                content_settings=ContentSettings(content_type="application/octet-stream", content_md5=bytearray(md5)),
            )
        return md5

    def sas(self, account: str, container: str, permission: str, hours: float = 24) -> SasToken:
        token = SasToken.parse(azure.container_sas(self.standin, account, container, permission, hours=hours))
        self.signatures.append(_sig(token))
        return token

    def assert_secret_free(self, error: BaseException) -> None:
        text = "".join(traceback.format_exception(error)) + repr(error)
        for sig in self.signatures:
            assert sig not in text


def _sig(token: SasToken) -> str:
    sig = next(p.split("=", 1)[1] for p in token.query.split("&") if p.startswith("sig="))
    assert len(sig) > 10
    return sig


@pytest.fixture(scope="module")
def env(standin: StandIn) -> Iterator[Env]:
    settings = Settings()  # get_settings() may have been cached before the stand-in's env was applied
    credential = DefaultAzureCredential()
    vault = KeyVaultSecrets(settings, credential)
    storage = BlobStorage(settings, credential)
    vaults = standin.topology["vaults"]
    _, export_sas = vault.sas(vaults["sourcevault"]["secrets"]["acrexportsas"])
    _, bridge_sas = vault.sas(vaults["targetvault"]["secrets"]["acrbridgesas"])
    try:
        yield Env(standin, vault, storage, export_sas, bridge_sas, [_sig(export_sas), _sig(bridge_sas)])
    finally:
        vault.close()
        credential.close()


@pytest.fixture(autouse=True)
def _no_leftover_faults(standin: StandIn) -> Iterator[None]:
    yield
    standin.clear_faults()


def unique(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:12]


# ---------------------------------------------------------------------------------------------- retry


def test_retry_honours_retry_after_and_stops_on_permanent() -> None:
    waits: list[float] = []
    failures = iter([ThrottledError("busy", retry_after=7), ServiceUnavailableError("down")])

    def fn() -> str:
        for failure in failures:
            raise failure
        return "ok"

    assert call_with_retries(fn, "x", base_delay=0.1, max_delay=1, sleep=waits.append) == "ok"
    assert waits[0] >= 7  # Retry-After is a floor, even above max_delay
    assert 0.1 <= waits[1] <= 0.2  # 2nd backoff: jittered in [base, 2*base]

    def permanent() -> None:
        raise PermanentError("no")

    with pytest.raises(PermanentError):
        call_with_retries(permanent, "x", sleep=waits.append)
    assert len(waits) == 2

    def always() -> None:
        raise ConnectionError("reset")

    with pytest.raises(TransientError, match="connection problem"):
        call_with_retries(always, "y", attempts=3, base_delay=0, sleep=waits.append)
    assert len(waits) == 4


# ---------------------------------------------------------------------------------------------- Key Vault


def test_facts_and_sas_of_real_secrets(env: Env) -> None:
    facts = env.vault.facts(env.secret_uri("sourcevault", "acrexportsas"))
    assert (facts.name, facts.enabled, facts.expires_on, facts.not_before) == ("acrexportsas", True, None, None)
    assert facts.version and facts.vault == env.standin.topology["vaults"]["sourcevault"]["url"]

    facts, token = env.vault.sas(env.secret_uri("targetvault", "acrimportsas"))
    assert facts.name == "acrimportsas" and set(token.permissions) == set("rdl")
    assert set(env.export_sas.permissions) == set("rawl")
    assert set(env.bridge_sas.permissions) == set("racwl") and set(env.bridge_sas.resource_types or "") == set("co")
    for sig in env.signatures:
        assert sig not in repr(facts) + repr(token) + str(token) + repr(env.bridge_sas)


def test_missing_secret_is_not_found_naming_it(env: Env) -> None:
    with pytest.raises(NotFoundError) as e:
        env.vault.facts(env.secret_uri("sourcevault", "nosuchsecret"))
    assert "'nosuchsecret'" in str(e.value) and env.standin.topology["vaults"]["sourcevault"]["url"] in str(e.value)
    assert "keyVaultUri" in str(e.value)


def test_disabled_secret_is_a_clear_permanent_error(env: Env) -> None:
    name = unique("disabled")
    with azure.secrets(env.standin, "targetvault") as client:
        client.set_secret(name, azure.container_sas(env.standin, DST, "transfer", "rl"))
        client.update_secret_properties(name, enabled=False)
    for read in (env.vault.facts, env.vault.sas):
        with pytest.raises(SecretDisabledError) as e:
            read(env.secret_uri("targetvault", name))
        assert isinstance(e.value, PermanentError)
        assert f"'{name}'" in str(e.value) and "is disabled; enable it" in str(e.value)


def test_a_value_that_is_not_a_sas_is_reported_without_the_value(env: Env) -> None:
    name, value = unique("notasas"), "correct-horse-battery-staple-" + uuid.uuid4().hex
    with azure.secrets(env.standin, "targetvault") as client:
        client.set_secret(name, value)
    assert env.vault.facts(env.secret_uri("targetvault", name)).enabled
    with pytest.raises(SasTokenError) as e:
        env.vault.sas(env.secret_uri("targetvault", name))
    text = "".join(traceback.format_exception(e.value)) + repr(e.value)
    assert f"'{name}'" in text and value not in text and value[:12] not in text


def test_keyvault_forbidden_and_throttled(env: Env) -> None:
    uri = env.secret_uri("sourcevault", "acrexportsas")
    env.standin.add_fault(service="keyvault", method="GET", path="/secrets/acrexportsas", status=403, code="Forbidden")
    with pytest.raises(AuthError, match="lacks 'get' on secrets in vault") as forbidden:
        env.vault.facts(uri)
    assert forbidden.value.status == 403 and "Key Vault Secrets User" in str(forbidden.value)
    env.standin.clear_requests()
    env.standin.add_fault(service="keyvault", method="GET", path="/secrets/acrexportsas", status=429, retry_after=1)
    assert env.vault.facts(uri).enabled  # the SDK's own retry honours Retry-After
    # the SDK asks for '/secrets/<name>/' (empty version); the stand-in redirects that to '/secrets/<name>'
    gets = [r for r in env.standin.requests("keyvault") if "/secrets/acrexportsas" in r["path"]]
    assert gets[0]["status"] == 429 and gets[-1]["status"] == 200 and gets[1]["at"] - gets[0]["at"] >= 1.0


# ---------------------------------------------------------------------------------------------- storage


def test_check_container_with_the_export_sas_and_with_bad_ones(env: Env) -> None:
    env.storage.check_container(env.container(SRC), env.export_sas)
    env.storage.check_container(env.container(DST), None)  # the identity's token
    for bad in (env.sas(SRC, "transfer", "rw"), env.sas(SRC, "transfer", "rl", hours=-1)):
        with pytest.raises(AuthError) as e:
            env.storage.check_container(env.container(SRC), bad)
        assert env.container(SRC) in str(e.value) and "renew the secret" in str(e.value)
        env.assert_secret_free(e.value)


def test_blob_facts_absent_and_present(env: Env) -> None:
    blob = unique("facts") + ".tar"
    assert env.storage.blob_facts(env.container(SRC), blob, env.export_sas) is None
    md5 = env.upload(SRC, blob, b"abc" * 100)
    facts = env.storage.blob_facts(env.container(SRC), blob, env.export_sas)
    assert facts is not None and (facts.name, facts.size, facts.content_md5) == (blob, 300, md5)
    assert facts.metadata == {"category": "acr-transfer-blob"} and facts.etag
    with pytest.raises(NotFoundError, match="does not exist"):
        env.storage.blob_facts(env.container(SRC).rsplit("/", 1)[0] + "/nocontainer", blob, None)


def _log(env: Env, account: str, blob: str, container: str = "transfer") -> list[dict[str, Any]]:
    return [r for r in env.standin.requests("storage") if r["path"] == f"/{account}/{container}/{blob}"]


def test_bridge_is_a_verified_server_side_copy_and_idempotent(env: Env) -> None:
    blob = unique("bridge") + ".tar"
    data = os.urandom(96 * 1024)
    md5 = env.upload(SRC, blob, data, category="acr-transfer-blob", transferid="t1")
    env.standin.clear_requests()
    facts = env.storage.copy_blob(env.container(SRC), blob, env.export_sas, env.container(DST), env.bridge_sas)
    assert (facts.size, facts.content_md5) == (len(data), md5)
    assert facts.metadata == {"category": "acr-transfer-blob", "transferid": "t1"}
    source_log = _log(env, SRC, blob)
    assert source_log and all(r["method"] == "HEAD" for r in source_log)  # no GET: no byte came through here
    assert [r["method"] for r in _log(env, DST, blob)].count("PUT") == 1
    with env.keyed(DST) as svc:
        assert hashlib.md5(svc.get_blob_client("transfer", blob).download_blob().readall()).digest() == md5

    env.standin.clear_requests()
    again = env.storage.copy_blob(env.container(SRC), blob, env.export_sas, env.container(DST), env.bridge_sas)
    assert again == facts
    assert [r["method"] for r in _log(env, DST, blob)] == ["HEAD"]  # found it: no second copy


def test_bridge_with_the_identity_async_path_and_metadata_repair(env: Env) -> None:
    blob = unique("token") + ".tar"
    data = os.urandom(10_000)
    md5 = env.upload(SRC, blob, data)
    # token on the target, and the asynchronous Copy Blob path (polled) forced by sync_limit=0
    facts = env.storage.copy_blob(
        env.container(SRC), blob, env.export_sas, env.container(DST), None, sync_limit=0, poll_seconds=0.05
    )
    assert (facts.size, facts.content_md5, facts.metadata["category"]) == (len(data), md5, "acr-transfer-blob")

    # a target that matches but lost its metadata (e.g. an interrupted earlier bridge) is repaired, not copied
    with env.keyed(DST) as svc:
        svc.get_blob_client("transfer", blob).set_blob_metadata({})
    env.standin.clear_requests()
    facts = env.storage.copy_blob(env.container(SRC), blob, env.export_sas, env.container(DST), env.bridge_sas)
    assert facts.metadata["category"] == "acr-transfer-blob" and facts.content_md5 == md5
    assert [r["method"] for r in _log(env, DST, blob)] == ["HEAD", "PUT", "HEAD"]  # PUT = set metadata


def test_bridge_retries_a_503_no_sooner_than_retry_after(env: Env) -> None:
    blob = unique("retry") + ".tar"
    env.upload(SRC, blob, b"x" * 2048)
    env.standin.clear_requests()
    env.standin.add_fault(service="storage", method="PUT", path=f"^/{DST}/transfer/{blob}$", status=503, retry_after=1)
    facts = env.storage.copy_blob(env.container(SRC), blob, env.export_sas, env.container(DST), env.bridge_sas)
    assert facts.size == 2048
    puts = [r for r in _log(env, DST, blob) if r["method"] == "PUT"]
    assert [r["status"] for r in puts][:1] == [503] and len(puts) == 2
    assert puts[1]["at"] - puts[0]["at"] >= 1.0


def test_bridge_errors_name_blob_and_never_the_sas(env: Env) -> None:
    missing = unique("missing") + ".tar"
    with pytest.raises(NotFoundError, match=missing):
        env.storage.copy_blob(env.container(SRC), missing, env.export_sas, env.container(DST), env.bridge_sas)
    blob = unique("denied") + ".tar"
    env.upload(SRC, blob, b"y" * 512)
    read_only = env.sas(DST, "transfer", "rl")
    with pytest.raises(AuthError) as e:
        env.storage.copy_blob(env.container(SRC), blob, env.export_sas, env.container(DST), read_only)
    assert blob in str(e.value) and "'cw'" in str(e.value)
    env.assert_secret_free(e.value)
    expired_source = env.sas(SRC, "transfer", "r", hours=-1)
    with pytest.raises(AuthError) as e:
        env.storage.copy_blob(env.container(SRC), blob, expired_source, env.container(DST), env.bridge_sas)
    env.assert_secret_free(e.value)
    env.standin.add_fault(service="storage", method="PUT", path=f"/{DST}/transfer/{blob}$", status=500, count=0)
    one_retry = BlobStorage(Settings(storage_retry_total=1), DefaultAzureCredential())
    with pytest.raises(ServiceUnavailableError) as unavailable:
        one_retry.copy_blob(env.container(SRC), blob, env.export_sas, env.container(DST), env.bridge_sas)
    env.assert_secret_free(unavailable.value)
    assert [r["status"] for r in _log(env, DST, blob) if r["method"] == "PUT"][-2:] == [500, 500]
    env.standin.clear_faults()
    env.standin.add_fault(service="storage", method="PUT", path=f"/{DST}/transfer/{blob}$", reset=True, count=0)
    with pytest.raises(ServiceUnavailableError, match="connection problem") as dropped:
        one_retry.copy_blob(env.container(SRC), blob, env.export_sas, env.container(DST), env.bridge_sas)
    env.assert_secret_free(dropped.value)


def test_delete_blob_true_then_false(env: Env) -> None:
    blob = unique("delete") + ".tar"
    env.upload(SRC, blob, b"z")
    sas = env.sas(SRC, "transfer", "rdl")
    assert env.storage.delete_blob(env.container(SRC), blob, sas) is True
    assert env.storage.delete_blob(env.container(SRC), blob, sas) is False
    assert env.storage.blob_facts(env.container(SRC), blob, sas) is None
