"""Every trigger's parameters in prefect.yaml render, as Prefect's automation renders them, into values the flow
takes: a template Prefect cannot render makes the automation fail ("InvalidJinja") and no flow run is created,
which no deploy step reports."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.server.events.actions import RunDeployment
from prefect.server.events.schemas.events import ReceivedEvent
from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

from flows.routes import _when

ROOT = Path(__file__).resolve().parents[2]
EVENT_PAYLOADS = {
    "acr.transfer.image.pushed": {"repository": "demo/hello", "tag": "v1", "digest": "sha256:" + "a" * 64},
    "acr.transfer.blob.created": {"blob": "airgap-out/abc123def456/batch001.tar", "account": "targetstorage"},
}


def triggers() -> list[tuple[str, dict[str, Any]]]:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return [(d["name"], t) for d in doc["deployments"] for t in d.get("triggers") or []]


@pytest.mark.parametrize(("deployment", "trigger"), triggers(), ids=[name for name, _ in triggers()])
def test_trigger_parameters_render_for_their_event(deployment: str, trigger: dict[str, Any]) -> None:
    event = ReceivedEvent(
        occurred=datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC),
        event=trigger["expect"][0],
        resource={"prefect.resource.id": trigger["match"]["prefect.resource.id"]},
        payload=EVENT_PAYLOADS[trigger["expect"][0]],
        id=uuid.uuid4(),
    )
    parameters = dict(trigger.get("parameters") or {})
    RunDeployment._upgrade_v1_templates(parameters)  # what the automation does before rendering
    rendered = hydrate(
        parameters, HydrationContext(raise_on_error=True, render_jinja=True, jinja_context={"event": event})
    )
    assert isinstance(rendered, dict), rendered
    for key, value in rendered.items():
        assert "{{" not in str(value), (deployment, key, value)
    if "pushed_since" in rendered:
        assert _when(rendered["pushed_since"]) == event.occurred
        assert rendered["window_seconds"] == trigger["within"]
    if "blob" in rendered:
        assert rendered["blob"] == EVENT_PAYLOADS["acr.transfer.blob.created"]["blob"]
