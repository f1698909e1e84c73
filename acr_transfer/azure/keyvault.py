"""Key Vault secrets: the only module that talks to Key Vault.

The export and import pipelines name a secret that holds the SAS token for their storage container. The
flow reads that secret at run time to check it (:meth:`KeyVaultSecrets.facts`) or to use the SAS itself
(:meth:`KeyVaultSecrets.sas`). The secret's value never leaves this module except inside a
:class:`~acr_transfer.sas.SasToken`, whose ``str``/``repr`` hide the signature: no exception, log line
or ``repr`` here contains it.

Errors (all classified, see :mod:`acr_transfer.errors`):

    NotFoundError        the secret does not exist
    SecretDisabledError  the secret is disabled (Key Vault answers 403 with inner code SecretDisabled)
    AuthError            any other 401/403: the identity may not read the vault's secrets
    SasTokenError        the value is not a SAS token (``sas`` only)
    ConfigError          the secret URI is malformed, or the vault's challenge names another domain
    TransientError       429, 5xx and dropped connections, after the SDK's own retries (which honour
                         Retry-After)
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from acr_transfer.errors import (
    AcrTransferError,
    AuthError,
    ConfigError,
    NotFoundError,
    PermanentError,
    SasTokenError,
    TransientError,
    classify,
)
from acr_transfer.sas import SasToken
from acr_transfer.settings import Settings, get_credential, get_settings

_SECRET_NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_VERSION_RE = re.compile(r"^[0-9A-Za-z]{1,64}$")


class SecretDisabledError(PermanentError):
    """The secret exists but is disabled, so nobody (ACR included) can read it."""


@dataclass(frozen=True)
class SecretFacts:
    """What may be logged or reported about a secret: its attributes, never its value."""

    uri: str
    vault: str
    name: str
    version: str | None
    enabled: bool
    expires_on: datetime | None
    not_before: datetime | None
    content_type: str | None


@dataclass(frozen=True)
class SecretRef:
    """A parsed secret URI: ``https://<vault-host>/secrets/<name>[/<version>]``."""

    vault_url: str
    name: str
    version: str | None

    @classmethod
    def parse(cls, secret_uri: str) -> SecretRef:
        """Split a secret URI into vault URL, name and optional version.

        Raises:
            ConfigError: not an https URL of the form ``https://<vault-host>/secrets/<name>[/<version>]``.
        """
        fix = "expected https://<vault-host>/secrets/<name>[/<version>]; fix the pipeline's keyVaultUri"
        parts = urlsplit(secret_uri.strip())
        segments = [s for s in parts.path.split("/") if s]
        if (
            parts.scheme != "https"
            or not parts.netloc
            or parts.query
            or parts.fragment
            or len(segments) not in (2, 3)
            or segments[0] != "secrets"
        ):
            raise ConfigError(f"'{secret_uri}' is not a Key Vault secret URI; {fix}")
        name = segments[1]
        version = segments[2] if len(segments) == 3 else None
        if not _SECRET_NAME_RE.match(name) or (version is not None and not _VERSION_RE.match(version)):
            raise ConfigError(f"'{secret_uri}' names no valid secret (name: letters, digits, '-'); {fix}")
        return cls(f"https://{parts.netloc}", name, version)

    @property
    def uri(self) -> str:
        return f"{self.vault_url}/secrets/{self.name}" + (f"/{self.version}" if self.version else "")


