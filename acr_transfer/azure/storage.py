"""Blob storage: the only module that talks to Azure Blob storage.

What the transfer needs from storage: is a container reachable with this SAS (:meth:`BlobStorage.check_container`),
what does a blob look like (:meth:`~BlobStorage.blob_facts`), the **bridge** — a server-side copy of the export
blob into the import pipeline's container when the two differ (:meth:`~BlobStorage.copy_blob`) — and cleanup
(:meth:`~BlobStorage.delete_blob`).

Containers are named by URI (``https://<account host>/<container>`` or path-style
``https://<host>/<account>/<container>``), exactly as the pipelines store them; authorisation is a
:class:`~acr_transfer.sas.SasToken` or, when that is ``None``, the token credential (ManagedIdentity mode).

Every client is built with ``retry_total=0``: the SDK's retry ignores Retry-After, so retries are ours
(:func:`acr_transfer.retry.call_with_retries`). Every failure is classified (:mod:`acr_transfer.errors`) with
a message naming the container and blob, never the SAS.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from acr_transfer.errors import (
    AcrTransferError,
    AuthError,
    ConfigError,
    NotFoundError,
    PermanentError,
    RunTimeoutError,
    ServiceUnavailableError,
    TransientError,
    VerificationError,
)
from acr_transfer.retry import call_with_retries
from acr_transfer.sas import SasToken
from acr_transfer.settings import Settings, get_credential, get_settings

T = TypeVar("T")

BLOB_CATEGORY = ("category", "acr-transfer-blob")  # metadata ACR import requires on the blob
SYNC_COPY_LIMIT = 256 * 1024 * 1024  # Copy Blob From URL accepts sources up to 256 MiB
_TRANSIENT_COPY_FAILURE = re.compile(r"(?i)\b(5\d\d|timeout|timed out|server ?busy|internal ?error|unavailable)\b")


class CopyRefused(AuthError):
    """Storage refused a bridge copy's SAS (or identity); ``side`` says whose: ``"source"`` (the export
    pipeline's SAS, reading the blob) or ``"target"`` (the bridge SAS or the identity, writing it)."""

    def __init__(self, message: str, *, side: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message, code=code, status=status)
        self.side = side


class WriteConflict(TransientError):
    """A conditional write lost the race: another writer changed the blob since it was read."""


@dataclass(frozen=True)
class BlobFacts:
    """What is known about one blob (no SAS, no content)."""

    name: str
    size: int
    content_md5: bytes | None
    metadata: dict[str, str]
    last_modified: datetime
    etag: str


