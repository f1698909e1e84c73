"""The ``acr-transfer`` command as a user types it."""

from __future__ import annotations

import json
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
# what Prefect's console handler prints; none of it may reach the terminal outside --verbose
LOG_MARKERS = ("| INFO", "| WARNING", "Created task run", "Finished in state", "Traceback")
BROKEN_ROUTE = (
    "version: 1\nroutes:\n  - name: broken\n"
    "    source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: nosuchexport}\n"
    "    target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: directimport}\n"
    "    artifacts: [cli/app:v1]\n"
)


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
    assert proc.stdout.count("✓ export pipeline 'exportpipeline'") == 1
    assert proc.stdout.count("✓ bridge SAS secret") == 1
    assert proc.stdout.count("✗ artifact 'cli/absent:v1': not found in source registry sourceregistry") == 1
    no_log_lines(proc)
    assert "cli/checked" not in proc.stdout  # a present artifact is counted, not listed


def no_log_lines(proc: subprocess.CompletedProcess[str]) -> None:
    seen = proc.stdout + proc.stderr
    assert not [m for m in LOG_MARKERS if m in seen], seen


def test_preflight_failure_exits_2_naming_the_fix(standin: StandIn, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(BROKEN_ROUTE)
    proc = cli(standin, "preflight", "--route", "broken", "--routes", str(routes))
    assert proc.returncode == 2
    assert proc.stdout.count("✗ export pipeline 'nosuchexport'") == 1 and "fix:" in proc.stdout
    assert "1 of 2 checks passed; nothing was created" in proc.stdout
    assert "--transfer-id" not in proc.stdout
    no_log_lines(proc)


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_run_with_a_failing_preflight_exits_2_without_traceback_table_or_resume_hint(
    standin: StandIn, tmp_path: Path, dry_run: bool
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(BROKEN_ROUTE)
    standin.clear_requests()
    proc = cli(standin, "run", "--route", "broken", "--routes", str(routes), *(["--dry-run"] if dry_run else []))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.count("✗ export pipeline 'nosuchexport' on sourceregistry") == 1, proc.stdout
    assert "nothing was created" in proc.stdout
    assert "--transfer-id" not in proc.stdout and "┏" not in proc.stdout  # no resume hint, no table
    no_log_lines(proc)
    assert arm_puts(standin) == []


def test_bad_input_exits_2_with_one_line(standin: StandIn) -> None:
    proc = cli(standin, "run", "--route", "direct", "--routes", "routes.example.yaml", "--transfer-id", "no!")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.startswith("✗ invalid request for route 'direct'") and "--transfer-id to" not in proc.stdout
    no_log_lines(proc)


def test_json_output_is_one_document_for_scripts(standin: StandIn, tmp_path: Path) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    image = push_file_artifact(src, "cli/json", "v1", b"cli json payload")
    proc = cli(standin, "run", "--route", "direct", "--routes", "routes.example.yaml", "--artifact", image.by_tag,
               "--output", "json", "--transfer-id", "clijson0001")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] and doc["exit_code"] == 0 and doc["transfer_id"] == "clijson0001"
    assert [(r["artifact"], r["status"], r["digest"]) for r in doc["result"]["rows"]] == [
        (image.by_tag, "verified", image.digest)
    ]
    assert "\x1b[" not in proc.stdout and Path(doc["log"]).is_file()
    no_log_lines(proc)

    routes = tmp_path / "routes.yaml"
    routes.write_text(BROKEN_ROUTE)
    for args in (["preflight"], ["run"], ["run", "--dry-run"]):
        proc = cli(standin, *args, "--route", "broken", "--routes", str(routes), "--output", "json")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["exit_code"] == 2 and not doc["ok"]
        failed = [c["name"] for c in doc.get("checks", []) if not c["ok"]] or doc["preflight_failures"]
        assert any("nosuchexport" in f for f in failed), doc
    proc = cli(standin, "preflight", "--route", "nosuchroute", "--routes", str(routes), "--output", "json")
    assert proc.returncode == 2 and "nosuchroute" in json.loads(proc.stdout)["error"]


def test_dry_run_prints_the_plan_and_creates_nothing(standin: StandIn) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    image = push_file_artifact(src, "cli/app", "v1", b"cli payload")
    standin.clear_requests()
    proc = cli(standin, "run", "--route", "direct", "--routes", "routes.example.yaml", "--artifact", image.by_tag,
               "--dry-run", "--transfer-id", "clidryrun01")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "export run xclidryrun01b001a1" in proc.stdout and "import run iclidryrun01b001a1" in proc.stdout
    assert "blob direct/clidryrun01/batch001.tar" in proc.stdout
    assert proc.stdout.count("✓ export pipeline 'exportpipeline'") == 1
    no_log_lines(proc)
    assert arm_puts(standin) == []


def test_run_exits_0_with_the_final_table(standin: StandIn) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    image = push_file_artifact(src, "cli/table", "v1", b"cli table payload")
    proc = cli(standin, "run", "--route", "direct", "--routes", "routes.example.yaml", "--artifact", image.by_tag)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cli/table:v1" in proc.stdout and "verified" in proc.stdout
    assert "every artifact verified in the target" in proc.stdout
    assert image.digest[:19] in proc.stdout and image.digest not in proc.stdout  # short digests
    no_log_lines(proc)
    log = Path(proc.stdout.split("log: ", 1)[1].split()[0])
    assert "Finished in state Completed()" in log.read_text()


def test_verbose_prints_prefect_log_lines_and_the_final_table(standin: StandIn) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    image = push_file_artifact(src, "cli/verbose", "v1", b"cli verbose payload")
    proc = cli(standin, "run", "--route", "direct", "--routes", "routes.example.yaml", "--artifact", image.by_tag,
               "--verbose", "--show-runs")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Finished in state Completed()" in proc.stderr and "log: " not in proc.stdout
    assert "export run" in proc.stdout and "cli/verbose:v1" in proc.stdout


def test_a_failed_transfer_exits_1_with_its_table_and_how_to_continue(standin: StandIn) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    image = push_file_artifact(src, "cli/fails", "v1", b"cli failing payload")
    standin.set_outcome("xclifail0001b001a1", fail="Failed to access storage: 403 (AuthorizationFailure)")
    proc = cli(standin, "run", "--route", "direct", "--routes", "routes.example.yaml", "--artifact", image.by_tag,
               "--transfer-id", "clifail0001")  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cli/fails:v1" in proc.stdout and "not verified" in proc.stdout  # the table the flow published
    assert "AuthorizationFailure" in proc.stdout
    assert proc.stdout.count("re-run with the same --transfer-id to continue") == 1
    assert "acr-transfer run --route direct --transfer-id clifail0001" in proc.stdout
    no_log_lines(proc)
