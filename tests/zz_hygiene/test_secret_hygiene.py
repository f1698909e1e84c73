"""Runs after every other flow test (the file name sorts last): nothing the Prefect server stored — logs,
flow-run parameters, state messages (exceptions), artifacts, events — holds a SAS signature."""

from __future__ import annotations

import json

import pytest

from tests.support import azure
from tests.support.standin import StandIn
from tests.support.transfer import prefect_records

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def test_no_sas_signature_is_stored_by_prefect(standin: StandIn) -> None:
    """Every SAS the transfers used, searched for in everything the server stored so far."""
    signatures = []
    for vault in ("sourcevault", "targetvault"):
        kv = azure.secrets(standin, vault)
        for props in kv.list_properties_of_secrets():
            if not props.enabled:
                continue
            value = kv.get_secret(props.name).value or ""
            if "sig=" in value:
                signatures.append(value.split("sig=")[1].split("&")[0])
    assert len(signatures) >= 5  # the topology's five SAS secrets at least
    records = prefect_records()
    assert len(records["logs"]) > 10 and records["artifacts"] and records["events"]  # there is something to search
    dump = json.dumps(records, default=str)
    for sig in signatures:
        assert sig not in dump
        assert sig.replace("%2F", "/").replace("%2B", "+").replace("%3D", "=") not in dump