class BlobStorage:
    """Blob operations on containers named by URI, authorised by a SAS or by the token credential."""

    def __init__(self, settings: Settings | None = None, credential: Any | None = None) -> None:
        """Prepare the adapter; no request is made here.

        Args:
            settings: CA bundle and ``storage_retry_total`` (our retries per call); default :func:`get_settings`.
            credential: token credential for calls without a SAS; default :func:`get_credential`, fetched only
                when such a call is made.
        """
        self._settings = settings or get_settings()
        self._credential = credential

    # ------------------------------------------------------------------------------------------ public API

    def check_container(self, container_uri: str, sas: SasToken | None) -> None:
        """List one page of the container: proves it exists and that ``sas`` (or the identity) may list it.

        Raises:
            AuthError: the SAS is expired, not yet valid, lacks 'l', or the identity has no data role.
            NotFoundError: the container (or account) does not exist.
            TransientError: storage stayed throttled or unavailable through our retries.
        """
        with self._container(container_uri, sas) as container:
            self._call(
                lambda: list(next(iter(container.list_blobs(results_per_page=1).by_page()), [])),
                f"list blobs in container {container_uri}",
                sas,
                "l",
            )

    def blob_facts(self, container_uri: str, blob: str, sas: SasToken | None) -> BlobFacts | None:
        """Size, Content-MD5, metadata, last-modified and etag of a blob; ``None`` when it does not exist.

        Raises:
            NotFoundError: the container does not exist (a missing blob is ``None``, not an error).
            AuthError / TransientError: as for :meth:`check_container` ('r' is needed).
        """
        with self._container(container_uri, sas) as container:
            props = self._properties(container.get_blob_client(blob), container_uri, blob, sas)
        return None if props is None else _facts(props)

    def copy_blob(
        self,
        source_container_uri: str,
        blob: str,
        source_sas: SasToken,
        target_container_uri: str,
        target_sas: SasToken | None,
        *,
        sync_limit: int = SYNC_COPY_LIMIT,
        poll_seconds: float = 1.0,
        timeout: float = 3600,
    ) -> BlobFacts:
        """Bridge a blob to another container with a server-side copy, then verify it; no byte passes through here.

        The target gets the same name. Blobs up to ``sync_limit`` bytes use Copy Blob From URL (the service
        answers when the copy is done); larger ones start an asynchronous copy that is polled every
        ``poll_seconds``. Afterwards the target must match the source in size and Content-MD5 and carry
        ``category=acr-transfer-blob``; metadata or Content-MD5 dropped by the copy are set again.
        Idempotent: a target that already matches is returned without copying, and a copy of this source
        still pending (from an earlier, interrupted attempt) is waited for instead of restarted.

        Args:
            source_container_uri: the export pipeline's container.
            blob: the blob name, in both containers.
            source_sas: a SAS that may read the source blob (the export pipeline's secret).
            target_container_uri: the import pipeline's container.
            target_sas: a SAS that may create/write and read blobs there ('cw' + 'r'), or ``None`` to use
                the token credential.
            sync_limit: largest blob copied synchronously (the service's limit is 256 MiB).
            poll_seconds: wait between two status reads of an asynchronous copy.
            timeout: seconds an asynchronous copy may take.

        Returns:
            The target blob's facts.

        Raises:
            NotFoundError: the source blob or a container does not exist.
            CopyRefused: a SAS or the identity does not allow the operation (an AuthError; ``side`` says whose).
            VerificationError: the copy differs from the source in size or Content-MD5 (both values named).
            PermanentError / ServiceUnavailableError: the copy failed or was aborted (transient when the
                service's description says so, e.g. a 500 reading the source).
            RunTimeoutError: the asynchronous copy still ran after ``timeout``; it is left running, so a
                re-run waits for it rather than copying again.
            TransientError: storage stayed throttled or unavailable through our retries.
        """
        where = f"blob '{blob}' from container {source_container_uri} to container {target_container_uri}"
        try:
            with self._container(source_container_uri, source_sas) as src:
                src_props = self._properties(src.get_blob_client(blob), source_container_uri, blob, source_sas)
        except AuthError as e:
            raise CopyRefused(e.message, side="source", code=e.code, status=e.status) from None
        if src_props is None:
            raise NotFoundError(
                f"blob '{blob}' not found in container {source_container_uri}; the export run has not written it "
                "(or it was deleted), so there is nothing to bridge"
            )
        source = _facts(src_props)
        source_path = urlsplit(f"{source_container_uri.rstrip('/')}/{quote(blob, safe='/~')}").path
        try:
            with self._container(target_container_uri, target_sas) as container:
                target = container.get_blob_client(blob)
                props = self._properties(target, target_container_uri, blob, target_sas)
                if props is not None and props.copy.status == "pending" and _copied_from(props, source_path):
                    props = self._wait_for_copy(target, where, target_sas, poll_seconds, time.monotonic() + timeout)
                elif props is None or not _same_content(_facts(props), source):
                    self._start_copy(target, source, source_container_uri, source_sas, where, target_sas, sync_limit)
                    props = None
                    if source.size > sync_limit:
                        props = self._wait_for_copy(target, where, target_sas, poll_seconds, time.monotonic() + timeout)
                return self._verify_copy(target, source, target_container_uri, target_sas, props)
        except AuthError as e:  # the copy reads its source with the source SAS: that one failed
            side = "source" if e.code == "CannotVerifyCopySource" else "target"
            raise CopyRefused(e.message, side=side, code=e.code, status=e.status) from None

    def delegated_read_sas(self, container_uri: str, blob: str, valid_for: timedelta) -> SasToken:
        """A read-only SAS for one blob signed with a user delegation key of this worker's identity: how a bridge
        reads the blob of a ManagedIdentity export pipeline (no SAS in Key Vault) and still copies server-side.

        Args:
            container_uri: the export pipeline's container.
            blob: the blob to read.
            valid_for: how long the SAS lasts (at most 7 days, the key's limit); the copy must start and, for a
                large blob, finish within it.

        Raises:
            AuthError: the identity may not get a user delegation key (it needs a data role, e.g. Storage Blob
                Data Reader, on the account).
            TransientError: storage stayed throttled or unavailable through our retries.
        """
        from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

        with self._container(container_uri, None) as container:
            account, name = container.account_name, container.container_name
        account_url = container_uri.rstrip("/").rsplit("/", 1)[0]
        start = datetime.now(UTC) - timedelta(minutes=5)  # clock skew
        expiry = datetime.now(UTC) + min(valid_for, timedelta(days=7) - timedelta(minutes=10))
        service = BlobServiceClient(
            account_url, credential=self._token_credential(), retry_total=0, **self._settings.connection_kwargs()
        )
        with service:
            key = self._call(
                lambda: service.get_user_delegation_key(start, expiry),
                f"get a user delegation key for account {account_url}",
                None,
                "r",
            )
        token = generate_blob_sas(
            account, name, blob, user_delegation_key=key, permission=BlobSasPermissions(read=True), expiry=expiry,
            start=start, protocol="https",
        )  # fmt: skip
        return SasToken.parse(token, where=f"the user-delegation SAS for blob '{blob}'")

    def delete_blob(self, container_uri: str, blob: str, sas: SasToken | None) -> bool:
        """Delete a blob and its snapshots.

        Returns:
            True when it was deleted, False when it was already gone.

        Raises:
            NotFoundError: the container does not exist.
            AuthError / TransientError: as for :meth:`check_container` ('d' is needed).
        """
        with self._container(container_uri, sas) as container:
            client = container.get_blob_client(blob)
            try:
                self._call(
                    lambda: client.delete_blob(delete_snapshots="include"),
                    f"delete blob '{blob}' in container {container_uri}",
                    sas,
                    "d",
                )
            except NotFoundError as e:
                if _is_container_missing(e):
                    raise
                return False
        return True

    def read_text(self, container_uri: str, blob: str, sas: SasToken | None) -> tuple[str, str] | None:
        """A small UTF-8 blob (a ledger, a frozen plan) and its etag; ``None`` when it does not exist.

        Raises:
            NotFoundError: the container does not exist.
            AuthError / TransientError: as for :meth:`check_container` ('r' is needed).
        """
        with self._container(container_uri, sas) as container:
            client = container.get_blob_client(blob)
            try:
                downloaded = self._call(
                    lambda: client.download_blob(encoding="utf-8"),
                    f"read blob '{blob}' in container {container_uri}",
                    sas,
                    "r",
                )
                return str(downloaded.readall()), str(downloaded.properties.etag)
            except NotFoundError as e:
                if _is_container_missing(e):
                    raise
                return None

    def write_text(self, container_uri: str, blob: str, text: str, sas: SasToken | None, *, etag: str | None) -> str:
        """Write a small UTF-8 blob only if nobody changed it since it was read: ``etag`` is what :meth:`read_text`
        returned (``None``: the blob must not exist yet). Returns the new etag.

        Raises:
            WriteConflict: another writer got there first (the blob exists, or its etag moved); read it again.
            NotFoundError: the container does not exist.
            AuthError / TransientError: as for :meth:`check_container` ('c' and 'w' are needed).
        """
        from azure.core import MatchConditions
        from azure.storage.blob import ContentSettings

        conditions: dict[str, Any] = (
            {"etag": etag, "match_condition": MatchConditions.IfNotModified}
            if etag is not None
            else {"match_condition": MatchConditions.IfMissing}
        )
        with self._container(container_uri, sas) as container:
            client = container.get_blob_client(blob)
            try:
                result = self._call(
                    lambda: client.upload_blob(
                        text.encode(),
                        overwrite=True,
                        content_settings=ContentSettings(content_type="application/json"),
                        **conditions,
                    ),
                    f"write blob '{blob}' in container {container_uri}",
                    sas,
                    "cw",
                )
            except PermanentError as e:
                if e.status in (409, 412):
                    raise WriteConflict(
                        f"blob '{blob}' in container {container_uri} was changed by another writer", status=e.status
                    ) from None
                raise
        return str(result["etag"])

    # ------------------------------------------------------------------------------------------ helpers

    def _container(self, container_uri: str, sas: SasToken | None) -> Any:
        """A ContainerClient (use it as a context manager) authorised by ``sas`` or the token credential."""
        from azure.storage.blob import ContainerClient

        parts = urlsplit(container_uri)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(
                f"'{container_uri}' is not a blob container URI; expected https://<account host>/<container> "
                "without a query (the SAS comes from Key Vault)"
            )
        credential = sas.query if sas is not None else self._token_credential()
        return ContainerClient.from_container_url(
            container_uri.rstrip("/"), credential=credential, retry_total=0, **self._settings.connection_kwargs()
        )

    def _token_credential(self) -> Any:
        if self._credential is None:
            self._credential = get_credential()
        return self._credential

    def _call(self, fn: Callable[[], T], what: str, sas: SasToken | None, permission: str) -> T:
        """One storage call with our retries; an AuthError says what to grant or renew."""
        try:
            return call_with_retries(fn, what, attempts=self._settings.storage_retry_total + 1)
        except AuthError as e:
            raise AuthError(
                f"{e.message.rstrip('. ')}; {_auth_fix(sas, permission, e.code)}", code=e.code, status=e.status
            ) from None

    def _properties(self, client: Any, container_uri: str, blob: str, sas: SasToken | None) -> Any | None:
        """``get_blob_properties``, or None when the blob (not the container) is missing."""
        try:
            return self._call(
                client.get_blob_properties, f"read properties of blob '{blob}' in container {container_uri}", sas, "r"
            )
        except NotFoundError as e:
            if _is_container_missing(e):
                raise NotFoundError(
                    f"container {container_uri} does not exist; create it or fix the pipeline's containerUri",
                    code=e.code,
                    status=e.status,
                ) from None
            return None

    def _start_copy(
        self,
        target: Any,
        source: BlobFacts,
        source_container_uri: str,
        source_sas: SasToken,
        where: str,
        target_sas: SasToken | None,
        sync_limit: int,
    ) -> None:
        url = f"{source_container_uri.rstrip('/')}/{quote(source.name, safe='/~')}?{source_sas.query}"
        metadata = {**source.metadata, BLOB_CATEGORY[0]: BLOB_CATEGORY[1]}
        sync = source.size <= sync_limit
        try:
            self._call(
                lambda: target.start_copy_from_url(url, metadata=metadata, requires_sync=sync or None),
                f"copy {where}",
                target_sas,
                "cw",
            )
        except AuthError as e:
            if e.code == "CannotVerifyCopySource":
                raise AuthError(
                    f"copy {where}: the source blob could not be read with the export pipeline's SAS; it must "
                    "allow read ('r') and be unexpired",
                    code=e.code,
                    status=e.status,
                ) from None
            raise

    def _wait_for_copy(
        self, target: Any, where: str, sas: SasToken | None, poll_seconds: float, deadline: float
    ) -> Any:
        """Poll an asynchronous copy until it succeeds; failed/aborted/timeout raise (see ``copy_blob``)."""
        while True:
            props = self._call(target.get_blob_properties, f"read copy status of {where}", sas, "r")
            copy = props.copy
            if copy.status in (None, "success"):
                return props
            if copy.status in ("failed", "aborted"):
                text = f"server-side copy of {where} {copy.status}: {copy.status_description or 'no reason given'}"
                if copy.status == "failed" and _TRANSIENT_COPY_FAILURE.search(copy.status_description or ""):
                    raise ServiceUnavailableError(text + "; a new attempt copies again")
                raise PermanentError(text)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunTimeoutError(
                    f"server-side copy of {where} still pending (copied {copy.progress or '?'} bytes); it keeps "
                    "running in the storage service: re-run to wait for it, or raise the route's timeout"
                )
            time.sleep(min(poll_seconds, remaining))

    def _verify_copy(
        self, target: Any, source: BlobFacts, container_uri: str, sas: SasToken | None, props: Any | None
    ) -> BlobFacts:
        """Check size and Content-MD5 against the source; put back metadata or MD5 the copy dropped.

        ``props`` are the target's properties when just read (saves a request), else None.
        """
        what = f"blob '{source.name}' in container {container_uri}"
        if props is None:
            props = self._call(target.get_blob_properties, f"read properties of {what}", sas, "r")
        facts = _facts(props)
        _check_content(facts, source, what)
        wanted = {**source.metadata, BLOB_CATEGORY[0]: BLOB_CATEGORY[1]}
        repaired = False
        if any(facts.metadata.get(k) != v for k, v in wanted.items()):
            self._call(
                lambda: target.set_blob_metadata({**facts.metadata, **wanted}), f"set metadata of {what}", sas, "w"
            )
            repaired = True
        if source.content_md5 is not None and facts.content_md5 is None:
            self._call(lambda: _set_md5(target, source.content_md5), f"set Content-MD5 of {what}", sas, "w")
            repaired = True
        if not repaired:
            return facts
        facts = _facts(self._call(target.get_blob_properties, f"read properties of {what}", sas, "r"))
        _check_content(facts, source, what)
        if facts.metadata.get(BLOB_CATEGORY[0]) != BLOB_CATEGORY[1]:
            raise VerificationError(f"{what} lacks metadata category=acr-transfer-blob after it was set")
        return facts


