"""The unmodified Azure CLI from PyPI against the stand-in, with only the stand-in's env: endpoint discovery,
``az login --identity``, ``az account show`` and ``az acr show`` with and without ``-g``.

azure-cli is not a project dependency: it is installed once into ``build/azcli-venv/<version>`` (``uv venv`` +
``uv pip install``, else ``python -m venv`` + pip) and reused by later runs. The test is skipped, with the
installer's own words, only when that install cannot be done.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.standin import ROOT, StandIn

pytestmark = pytest.mark.integration
AZ_CLI_VERSION = "2.91.0"
VENVS = ROOT / "build" / "azcli-venv"
CLOUD = "AcrTransferStandIn"


def _uv() -> str | None:
    local = ROOT / ".tools" / "bin" / "uv"
    return str(local) if local.exists() else shutil.which("uv")


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)


def _install(venv: Path) -> None:
    """Install azure-cli into ``venv``; raises CalledProcessError with the installer's output."""
    if venv.exists():
        shutil.rmtree(venv)
    package = f"azure-cli=={AZ_CLI_VERSION}"
    uv = _uv()
    if uv:
        _run(uv, "venv", "--quiet", "--python", sys.executable, str(venv))
        _run(uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), package)
    else:
        _run(sys.executable, "-m", "venv", str(venv))
        _run(str(venv / "bin" / "pip"), "install", "--quiet", package)
    (venv / ".installed").write_text(AZ_CLI_VERSION)


@pytest.fixture(scope="module")
def az_bin(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The ``az`` of a cached venv for AZ_CLI_VERSION (installed under a lock, so parallel sessions share it)."""
    venv = VENVS / AZ_CLI_VERSION
    VENVS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(VENVS / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = (venv / ".installed").exists()
        if not cached:
            try:
                _install(venv)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
                out = getattr(e, "stderr", None) or getattr(e, "output", None) or str(e)
                pytest.skip(f"azure-cli {AZ_CLI_VERSION} could not be installed into {venv}: {str(out)[-600:]}")
    seconds = time.monotonic() - started
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    line = f"azure-cli {AZ_CLI_VERSION}: {'cached in' if cached else 'installed into'} {venv} ({seconds:.1f} s)"
    if reporter is not None:
        reporter.write_line(line)
    yield venv / "bin" / "az"


class Az:
    """Runs ``az`` with the stand-in's env only (no developer config, no telemetry) and its own config dir."""

    def __init__(self, binary: Path, standin: StandIn, config_dir: Path) -> None:
        self.binary = binary
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(config_dir.parent),
            **standin.env,
            "AZURE_CONFIG_DIR": str(config_dir),
            "AZURE_CORE_COLLECT_TELEMETRY": "no",
            "AZURE_CORE_SURVEY_MESSAGE": "no",
            "AZURE_CORE_NO_COLOR": "yes",
            "AZURE_CORE_ONLY_SHOW_ERRORS": "yes",
        }

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.binary), *args], env=self.env, capture_output=True, text=True, timeout=120)
        if ok:
            assert proc.returncode == 0, f"az {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)


def test_az_cli_discovers_the_cloud_logs_in_and_shows_the_registry(
    az_bin: Path, standin: StandIn, tmp_path: Path
) -> None:
    config = tmp_path / "azure"
    az = Az(az_bin, standin, config)
    try:
        _discover_login_show(az, standin)
    finally:
        shutil.rmtree(config, ignore_errors=True)  # az's token cache: leave no bearer token behind


def _discover_login_show(az: Az, standin: StandIn) -> None:
    arm = standin.env["ACR_TRANSFER_ARM_ENDPOINT"]
    sub, tenant = standin.env["AZURE_SUBSCRIPTION_ID"], standin.topology["tenant_id"]

    az("cloud", "register", "-n", CLOUD, "--endpoint-resource-manager", arm)
    cloud = az.json("cloud", "show", "-n", CLOUD)
    assert cloud["endpoints"]["resourceManager"].rstrip("/") == arm
    assert cloud["endpoints"]["activeDirectoryResourceId"] == "https://management.core.windows.net/"
    az("cloud", "set", "-n", CLOUD)

    accounts = az.json("login", "--identity")
    assert [a["id"] for a in accounts] == [sub]
    assert accounts[0]["user"]["type"] == "servicePrincipal"
    account = az.json("account", "show")
    assert (account["id"], account["tenantId"], account["environmentName"]) == (sub, tenant, CLOUD)

    registry = standin.topology["registries"]["sourceregistry"]
    resources = f"/subscriptions/{sub}/resources"
    listed_before = [r["path"] for r in standin.requests("arm")].count(resources)
    with_group = az.json("acr", "show", "-n", "sourceregistry", "-g", standin.env["AZURE_RESOURCE_GROUP"])
    assert with_group["id"] == registry["id"] and with_group["loginServer"] == registry["login_server"]
    assert with_group["policies"]["exportPolicy"]["status"] == "enabled"
    without_group = az.json("acr", "show", "-n", "sourceregistry")
    assert without_group == with_group
    # without -g, az found the resource group through the generic resources list
    assert [r["path"] for r in standin.requests("arm")].count(resources) > listed_before

    missing = az("acr", "show", "-n", "nosuchregistry", ok=False)
    assert missing.returncode != 0 and "could not be found" in missing.stderr
