"""``make demo``: a real transfer on a fresh machine, start to finish, in about a minute.

1. start the local Azure stand-in (a separate program, reached only over the network);
2. push three small generated images into ``sourceregistry`` (a tag, a second tag, a multi-arch index);
3. run ``acr-transfer run --route demo`` from ``routes.example.yaml``: preflight, export, bridge, import,
   verify — with the live display and the final table;
4. stop the stand-in.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from deployments.stack import read_env

ROOT = Path(__file__).resolve().parents[1]


def start_standin(state_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    print(f"▶ starting the local Azure stand-in (state in {state_dir})", flush=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "up", "--state-dir", str(state_dir), "--run-seconds", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if line.startswith("emulator ready: "):
            return proc, read_env(Path(line.split(": ", 1)[1].strip()))
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("the stand-in did not start; see the output above")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_image(client: httpx.Client, registry: str, repo: str, tag: str, payload: bytes, arch: str = "amd64") -> dict:
    """One single-layer OCI image, pushed with the distribution API; returns its descriptor."""
    config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    for blob in (payload, config):
        r = client.post(f"https://{registry}/v2/{repo}/blobs/uploads/?digest={_digest(blob)}", content=blob)
        r.raise_for_status()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(payload),
                    "size": len(payload),
                }
            ],
        }
    ).encode()
    ref = tag or _digest(manifest)
    client.put(
        f"https://{registry}/v2/{repo}/manifests/{ref}",
        content=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    ).raise_for_status()
    return {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": _digest(manifest),
        "size": len(manifest),
        "platform": {"architecture": arch, "os": "linux"},
    }


def push_demo_images(env: dict[str, str]) -> None:
    topology = json.loads(Path(env["ACR_TRANSFER_EMULATOR_TOPOLOGY"]).read_text())
    registry = topology["registries"]["sourceregistry"]["login_server"]
    # the stand-in's registries ask for ACR's tokens; its admin user (basic auth) is what `docker login` would use
    admin = topology["registries"]["sourceregistry"]["admin"]
    print(f"▶ pushing demo images into sourceregistry ({registry})", flush=True)
    verify = ssl.create_default_context(cafile=env["REQUESTS_CA_BUNDLE"])
    with httpx.Client(verify=verify, auth=(admin["username"], admin["password"])) as client:
        push_image(client, registry, "demo/hello", "v1", b"hello from the source cloud")
        push_image(client, registry, "demo/world", "v1", b"the world, exported")
        children = [
            push_image(client, registry, "demo/multiarch", "", f"layer {a}".encode(), a) for a in ("amd64", "arm64")
        ]
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children}
        ).encode()
        client.put(
            f"https://{registry}/v2/demo/multiarch/manifests/1.0",
            content=index,
            headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
        ).raise_for_status()
    print("  demo/hello:v1, demo/world:v1, demo/multiarch:1.0 (linux/amd64 + linux/arm64)", flush=True)


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="acr-transfer-demo-"))
    proc, env = start_standin(state)
    try:
        push_demo_images(env)
        topology = json.loads(Path(env["ACR_TRANSFER_EMULATOR_TOPOLOGY"]).read_text())
        run_env = {
            **os.environ,
            **env,
            "TARGET_VAULT_URL": topology["vaults"]["targetvault"]["url"],
            "PREFECT_HOME": str(state / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # a fresh PREFECT_HOME migrates its database first: on 2 busy cores that outlasts Prefect's 20 s default
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": os.environ.get(
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"
            ),
        }
        run_env.pop("PREFECT_API_URL", None)
        cmd = [
            sys.executable,
            "-m",
            "deployments",
            "run",
            "--route",
            "demo",
            "--routes",
            str(ROOT / "routes.example.yaml"),
        ]
        print(f"▶ {' '.join(['acr-transfer', *cmd[3:]])}", flush=True)
        return subprocess.run(cmd, env=run_env, cwd=ROOT).returncode
    finally:
        print("▶ stopping the stand-in", flush=True)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
