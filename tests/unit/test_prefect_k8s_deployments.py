"""deploy/prefect.kubernetes.yaml runs where no checkout exists (a Kubernetes or ACI pod): its pull step names the
image's working directory, never the deploying machine's, its pods run the image named at deploy time, and its
deployments stay those of prefect.yaml. The base job template it relies on mounts the routes where they say."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prefect import Flow
from prefect.utilities.templating import apply_values

ROOT = Path(__file__).resolve().parents[2]
K8S_FILE = ROOT / "deploy" / "prefect.kubernetes.yaml"
BASE_JOB_TEMPLATE = ROOT / "deploy" / "kubernetes" / "base-job-template.json"
DOCKERFILE = ROOT / "Dockerfile"


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def dockerfile_workdir() -> str:
    """The last WORKDIR of the Dockerfile: the runtime stage's, where the code is."""
    return re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)[-1]


K8S = load(K8S_FILE)
DEPLOYMENTS = K8S["deployments"]
IDS = [d["name"] for d in DEPLOYMENTS]


def pull_steps(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment.get("pull", K8S.get("pull")) or [])


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=IDS)
def test_pull_step_names_the_images_working_directory_not_a_local_path(deployment: dict[str, Any]) -> None:
    steps = pull_steps(deployment)
    # an omitted pull makes `prefect deploy` write set_working_directory(<the deploying machine's cwd>)
    assert steps, "no pull step: prefect deploy would pull from the deploying machine's working directory"
    for step in steps:
        ((name, args),) = step.items()
        assert "{{ $PWD }}" not in json.dumps(args), step
        if name == "prefect.deployments.steps.set_working_directory":
            assert args["directory"] == dockerfile_workdir(), step
        else:
            assert name == "prefect.deployments.steps.git_clone", f"unexpected pull step {name}"
            assert args["repository"].startswith("https://"), step


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=IDS)
def test_pods_run_the_image_named_at_deploy_time(deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    job_variables = deployment["work_pool"]["job_variables"]
    assert job_variables["image"] == "{{ $ACR_TRANSFER_IMAGE }}"
    # prefect deploy resolves {{ $VAR }} from its own environment, as apply_values does here
    image = "myregistry.azurecr.io/acr-transfer:0.1.0"
    monkeypatch.setenv("ACR_TRANSFER_IMAGE", image)
    rendered = apply_values(job_variables, {}, remove_notset=False)
    assert isinstance(rendered, dict) and rendered["image"] == image
    env = job_variables["env"]
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    assert env["ACR_TRANSFER_ROUTES"].startswith("/"), "the routes path must be absolute inside the pod"


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=IDS)
def test_entrypoint_is_a_flow_the_image_carries(deployment: dict[str, Any]) -> None:
    path, _, function = deployment["entrypoint"].partition(":")
    assert (ROOT / path).is_file(), path
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert isinstance(getattr(module, function), Flow), deployment["entrypoint"]
    copied = re.findall(r"^COPY\s+(\S+)/\s", DOCKERFILE.read_text(), re.MULTILINE)
    assert PurePosixPath(path).parts[0] in copied, f"the Dockerfile does not COPY {path}'s folder"


def test_deployments_are_those_of_prefect_yaml_but_for_pull_and_job_variables() -> None:
    local = load(ROOT / "prefect.yaml")
    assert [d["name"] for d in local["deployments"]] == IDS

    def without_work_pool(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in ("work_pool", "pull")}

    for here, there in zip(DEPLOYMENTS, local["deployments"], strict=True):
        assert without_work_pool(here) == without_work_pool(there), here["name"]
        assert here["work_pool"]["name"] == there["work_pool"]["name"]
        # the local file's env (the heartbeat) is kept; the pods add what only they need
        local_env = there["work_pool"]["job_variables"]["env"]
        assert local_env.items() <= here["work_pool"]["job_variables"]["env"].items(), here["name"]


def test_base_job_template_mounts_the_routes_and_uses_workload_identity() -> None:
    template = json.loads(BASE_JOB_TEMPLATE.read_text())
    variables = template["variables"]["properties"]
    values = {name: spec.get("default") for name, spec in variables.items()} | {"image": "acr-transfer:test"}
    configuration = apply_values(template["job_configuration"], values)
    assert isinstance(configuration, dict)
    manifest = configuration["job_manifest"]
    pod = manifest["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["serviceAccountName"] == "acr-transfer"
    (volume,) = pod["spec"]["volumes"]
    assert volume["configMap"]["name"] == "acr-transfer-routes"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "acr-transfer:test"
    (mount,) = container["volumeMounts"]
    assert mount["name"] == volume["name"] and mount["readOnly"] is True
    for deployment in DEPLOYMENTS:
        routes = PurePosixPath(deployment["work_pool"]["job_variables"]["env"]["ACR_TRANSFER_ROUTES"])
        assert str(routes.parent) == mount["mountPath"], deployment["name"]
    user = re.findall(r"^USER\s+(\d+)", DOCKERFILE.read_text(), re.MULTILINE)[-1]
    assert pod["spec"]["securityContext"]["runAsUser"] == int(user)
