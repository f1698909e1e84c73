"""Our progress calls to Prefect are tried once, and saying so costs no settings rebuild per call."""

from __future__ import annotations

from pathlib import Path

from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, get_current_settings, temporary_settings

from tasks.bookkeeping import quick


def test_calls_inside_quick_have_no_client_retries_and_outside_keep_them() -> None:
    before = PREFECT_CLIENT_MAX_RETRIES.value()
    assert before > 0
    with quick():
        assert PREFECT_CLIENT_MAX_RETRIES.value() == 0
    assert PREFECT_CLIENT_MAX_RETRIES.value() == before


def test_the_copy_without_retries_is_made_once_per_settings() -> None:
    with quick():
        first = get_current_settings()
    with quick():
        second = get_current_settings()
    assert first is second  # kept, not rebuilt (a rebuild re-reads profiles.toml and pyproject.toml)


def test_quick_follows_settings_changed_around_it(tmp_path: Path) -> None:
    with temporary_settings({"home": tmp_path}):
        with quick():
            inner = get_current_settings()
        assert inner.home == tmp_path
        assert inner.client.max_retries == 0
    with quick():
        assert get_current_settings().home != tmp_path
