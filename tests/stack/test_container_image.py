"""The flow-run image (Dockerfile, built by `make image`) carries everything a Kubernetes or ACI pod needs: its
CLI starts, and a transfer run inside it — against the stand-in and a real Prefect server on this machine, the
way a pod reaches Azure and its Prefect API — is verified and recorded as a completed flow run.

Building the image takes minutes, so this test never builds it: it uses the image `make image` left in podman's
storage (ACR_TRANSFER_TEST_IMAGE, default localhost/acr-transfer:latest) and is skipped, saying why, when podman
or that image is missing, or when the image was built from other sources than this tree (its
``io.acr-transfer.sources`` label, ``deploy/image-sources.sh``)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.demo import push_demo_images
from tests.support.standin import StandIn, start_standin

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("ACR_TRANSFER_TEST_IMAGE", "localhost/acr-transfer:latest")
PODMAN_RUN = ROOT / "deploy" / "podman-run.sh"  # podman run with the runtime and ulimits this machine needs
# what the test process runs with (tests/conftest.py): fast polls and retries, the heartbeat prefect.yaml sets
PASSED_THROUGH = (
    "ACR_TRANSFER_RETRY_BASE_SECONDS",
    "ACR_TRANSFER_POLL_MIN_SECONDS",
    "ACR_TRANSFER_POLL_MAX_SECONDS",
    "ACR_TRANSFER_TRIGGER_WAIT_MINUTES",
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY",
)


def _image_or_skip() -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: `make image` installs it (Debian) and builds the image")
    if subprocess.run(["podman", "image", "exists", IMAGE], capture_output=True).returncode != 0:
        pytest.skip(f"image {IMAGE} was not built: run `make image` first (a few minutes; not part of make test)")
    label = '{{ index .Labels "io.acr-transfer.sources" }}'
    inspect = ["podman", "image", "inspect", "--format", label, IMAGE]
    built_from = subprocess.run(inspect, capture_output=True, text=True)
    here = subprocess.run(["bash", str(ROOT / "deploy" / "image-sources.sh")], capture_output=True, text=True)
    if built_from.stdout.strip() != here.stdout.strip():
        pytest.skip(f"image {IMAGE} was built from other sources than this tree: run `make image` again")


@pytest.fixture(scope="module")
def image_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    """A stand-in of this module's own with the demo images in sourceregistry (the session's stays untouched)."""
    _image_or_skip()
    stand_in = start_standin(tmp_path_factory.mktemp("image-standin"), "--run-seconds", "0.3")
    try:
        push_demo_images(stand_in.env)
        yield stand_in
    finally:
        stand_in.stop()


def podman_run(*args: str, env: dict[str, str] | None = None, mounts: tuple[str, ...] = (), tmp: Path | None = None,
               timeout: float = 240) -> subprocess.CompletedProcess[str]:  # fmt: skip
    options: list[str] = []
    if env:
        assert tmp is not None
        env_file = tmp / "container.env"  # not on the command line: it holds the stand-in's identity header
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        options += ["--env-file", str(env_file)]
    for mount in mounts:
        options += ["--volume", f"{mount}:{mount}:ro"]
    return subprocess.run(
        ["bash", str(PODMAN_RUN), *options, IMAGE, *args], capture_output=True, text=True, timeout=timeout
    )


def test_image_runs_the_cli() -> None:
    _image_or_skip()
    proc = podman_run("acr-transfer", "--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Drive Azure Container Registry transfers." in proc.stdout
    for command in ("run", "preflight", "cleanup", "events", "setup"):
        assert command in proc.stdout


def test_image_carries_no_dev_dependencies_and_runs_unprivileged() -> None:
    _image_or_skip()
    probe = (
        "import importlib.util as u, os, json; "
        "print(json.dumps({'uid': os.getuid(), 'cwd': os.getcwd(), "
        "'missing': [m for m in ('pytest', 'mypy', 'ruff', 'hypothesis', 'trustme') if u.find_spec(m) is None], "
        "'present': [m for m in ('prefect', 'azure.mgmt.containerregistry', 'flows.routes') if u.find_spec(m)]}))"
    )
    proc = podman_run("python", "-c", probe, timeout=60)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["uid"] != 0 and facts["cwd"] == "/opt/acr-transfer", facts
    assert facts["missing"] == ["pytest", "mypy", "ruff", "hypothesis", "trustme"], facts
    assert facts["present"] == ["prefect", "azure.mgmt.containerregistry", "flows.routes"], facts


def test_a_transfer_runs_in_the_image_against_the_stand_in(
    image_standin: StandIn, prefect_server: None, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in image_standin.env.items() if not k.startswith("ACR_TRANSFER_EMULATOR_")}
    env |= {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
    env |= {
        "TARGET_VAULT_URL": image_standin.topology["vaults"]["targetvault"]["url"],
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),  # the test server, on 127.0.0.1 (host network)
        "COLUMNS": "200",
    }
    proc = podman_run(
        "acr-transfer", "run", "--route", "demo", "--routes", "routes.example.yaml", "--output", "json",
        env=env, mounts=(image_standin.ca,), tmp=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    result, transfer_id = doc["result"], doc["transfer_id"]
    assert doc["ok"] is True and result["succeeded"] is True, doc
    assert result["verified"] == len(result["rows"]) == 3, result
    assert {row["artifact"] for row in result["rows"]} == {"demo/hello:v1", "demo/world:v1", "demo/multiarch:1.0"}

    # the run the container made is the Prefect server's, completed
    runs = asyncio.run(_flow_runs_named_after(transfer_id))
    assert runs and all(state == "COMPLETED" for _, state in runs), runs
    # and its import really landed in the stand-in's target registry
    imports = [r for r in image_standin.runs() if r["name"].startswith(f"i{transfer_id}")]
    assert imports and all(r["provisioningState"] == "Succeeded" for r in imports), imports


async def _flow_runs_named_after(transfer_id: str) -> list[tuple[str, Any]]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        runs = await client.read_flow_runs()
    return [(r.name, r.state_type.value if r.state_type else None) for r in runs if transfer_id in r.name]
