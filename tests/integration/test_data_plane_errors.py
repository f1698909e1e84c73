"""The registry data plane against the stand-in: a request the registry rejects (400) is sent once, an unavailable
registry (503) is asked again until it answers. Requests are counted in the stand-in's own request log."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from acr_transfer.azure.acr_data import RegistryDataPlane
from acr_transfer.errors import PermanentError, RequestRejectedError
from acr_transfer.settings import get_credential, get_settings
from tests.support.images import Pushed, push_file_artifact
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def login_server(standin: StandIn) -> str:
    return str(standin.topology["registries"]["sourceregistry"]["login_server"])


@pytest.fixture(scope="module")
def image(login_server: str) -> Pushed:
    repo = f"dataplane/errors-{uuid.uuid4().hex[:8]}"
    return push_file_artifact(login_server, repo, "v1", b"data plane errors payload")


@pytest.fixture
def data_plane(standin: StandIn, login_server: str, image: Pushed) -> Iterator[RegistryDataPlane]:
    plane = RegistryDataPlane(get_settings(), get_credential())
    # the registry asks for a token: get it first, so the reads counted below are the manifest reads alone
    assert plane.manifest_digest(login_server, image.repo, image.tag) == image.digest
    try:
        yield plane
    finally:
        plane.http.close()
        standin.clear_faults()


def manifest_heads(standin: StandIn, image: Pushed) -> list[dict[str, Any]]:
    """The HEADs of this image's manifest the registry saw, as the fault matrix counts them."""
    path = f"/v2/{image.repo}/manifests/{image.tag}"
    return [r for r in standin.requests("registry") if r["method"] == "HEAD" and r["path"] == path]


def fault_on_manifest_head(standin: StandIn, image: Pushed, status: int, count: int) -> None:
    path = f"^/v2/{re.escape(image.repo)}/manifests/{re.escape(image.tag)}$"
    standin.add_fault(service="registry", method="HEAD", path=path, status=status, count=count)


@pytest.mark.integration
def test_a_400_on_a_manifest_read_is_sent_once_and_raised_as_permanent(
    standin: StandIn, login_server: str, image: Pushed, data_plane: RegistryDataPlane
) -> None:
    standin.clear_requests()
    fault_on_manifest_head(standin, image, 400, count=3)

    with pytest.raises(PermanentError) as raised:
        data_plane.manifest_digest(login_server, image.repo, image.tag)

    error = raised.value
    assert isinstance(error, RequestRejectedError) and not error.retryable and error.status == 400
    assert login_server in error.message and f"{image.repo}:{image.tag}" in error.message and "400" in error.message
    heads = manifest_heads(standin, image)
    assert [r["status"] for r in heads] == [400], heads


@pytest.mark.integration
def test_a_503_on_a_manifest_read_is_retried_until_the_registry_answers(
    standin: StandIn, login_server: str, image: Pushed, data_plane: RegistryDataPlane
) -> None:
    standin.clear_requests()
    fault_on_manifest_head(standin, image, 503, count=2)

    assert data_plane.manifest_digest(login_server, image.repo, image.tag) == image.digest

    heads = manifest_heads(standin, image)
    assert [r["status"] for r in heads] == [503, 503, 200], heads
    assert sum(rule["hits"] for rule in standin.faults()) == 2
