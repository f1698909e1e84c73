"""The run-record policy, as pure logic over run states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from acr_transfer.azure.registry import RunState
from acr_transfer.cleanup import plan_cleanup

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
