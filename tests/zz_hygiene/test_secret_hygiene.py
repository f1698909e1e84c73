"""Runs after every other test (this folder sorts last): no SAS signature, storage account key, registry admin
password or bearer token appears in anything the suite's runs left behind — what the Prefect server stored (logs,
flow-run parameters, flow and task state messages with their exceptions, artifacts, events), every test's captured
stdout, stderr, logs and failure text, and the output of the processes the crash tests killed."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import urllib.parse
from pathlib import Path

import pytest

from tests.conftest import CAPTURED
from tests.support import azure
from tests.support.standin import StandIn
from tests.support.transfer import prefect_records

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def _secrets(standin: StandIn) -> dict[str, str]:
    """Every SAS signature in both vaults (every version, disabled ones too) and every account key."""
    found: dict[str, str] = {}
    for vault in ("sourcevault", "targetvault"):
        kv = azure.secrets(standin, vault)
        for props in kv.list_properties_of_secrets():
            for version in kv.list_properties_of_secret_versions(props.name):
                if not version.enabled:  # a disabled version cannot be read: enable it for a moment
                    kv.update_secret_properties(props.name, version.version, enabled=True)
                value = kv.get_secret(props.name, version.version).value or ""
                if not version.enabled:
                    kv.update_secret_properties(props.name, version.version, enabled=False)
                for part in value.lstrip("?").split("&"):
                    if part.startswith("sig="):
                        found[f"sig of {vault}/{props.name}"] = part[4:]
    for account in ("sourcestorage", "targetstorage"):
        found[f"account key of {account}"] = standin.storage_key(account)
    for registry in ("sourceregistry", "targetregistry"):
        found[f"admin password of {registry}"] = standin.registry_admin(registry)[1]
    return found


# a bearer token of any kind (Entra, ACR refresh or access token) is a JWT: header.payload.signature
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")


def _forms(secret: str) -> set[str]:
    """The secret as it may be written: raw, URL-decoded, URL-encoded, and (keys) its decoded bytes in hex."""
    forms = {secret, urllib.parse.unquote(secret), urllib.parse.quote(secret, safe="")}
    with contextlib.suppress(ValueError):
        forms.add(base64.b64decode(urllib.parse.unquote(secret), validate=True).hex())
    return {f for f in forms if len(f) >= 16}


def _task_states() -> list[str]:
    from prefect.client.orchestration import get_client

    messages, offset = [], 0
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_task_runs(limit=200, offset=offset)
            messages += [r.state.message or "" for r in page if r.state]
            if len(page) < 200:
                return messages
            offset += 200


def _ran_flows() -> bool:
    """Whether this session ran any flow test (``make test`` runs shards; one holds only the stand-in's own tests,
    the local stack's, which use their own Prefect server, and the unit tests)."""
    return os.environ.get("ACR_TRANSFER_SHARD_RUNS_FLOWS", "1") == "1"


def test_no_secret_is_left_anywhere(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> None:
    secrets = _secrets(standin)
    assert sum(k.startswith("sig of") for k in secrets) >= 5  # the topology's five SAS secrets at least
    records = prefect_records()
    if _ran_flows():  # a session that ran flows left something to search on the Prefect server
        assert len(records["logs"]) > 10 and records["artifacts"] and records["events"]
    haystacks = {
        "Prefect logs, parameters, flow states, artifacts and events": json.dumps(records, default=str),
        "Prefect task-run state messages": "\n".join(_task_states()),
        "captured test output": Path(CAPTURED).read_text(encoding="utf-8", errors="replace"),
    }
    base = tmp_path_factory.getbasetemp()
    for log in base.glob("captured*/*.log"):  # the killed transfer processes' output
        haystacks[f"output of {log.name}"] = log.read_text(encoding="utf-8", errors="replace")
    assert len(haystacks["captured test output"]) > 1000
    leaks = [
        f"{name} in {where}"
        for name, secret in secrets.items()
        for where, text in haystacks.items()
        if any(form in text for form in _forms(secret))
    ]
    leaks += [f"a bearer token (JWT) in {where}" for where, text in haystacks.items() if JWT.search(text)]
    assert leaks == []  # names only: never print the secret itself
