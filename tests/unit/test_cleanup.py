"""The run-record policy, as pure logic over run states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from acr_transfer.azure.registry import RunState
from acr_transfer.cleanup import abandoned_transfers, plan_cleanup, route_blob_pattern

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def run(name: str, state: str, days_ago: float) -> RunState:
    when = (NOW - timedelta(days=days_ago)).isoformat()
    status = {"Succeeded": "Succeeded", "Failed": "Failed", "Creating": "Running"}[state]
    return RunState.from_json(
        {"name": name, "properties": {"provisioningState": state, "response": {"status": status, "finishTime": when}}}
    )


def test_finished_old_transfers_go_with_their_failed_attempts() -> None:
    runs = [run("xabcdef123456b001a1", "Failed", 40), run("xabcdef123456b001a2", "Succeeded", 40)]
    assert {d.run for d in plan_cleanup(runs, 30, NOW)} == {"xabcdef123456b001a1", "xabcdef123456b001a2"}


def test_a_failed_or_unfinished_transfer_is_kept_whole() -> None:
    failed = [run("xfff000111222b001a1", "Succeeded", 90), run("xfff000111222b002a1", "Failed", 90)]
    running = [run("xeee000111222b001a1", "Creating", 90)]
    assert plan_cleanup(failed + running, 30, NOW) == []


def test_recent_transfers_stay() -> None:
    assert plan_cleanup([run("xabcdef123456b001a1", "Succeeded", 3)], 30, NOW) == []


def test_foreign_runs_go_only_when_succeeded_and_old() -> None:
    runs = [run("manualrun1", "Succeeded", 45), run("manualrun2", "Failed", 45), run("triggered_abc", "Succeeded", 2)]
    assert [d.run for d in plan_cleanup(runs, 30, NOW)] == ["manualrun1"]


TEMPLATE = "{route}/{transfer_id}/batch{batch}.tar"


def blob_run(name: str, state: str, days_ago: float, blob: str) -> RunState:
    when = (NOW - timedelta(days=days_ago)).isoformat()
    status = {"Succeeded": "Succeeded", "Failed": "Failed", "Creating": "Running"}[state]
    side = "target" if name.startswith("x") else "source"
    return RunState.from_json(
        {
            "name": name,
            "properties": {
                "provisioningState": state,
                "request": {side: {"type": "AzureStorageBlob", "name": blob}},
                "response": {"status": status, "finishTime": when},
            },
        }
    )


def abandoned(exports: list[RunState], imports: list[RunState], keep: set[str] = frozenset(), **kw: object):
    args = {"route": "nightly", "template": TEMPLATE, "keep": set(keep), "has_target": True} | kw
    return abandoned_transfers(exports, imports, **args)  # type: ignore[arg-type]


def test_a_transfer_exported_and_never_imported_is_abandoned_with_its_blobs() -> None:
    exports = [
        blob_run("xaaa111222333b001a1", "Succeeded", 9, "nightly/aaa111222333/batch001.tar"),
        blob_run("xaaa111222333b002a1", "Failed", 9, "nightly/aaa111222333/batch002.tar"),
        blob_run("xaaa111222333b002a2", "Succeeded", 8, "nightly/aaa111222333/batch002-a2.tar"),
        blob_run("xbbb111222333b001a1", "Succeeded", 1, "nightly/bbb111222333/batch001.tar"),  # finished
    ]
    imports = [
        blob_run("iaaa111222333b001a1", "Succeeded", 9, "nightly/aaa111222333/batch001.tar"),
        blob_run("ibbb111222333b001a1", "Succeeded", 1, "nightly/bbb111222333/batch001.tar"),
    ]
    [found] = abandoned(exports, imports)
    assert found.transfer_id == "aaa111222333"
    assert found.why == "batch(es) 2 exported, never imported"
    assert found.blobs == (
        "nightly/aaa111222333/batch001.tar",
        "nightly/aaa111222333/batch002-a2.tar",
        "nightly/aaa111222333/batch002.tar",
    )
    assert found.last_activity == NOW - timedelta(days=8)
    assert found.due(7, NOW) and not found.due(10, NOW) and not found.due(None, NOW)


def test_a_failed_export_is_abandoned_and_a_continued_transfer_is_not() -> None:
    exports = [
        blob_run("xccc111222333b001a1", "Failed", 2, "nightly/ccc111222333/batch001.tar"),
        blob_run("xddd111222333b001a1", "Creating", 0, "nightly/ddd111222333/batch001.tar"),
    ]
    found = abandoned(exports, [], keep={"ddd111222333"})
    assert [(a.transfer_id, a.why) for a in found] == [("ccc111222333", "export of batch(es) 1 never succeeded")]


def test_other_routes_blobs_and_foreign_runs_are_not_this_routes() -> None:
    exports = [
        blob_run("xeee111222333b001a1", "Failed", 2, "nightly-eu/eee111222333/batch001.tar"),  # another route
        blob_run("manualexport1", "Failed", 2, "nightly/manual.tar"),  # not ours
        blob_run("xfff111222333b001a1", "Failed", 2, "nightly/000000000000/batch001.tar"),  # another id's name
    ]
    assert abandoned(exports, []) == []


def test_an_export_only_routes_finished_exports_are_its_delivery() -> None:
    exports = [blob_run("xggg111222333b001a1", "Succeeded", 30, "nightly/ggg111222333/batch001.tar")]
    assert abandoned(exports, [], has_target=False) == []
    assert [a.transfer_id for a in abandoned(exports, [], has_target=True)] == ["ggg111222333"]


def test_blobs_are_attributed_only_by_a_template_that_names_the_route_first() -> None:
    assert route_blob_pattern("{date}/{route}/{batch}.tar", "nightly") is None
    pattern = route_blob_pattern(TEMPLATE, "nightly")
    assert pattern is not None
    match = pattern.match("nightly/abc123def456/batch001-a3.tar")
    assert match is not None and match.group("tid") == "abc123def456"
    assert pattern.match("nightly2/abc123def456/batch001.tar") is None
