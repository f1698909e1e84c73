"""What lets a killed or failed ``sync-routes`` continue instead of starting over: a record per route of the
transfer a sync started and has not seen succeed.

The record (Prefect variable ``acr_transfer_unfinished_<route>``) holds the transfer id and a digest of the
artifact list it was planned from. The next sync of the route continues that transfer id, so run and blob names
are the same: a Succeeded export is imported, never exported again, and no blob is orphaned. A record whose
artifact list no longer matches the route (the route was edited) is not resumed; nor is one older than
``MAX_AGE``, whose transfer is better started anew.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from acr_transfer.models import TransferRoute
from tasks.concurrency import PrefectApi

log = logging.getLogger("acr_transfer.resume")
MAX_AGE = timedelta(days=7)


def record_variable(route: str) -> str:
    return "acr_transfer_unfinished_" + route.replace("-", "_")


def planned_from(rt: TransferRoute) -> list[str]:
    """What a route's transfer is planned from: its artifacts and its selection rules (an edited route's
    unfinished transfer is not resumed; a sync's frozen plan keeps its list even when tags move)."""
    rules = [f"select:{rt.select.model_dump_json()}", f"skip:{rt.effective_skip}"] if rt.select else []
    return [*rt.artifacts, *rules]


def artifacts_digest(artifacts: list[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(artifacts)).encode()).hexdigest()[:16]


def unfinished(route: str, artifacts: list[str], api: PrefectApi, now: datetime | None = None) -> str | None:
    """The transfer id a sync started for this route and artifact list and has not seen succeed, if any."""
    try:
        variable = api().read_variable_by_name(record_variable(route))
    except Exception as e:  # bookkeeping: without the record, the sync starts a new transfer
        log.warning("could not read the unfinished transfer of route %s: %s", route, type(e).__name__)
        return None
    value: Any = getattr(variable, "value", None)
    if not isinstance(value, dict) or value.get("artifacts") != artifacts_digest(artifacts):
        return None
    try:
        started = datetime.fromisoformat(str(value["started"]))
    except (KeyError, ValueError):
        return None
    if (now or datetime.now(UTC)) - started > MAX_AGE:
        return None
    return str(value.get("transfer_id") or "") or None


def remember(route: str, transfer_id: str, artifacts: list[str], api: PrefectApi) -> None:
    """Record that a sync started ``transfer_id`` for this route (kept until :func:`forget`)."""
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    value = {
        "transfer_id": transfer_id,
        "artifacts": artifacts_digest(artifacts),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    name = record_variable(route)
    try:
        if api().read_variable_by_name(name) is None:
            api().create_variable(VariableCreate(name=name, value=value))
        else:
            api().update_variable(VariableUpdate(name=name, value=value))
    except Exception as e:  # bookkeeping: a sync killed now would start over, nothing worse
        log.warning("could not record the transfer of route %s: %s", route, type(e).__name__)


def forget(route: str, api: PrefectApi) -> None:
    """The route's transfer succeeded: the next sync starts a new one."""
    try:
        api().delete_variable_by_name(record_variable(route))
    except Exception as e:
        log.warning("could not clear the finished transfer of route %s: %s", route, type(e).__name__)
