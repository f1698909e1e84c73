"""The ``acr-transfer`` command as a user types it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.images import push_file_artifact
from tests.support.standin import StandIn
from tests.support.transfer import arm_puts

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
ROOT = Path(__file__).resolve().parents[2]


def cli(standin: StandIn, *args: str) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "COLUMNS": "200",
           "TARGET_VAULT_URL": standin.topology["vaults"]["targetvault"]["url"]}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "deployments", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=180)  # fmt: skip


def test_preflight_prints_every_check(standin: StandIn) -> None:
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    push_file_artifact(login, "cli/checked", "v1", b"checked by preflight")
    proc = cli(
        standin, "preflight", "--route", "demo", "--routes", "routes.example.yaml",
        "--artifact", "cli/checked:v1", "--artifact", "cli/absent:v1",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "✓ export pipeline 'exportpipeline'" in proc.stdout
    assert "✓ bridge SAS secret" in proc.stdout
    assert "✗ artifact 'cli/absent:v1': not found in source registry sourceregistry" in proc.stdout
    assert "cli/checked" not in proc.stdout  # a present artifact is counted, not listed


def test_preflight_failure_exits_2_naming_the_fix(standin: StandIn, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\nroutes:\n  - name: broken\n"
        "    source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: nosuchexport}\n"
        "    target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: directimport}\n"
        "    artifacts: [cli/app:v1]\n"
    )
    proc = cli(standin, "preflight", "--route", "broken", "--routes", str(routes))
    assert proc.returncode == 2
    assert "✗ export pipeline 'nosuchexport'" in proc.stdout and "fix:" in proc.stdout


def test_dry_run_prints_the_plan_and_creates_nothing(standin: StandIn) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    image = push_file_artifact(src, "cli/app", "v1", b"cli payload")
    standin.clear_requests()
    proc = cli(standin, "run", "--route", "direct", "--routes", "routes.example.yaml", "--artifact", image.by_tag,
               "--dry-run", "--transfer-id", "clidryrun01")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "export run xclidryrun01b001a1" in proc.stdout and "import run iclidryrun01b001a1" in proc.stdout
    assert "blob direct/clidryrun01/batch001.tar" in proc.stdout
    assert arm_puts(standin) == []


def test_run_exits_0_with_the_final_table(standin: StandIn) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    image = push_file_artifact(src, "cli/table", "v1", b"cli table payload")
    proc = cli(standin, "run", "--route", "direct", "--routes", "routes.example.yaml", "--artifact", image.by_tag)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cli/table:v1" in proc.stdout and "verified" in proc.stdout
    assert "every artifact verified in the target" in proc.stdout
