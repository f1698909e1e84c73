"""Each half alone (disconnected clouds), and the cleanup policy on a real registry."""

from __future__ import annotations

import uuid

import pytest

from acr_transfer.errors import AcrTransferError
from acr_transfer.models import ImportRequest, RegistryRef, TransferRequest, TransferRoute
from flows.cleanup import cleanup
from flows.transfer import export_artifacts, import_blob, registry_transfer
from tests.support import azure
from tests.support.images import manifest_digest, push_file_artifact
from tests.support.standin import StandIn
from tests.support.transfer import request, route

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def test_export_here_import_there(standin: StandIn) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    dst = standin.topology["registries"]["targetregistry"]["login_server"]
    image = push_file_artifact(src, f"halves/app{uuid.uuid4().hex[:6]}", "v1", b"carried across an air gap")
    source_only = TransferRoute.model_validate(
        {"name": "airgap-out", "source": {"registry": {"resource_group": azure.RG, "name": "sourceregistry"},
                                          "export_pipeline": "exportpipeline"}}
    )  # fmt: skip
    exported = export_artifacts(
        TransferRequest(route=source_only, artifacts=[image.by_tag], transfer_id=uuid.uuid4().hex[:12])
    )
    assert len(exported) == 1 and exported[0].catalog_digest.startswith("sha256:")
    target_only = TransferRoute.model_validate(
        {"name": "airgap-in", "target": {"registry": {"resource_group": azure.RG, "name": "targetregistry"},
                                         "import_pipeline": "directimport"}}
    )  # fmt: skip
    req = ImportRequest(route=target_only, blob=exported[0].blob, catalog_digest=exported[0].catalog_digest,
                        artifacts=[image.by_tag])  # fmt: skip
    result = import_blob(req)
    assert result.succeeded and [r.status for r in result.rows] == ["verified"]
    assert manifest_digest(dst, image.repo, "v1", standin.ca)[0] == image.digest
    # the same blob again (a repeated event): the finished import is found, not repeated
    again = import_blob(req)
    assert again.rows[0].import_run == result.rows[0].import_run


def test_cleanup_deletes_finished_transfers_and_keeps_failed_ones(standin: StandIn) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    image = push_file_artifact(src, "cleanup/app", "v1", b"cleanup payload")
    good = request(route(standin, "clean-good", import_pipeline="directimport"), [image.by_tag])
    assert registry_transfer(good).succeeded
    bad = request(route(standin, "clean-bad", import_pipeline="directimport"), [image.by_tag])
    standin.set_outcome(f"x{bad.transfer_id}b001a1", fail="403 AuthorizationFailure: the SAS token expired")
    with pytest.raises(AcrTransferError):
        registry_transfer(bad)
    ref = RegistryRef(resource_group=azure.RG, name="sourceregistry")
    preview = cleanup(ref, older_than_days=0, dry_run=True)
    assert f"x{good.transfer_id}b001a1" in preview.deleted
    assert f"x{bad.transfer_id}b001a1" not in preview.deleted
    assert azure.arm().pipeline_runs.get(azure.RG, "sourceregistry", f"x{good.transfer_id}b001a1")  # dry run kept it
    done = cleanup(ref, older_than_days=0)
    names = {r.name for r in azure.arm().pipeline_runs.list(azure.RG, "sourceregistry")}
    assert f"x{good.transfer_id}b001a1" not in names and f"x{good.transfer_id}b001a1" in done.deleted
    assert f"x{bad.transfer_id}b001a1" in names
