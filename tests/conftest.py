"""Shared fixtures: one stand-in per test session (its env applied to this process) and, for flow tests,
a real Prefect server (``prefect_test_harness``) with an isolated PREFECT_HOME."""

from __future__ import annotations

import os
import tempfile

# Prefect reads its home at import: isolate it before anything imports prefect
_PREFECT_HOME = tempfile.mkdtemp(prefix="prefect-test-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_PROFILES_PATH"] = os.path.join(_PREFECT_HOME, "profiles.toml")
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_API_KEY", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
# as the CLI and prefect.yaml set it: the crash automation (acr-transfer setup) expects a heartbeat every 30 s
os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
# fast retries and polls in tests; the production defaults are in acr_transfer/settings.py
os.environ.setdefault("ACR_TRANSFER_RETRY_BASE_SECONDS", "0.2")
os.environ.setdefault("ACR_TRANSFER_POLL_MIN_SECONDS", "0.2")
os.environ.setdefault("ACR_TRANSFER_POLL_MAX_SECONDS", "1.0")
os.environ.setdefault("ACR_TRANSFER_TRIGGER_WAIT_MINUTES", "1")

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from tests.support.standin import StandIn, start_standin  # noqa: E402

# every test's captured stdout, stderr, log and failure text, for the secret-hygiene test that runs last
CAPTURED = os.path.join(_PREFECT_HOME, "captured-output.txt")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    with open(CAPTURED, "a", encoding="utf-8", errors="replace") as out:
        for _, content in report.sections:
            out.write(content)
        if report.longrepr is not None:
            out.write(report.longreprtext)


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    """A running stand-in with fast runs; the SDKs in this process are pointed at it."""
    state_dir = tmp_path_factory.mktemp("standin")
    stand_in = start_standin(state_dir, "--run-seconds", "0.3", "--trigger-interval", "0.5")
    saved = dict(os.environ)
    os.environ.update(stand_in.env)
    _reset_product_caches()
    try:
        yield stand_in
    finally:
        os.environ.clear()
        os.environ.update(saved)
        _reset_product_caches()
        stand_in.stop()


def _reset_product_caches() -> None:
    """Settings, credential and adapters are per process; rebuild them for the current environment."""
    from acr_transfer import settings
    from tasks import clients

    settings.get_settings.cache_clear()
    settings.get_credential.cache_clear()
    clients.install(None)  # the next task builds the process's clients from the settings now in force


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A real Prefect server (SQLite, in a subprocess) for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