def _facts(props: Any) -> BlobFacts:
    md5 = props.content_settings.content_md5
    return BlobFacts(
        name=props.name,
        size=int(props.size),
        content_md5=bytes(md5) if md5 else None,
        metadata=dict(props.metadata or {}),
        last_modified=props.last_modified,
        etag=str(props.etag),
    )


def _same_content(target: BlobFacts, source: BlobFacts) -> bool:
    """A target that is already the source's copy (a source without Content-MD5 never matches: copy again)."""
    return target.size == source.size and source.content_md5 is not None and target.content_md5 == source.content_md5


def _check_content(target: BlobFacts, source: BlobFacts, what: str) -> None:
    if target.size != source.size:
        raise VerificationError(f"{what}: copy has {target.size} bytes, the source {source.size}; delete it and re-run")
    if source.content_md5 is not None and target.content_md5 is not None and target.content_md5 != source.content_md5:
        raise VerificationError(
            f"{what}: copy has Content-MD5 {target.content_md5.hex()}, the source {source.content_md5.hex()}; "
            "delete it and re-run"
        )


def _set_md5(target: Any, md5: bytes | None) -> Any:
    """Set Content-MD5, keeping the other content headers (Set Blob Properties replaces all of them)."""
    from azure.storage.blob import ContentSettings

    current = target.get_blob_properties().content_settings
    return target.set_http_headers(
        ContentSettings(
            content_type=current.content_type,
            content_encoding=current.content_encoding,
            content_language=current.content_language,
            content_disposition=current.content_disposition,
            cache_control=current.cache_control,
            content_md5=bytearray(md5) if md5 else None,
        )
    )


def _copied_from(props: Any, source_path: str) -> bool:
    """Whether the target's (pending) copy reads this source blob; compared by path, the query differs."""
    return bool(props.copy.source) and urlsplit(props.copy.source).path == source_path


def _is_container_missing(error: AcrTransferError) -> bool:
    return error.code in ("ContainerNotFound", "ContainerBeingDeleted") or (
        error.code not in ("BlobNotFound", "", None) and "container" in error.message.lower()
    )


def _auth_fix(sas: SasToken | None, permission: str, code: str | None) -> str:
    if sas is None:
        return (
            "grant the identity running this flow a data role on the container (Storage Blob Data Contributor; "
            "Reader for reads)"
        )
    if code == "AuthorizationFailure":
        return "the SAS is expired, not yet valid or signed for another container: renew the secret in Key Vault"
    return f"the SAS must allow '{permission}', be unexpired and https-only: renew the secret in Key Vault"