class KeyVaultSecrets:
    """Reads SAS secrets from Key Vault; one ``SecretClient`` per vault, cached for the object's life."""

    def __init__(self, settings: Settings | None = None, credential: Any | None = None) -> None:
        """Prepare a reader; no request is made until a secret is read.

        Args:
            settings: where Azure is (CA bundle, challenge check); default :func:`get_settings`.
            credential: an azure-core token credential; default :func:`get_credential`.
        """
        self._settings = settings or get_settings()
        self._credential = credential if credential is not None else get_credential()
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def facts(self, secret_uri: str) -> SecretFacts:
        """The attributes of a secret (enabled, expiry, not-before, version, content type), without its value.

        Raises:
            ConfigError: the URI is malformed.
            NotFoundError: no such secret (or version).
            SecretDisabledError: the secret is disabled.
            AuthError: the identity running this flow may not read secrets in that vault.
            TransientError: Key Vault stayed throttled or unavailable through the SDK's retries.
        """
        ref = SecretRef.parse(secret_uri)
        return _facts(ref, self._get(ref))

    def sas(self, secret_uri: str) -> tuple[SecretFacts, SasToken]:
        """Read a secret and parse its value as a SAS token (a leading '?' is accepted).

        Returns:
            The secret's facts and the parsed token; ``SasToken.query`` is the only way to the signature.

        Raises:
            SasTokenError: the value is not a SAS token (the message never contains the value).
            and everything :meth:`facts` raises.
        """
        ref = SecretRef.parse(secret_uri)
        secret = self._get(ref)
        facts = _facts(ref, secret)
        try:
            token = SasToken.parse(secret.value or "", where=f"secret '{ref.name}' in vault {ref.vault_url}")
        except SasTokenError as e:
            # the parser's message names the secret and the reason, never the value
            raise SasTokenError(
                f"{e.message}; store the container SAS (e.g. '?sv=…&sp=…&sig=…') as the secret's value"
            ) from None
        except Exception:
            # an unexpected parser failure may echo the value: report neither it nor its chain
            raise SasTokenError(
                f"secret '{ref.name}' in vault {ref.vault_url} does not hold a SAS token (it could not be parsed); "
                "store the container SAS as the secret's value"
            ) from None
        return facts, token

    def close(self) -> None:
        """Close every cached client (the credential belongs to the caller)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> KeyVaultSecrets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self, vault_url: str) -> Any:
        from azure.keyvault.secrets import SecretClient

        with self._lock:
            client = self._clients.get(vault_url)
            if client is None:
                client = SecretClient(
                    vault_url,
                    self._credential,
                    verify_challenge_resource=self._settings.keyvault_verify_challenge_resource,
                    # a few quick retries per call (the SDK's default of 10 backs off for minutes, silently);
                    # a longer outage is the step's to outlast, saying so (tasks/retry.py)
                    retry_total=self._settings.arm_retry_total,
                    retry_backoff_max=self._settings.retry_max_seconds,
                    **self._settings.connection_kwargs(),
                )
                self._clients[vault_url] = client
            return client

    def _get(self, ref: SecretRef) -> Any:
        """``get_secret`` with every failure turned into a message naming secret, vault and fix."""
        client = self._client(ref.vault_url)
        try:
            return client.get_secret(ref.name, ref.version)
        except Exception as exc:
            raise _secret_error(exc, ref) from None


def _facts(ref: SecretRef, secret: Any) -> SecretFacts:
    props = secret.properties
    return SecretFacts(
        uri=ref.uri,
        vault=ref.vault_url,
        name=ref.name,
        version=props.version,
        enabled=bool(props.enabled) if props.enabled is not None else True,
        expires_on=props.expires_on,
        not_before=props.not_before,
        content_type=props.content_type,
    )


def _secret_error(exc: BaseException, ref: SecretRef) -> AcrTransferError:
    """Classify a failed ``get_secret`` and reword it for a person who has to fix it."""
    where = f"secret '{ref.name}' in vault {ref.vault_url}"
    if isinstance(exc, ValueError) and "challenge resource" in str(exc):
        return ConfigError(
            f"reading {where}: the vault's authentication challenge names another domain ({exc}); set "
            "ACR_TRANSFER_KEYVAULT_VERIFY_CHALLENGE_RESOURCE=false only for a local or private vault"
        )
    error = classify(exc, f"read {where}")
    detail = error.message.removeprefix(f"read {where}: ").rstrip(". ")  # the service's status, code and words
    kw: dict[str, Any] = {"code": error.code, "status": error.status}
    if isinstance(error, NotFoundError):
        what = f"secret '{ref.name}'" + (f" version {ref.version}" if ref.version else "")
        return NotFoundError(
            f"{what} not found in vault {ref.vault_url}; create it or fix the pipeline's keyVaultUri", **kw
        )
    if error.status == 403 and _is_disabled(exc):
        return SecretDisabledError(
            f"{where} is disabled; enable it (az keyvault secret set-attributes --enabled true --id {ref.uri})",
            **kw,
        )
    if isinstance(error, AuthError):
        if error.status == 403:
            return AuthError(
                f"the identity running this flow lacks 'get' on secrets in vault {ref.vault_url} (reading "
                f"secret '{ref.name}': {detail}); grant it the 'Key Vault Secrets User' role or an "
                "access policy with secret get",
                **kw,
            )
        return AuthError(
            f"could not authenticate to vault {ref.vault_url} to read secret '{ref.name}' ({detail}); "
            "check the credential this flow runs with (managed identity, workload identity, environment)",
            **kw,
        )
    if isinstance(error, TransientError):
        return type(error)(
            f"{error.message.rstrip('. ')}; Key Vault is throttling or unavailable, try again later",
            retry_after=error.retry_after,
            **kw,
        )
    return error


def _is_disabled(exc: BaseException) -> bool:
    """Key Vault's answer for a disabled secret: 403 Forbidden, inner code SecretDisabled (or says so)."""
    err = getattr(exc, "error", None)
    inner = getattr(err, "innererror", None) or {}
    if isinstance(inner, dict) and str(inner.get("code", "")).lower() == "secretdisabled":
        return True
    message = str(getattr(err, "message", None) or getattr(exc, "message", "") or "")
    return "disabled" in message.lower()
