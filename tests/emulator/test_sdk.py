"""The stand-in against the unmodified Azure SDKs: the acceptance of "Foundation and the local stand-in"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.images import manifest_digest, push_file_artifact, push_multiarch_index
from tests.support.standin import StandIn

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
pytestmark = pytest.mark.integration


def login(standin: StandIn, registry: str) -> str:
    return str(standin.topology["registries"][registry]["login_server"])


def test_sdk_roundtrip_with_only_the_env_file(standin: StandIn) -> None:
    """Three artifacts (by tag, by digest, a multi-arch index) pushed with oras go source → blob → target
    through azure-mgmt-containerregistry, DefaultAzureCredential, Key Vault and Blob SDKs, and the target
    serves byte-identical manifests."""
    src, dst = login(standin, "sourceregistry"), login(standin, "targetregistry")
    suffix = uuid.uuid4().hex[:6]
    by_tag = push_file_artifact(src, f"sdk/hello{suffix}", "v1", b"hello " + suffix.encode())
    by_digest = push_file_artifact(src, f"sdk/world{suffix}", "v2", b"world " + suffix.encode())
    index = push_multiarch_index(src, f"sdk/multi{suffix}", "1.0", seed=suffix)
    artifacts = [by_tag.by_tag, by_digest.by_digest, index.by_tag]

    env_file = standin.state_dir / "env"
    clean_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    proc = subprocess.run(
        [
            "bash",
            "-c",
            f'source "{env_file}" && exec "{sys.executable}" "{SCRIPTS / "sdk_roundtrip.py"}" "$@"',
            "-",
            *artifacts,
        ],
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["pipeline_state"] == "Succeeded"
    assert seen["export"]["state"] == "Succeeded" and seen["export"]["status"] == "Succeeded"
    assert seen["export"]["digest"].startswith("sha256:")
    assert seen["blob"]["metadata"] == {"category": "acr-transfer-blob"} and seen["blob"]["md5"]
    assert seen["import"]["state"] == "Succeeded"
    assert sorted(seen["import"]["imported"]) == sorted(artifacts)
    for pushed in (by_tag, by_digest, index):
        src_digest, src_body = manifest_digest(src, pushed.repo, pushed.digest, standin.ca)
        ref = pushed.digest if pushed is by_digest else pushed.tag
        dst_digest, dst_body = manifest_digest(dst, pushed.repo, ref, standin.ca)
        assert dst_digest == src_digest == pushed.digest
        assert dst_body == src_body
