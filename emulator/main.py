"""``python -m emulator up``: start the whole local Azure stand-in and keep it running until SIGTERM.

Start-up: TLS material, Azurite (one process for every storage account), then one HTTPS endpoint each for
ARM (with the control API), the managed identity, every vault, every registry and the storage proxy. On
first start it seeds the topology (containers, SAS secrets, pipelines); later starts on the same state
directory reuse ports, keys, secrets, runs and registry content. When every endpoint answers it writes
``env`` and ``topology.json`` and prints ``emulator ready: DIR/env``.

The registries ask for ACR's tokens (``emulator/registry_auth.py``); each one's admin user and password are in
``topology.json`` (``registries.<name>.admin``), for tests and the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import shlex
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
    generate_container_sas,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from emulator.access import system_identity
from emulator.arm import ArmApi
from emulator.auth import identity_app
from emulator.azurite import Azurite, account_keys
from emulator.control import ServiceMiddleware
from emulator.control_api import control_routes
from emulator.httpserver import TlsEndpoint
from emulator.keyvault import keyvault_app
from emulator.registry import registry_app
from emulator.registry_auth import RegistryAccess, RegistryAuth, TokenLifetimes
from emulator.runs import RunEngine
from emulator.storage_proxy import storage_proxy_app
from emulator.tls import TlsFiles, ensure_tls
from emulator.topology import load_topology
from emulator.world import RunSpeed, World


class Emulator:
    """One stand-in: its world, its endpoints and Azurite."""

    def __init__(self, state_dir: Path, topology: Path | None, speed: RunSpeed, args: argparse.Namespace) -> None:
        self.state_dir = state_dir.resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        saved_topology = self.state_dir / "topology-input.json"
        if topology is None and saved_topology.exists():
            topology = saved_topology
        topo = load_topology(topology)
        saved_topology.write_text(json.dumps(topo, indent=2))
        self.tls: TlsFiles = ensure_tls(self.state_dir)
        self.world = World(topo, self.state_dir, speed)
        self.engine = RunEngine(self.world, self.tls.ca)
        self.args = args
        self.registry_access = RegistryAccess(
            self.state_dir,
            topo["registries"],
            anonymous_pull=topo.get("anonymous_pull", []),
            lifetimes=TokenLifetimes(args.registry_token_seconds, args.registry_refresh_seconds),
        )
        self.ports: dict[str, int] = self._load_ports()
        self.identity_header = self._identity_header()
        self.keys = account_keys(self.state_dir, topo["storage_accounts"])
        self.azurite = Azurite(self.state_dir, self.tls, self.keys, port=self.ports.get("azurite"))
        self.endpoints: list[TlsEndpoint] = []
        self.server_tasks: list[asyncio.Task[Any]] = []
        self.background: list[asyncio.Task[Any]] = []

    # --- persistence of ports and secrets --------------------------------------------------------------
    def _load_ports(self) -> dict[str, int]:
        path = self.state_dir / "ports.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _identity_header(self) -> str:
        path = self.state_dir / "identity-header"
        if not path.exists():
            path.write_text(secrets.token_hex(16))
            path.chmod(0o600)
        return path.read_text().strip()

    def _endpoint(self, key: str, app: Any) -> TlsEndpoint:
        try:
            endpoint = TlsEndpoint(key, app, self.tls, self.ports.get(key, 0))
        except OSError as e:
            raise SystemExit(
                f"emulator: port {self.ports.get(key)} for '{key}' is in use; is another stand-in running on "
                f"{self.state_dir}? Stop it, or use another --state-dir. ({e})"
            ) from e
        self.ports[key] = endpoint.port
        self.endpoints.append(endpoint)
        return endpoint

    # --- start-up --------------------------------------------------------------------------------------
    def build_endpoints(self) -> None:
        w = self.world
        controller = w.controller
        api = ArmApi(
            w,
            self.engine,
            reads=(self.args.arm_read_burst, self.args.arm_read_rate),
            writes=(self.args.arm_write_burst, self.args.arm_write_rate),
            page_size=self.args.page_size,
        )

        async def arm_entry(request: Request) -> Any:
            return await api.handle(request)

        arm = Starlette(
            routes=[
                *control_routes(w, self.registry_access),
                Route("/{path:path}", arm_entry, methods=["GET", "PUT", "DELETE", "POST", "PATCH"]),
            ]
        )
        w.endpoints.arm = self._endpoint("arm", ServiceMiddleware(arm, "arm", controller)).url
        identity = identity_app(w.authority, self.identity_header)
        w.endpoints.identity = self._endpoint("identity", ServiceMiddleware(identity, "identity", controller)).url
        for name, store in w.vaults.items():
            app = keyvault_app(
                store,
                w.authority,
                lambda name=name: w.endpoints.vaults[name],  # type: ignore[misc]
                lambda claims, op, secret, name=name: w.access.caller_denied(name, claims, op, secret),  # type: ignore[misc]
            )
            w.endpoints.vaults[name] = self._endpoint(
                f"vault:{name}", ServiceMiddleware(app, "keyvault", controller)
            ).url
        for name, reg in w.registries.items():
            guarded = RegistryAuth(registry_app(reg), name, self.registry_access, w.authority)
            served = ServiceMiddleware(guarded, "registry", controller)
            w.endpoints.registries[name] = self._endpoint(f"registry:{name}", served).url
        w.endpoints.azurite = self.azurite.url
        self.ports["azurite"] = self.azurite.port
        proxy = storage_proxy_app(self.azurite.url, self.tls.ca, controller)
        w.endpoints.storage = self._endpoint("storage", proxy).url
        (self.state_dir / "ports.json").write_text(json.dumps(self.ports, indent=2))

    def seed(self) -> None:
        """First start only: containers, SAS secrets and pipelines of the topology."""
        w, topo = self.world, self.world.topo
        for account, containers in topo["storage_accounts"].items():
            svc = BlobServiceClient(
                f"{w.endpoints.azurite}/{account}",
                credential={"account_name": account, "account_key": self.keys[account]},
                connection_verify=str(self.tls.ca),
            )
            existing = {c.name for c in svc.list_containers()}
            for container in containers:
                if container not in existing:
                    svc.create_container(container)
        if w.seeded:
            return
        for vault, secrets_ in topo["vaults"].items():
            for secret, spec in secrets_.items():
                w.vaults[vault].set_secret(
                    secret,
                    self.make_sas(spec),
                    content_type="text/plain; sas-token",
                    tags={"purpose": "acr-transfer"},
                )
        for p in topo.get("pipelines", []):
            self.seed_pipeline(p)
        w.seeded = True
        w.save()

    def make_sas(self, spec: dict[str, Any]) -> str:
        """A SAS token as ACR's docs store it in Key Vault: https-only, with a leading '?'."""
        account, key = spec["account"], self.keys[spec["account"]]
        expiry = datetime.now(UTC) + timedelta(days=float(spec.get("days", 30)))
        if spec.get("kind") == "account":
            sas = generate_account_sas(
                account,
                key,
                resource_types=ResourceTypes.from_string(spec.get("resource_types", "sco")),
                permission=AccountSasPermissions.from_string(spec["permission"]),
                expiry=expiry,
                protocol="https",
            )
        else:
            sas = generate_container_sas(
                account,
                spec["container"],
                account_key=key,
                permission=spec["permission"],
                expiry=expiry,
                protocol="https",
            )
        return "?" + sas

    def seed_pipeline(self, p: dict[str, Any]) -> None:
        w = self.world
        kind = "exportPipelines" if p["kind"] == "export" else "importPipelines"
        rid = w.child_id(p["registry"], kind, p["name"])
        side = "target" if p["kind"] == "export" else "source"
        mode = p.get("storage_access_mode", "SasToken")
        props: dict[str, Any] = {
            side: {
                "type": "AzureStorageBlobContainer",
                "uri": w.container_uri(p["account"], p["container"]),
                "keyVaultUri": w.secret_uri(p["vault"], p["secret"]) if mode == "SasToken" else None,
                "storageAccessMode": mode,
            },
            "options": list(p.get("options", [])),
            "provisioningState": "Succeeded",
        }
        if p["kind"] == "import":
            props["trigger"] = {"sourceTrigger": {"status": p.get("source_trigger", "Enabled")}}
        now = datetime.now(UTC).isoformat()
        w.pipelines[rid.lower()] = {
            "resource": {
                "id": rid,
                "name": p["name"],
                "type": f"Microsoft.ContainerRegistry/registries/{kind}",
                "identity": {
                    "type": "systemAssigned",
                    "principalId": system_identity(w.authority.tenant_id, rid)[0],
                    "tenantId": w.authority.tenant_id,
                },
                "systemData": {
                    "createdBy": "emulator",
                    "createdByType": "Application",
                    "createdAt": now,
                    "lastModifiedBy": "emulator",
                    "lastModifiedByType": "Application",
                    "lastModifiedAt": now,
                },
                "properties": props,
            }
        }
        w.grant_new_pipeline(w.pipelines[rid.lower()]["resource"])

    # --- outputs ---------------------------------------------------------------------------------------
    def write_outputs(self) -> Path:
        w = self.world
        env = {
            "REQUESTS_CA_BUNDLE": str(self.tls.ca),
            "ACR_TRANSFER_CA_BUNDLE": str(self.tls.ca),
            "AZURE_SUBSCRIPTION_ID": w.sub,
            "AZURE_TENANT_ID": w.topo["tenant_id"],
            "AZURE_RESOURCE_GROUP": w.rg,
            "ACR_TRANSFER_ARM_ENDPOINT": w.endpoints.arm,
            "ACR_TRANSFER_ARM_SCOPE": "https://management.azure.com/.default",
            "ACR_TRANSFER_KEYVAULT_VERIFY_CHALLENGE_RESOURCE": "false",
            "IDENTITY_ENDPOINT": f"{w.endpoints.identity}/msi/token",
            "IDENTITY_HEADER": self.identity_header,
            "AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential",
            "ACR_TRANSFER_EMULATOR_CONTROL": f"{w.endpoints.arm}/_emulator",
            "ACR_TRANSFER_EMULATOR_TOPOLOGY": str(self.state_dir / "topology.json"),
            "NO_PROXY": "127.0.0.1,localhost",
        }
        env_path = self.state_dir / "env"
        env_path.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
        described = self.state_dir / "topology.json"
        described.write_text(json.dumps(self.describe(), indent=2))
        described.chmod(0o600)  # it holds the registries' admin passwords
        return env_path

    def describe(self) -> dict[str, Any]:
        """Every resource with its ids and URLs (``topology.json``)."""
        w, topo = self.world, self.world.topo
        pipelines = {}
        for rec in w.pipelines.values():
            res = rec["resource"]
            props = res["properties"]
            end = props.get("target") or props.get("source") or {}
            pipelines[res["name"]] = {
                "kind": "export" if "exportPipelines" in res["type"] else "import",
                "registry": w.registry_name_of(res["id"]),
                "id": res["id"],
                "container_uri": end.get("uri"),
                "secret_uri": end.get("keyVaultUri"),
                "storage_access_mode": end.get("storageAccessMode"),
                "options": props.get("options", []),
                "source_trigger": (props.get("trigger") or {}).get("sourceTrigger", {}).get("status"),
            }
        return {
            "subscription_id": w.sub,
            "tenant_id": topo["tenant_id"],
            "resource_group": w.rg,
            "location": topo.get("location"),
            "arm_endpoint": w.endpoints.arm,
            "control_url": f"{w.endpoints.arm}/_emulator",
            "identity_endpoint": f"{w.endpoints.identity}/msi/token",
            "ca": str(self.tls.ca),
            "storage_proxy": w.endpoints.storage,
            "azurite": w.endpoints.azurite,
            "registries": {
                r: {
                    "id": w.registry_id(r),
                    "login_server": w.endpoints.registries[r].split("://")[1],
                    "url": w.endpoints.registries[r],
                    "admin": {"username": r, "password": self.registry_access.admin_password(r)},
                }
                for r in topo["registries"]
            },
            "storage_accounts": {
                a: {
                    "blob_endpoint": f"{w.endpoints.storage}/{a}",
                    "direct_endpoint": f"{w.endpoints.azurite}/{a}",
                    "containers": {c: w.container_uri(a, c) for c in cs},
                }
                for a, cs in topo["storage_accounts"].items()
            },
            "vaults": {
                v: {"url": w.endpoints.vaults[v], "secrets": {s: w.secret_uri(v, s) for s in ss}}
                for v, ss in topo["vaults"].items()
            },
            "pipelines": pipelines,
        }

    # --- run -------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        started = time.monotonic()
        await self.azurite.start()
        try:
            self.build_endpoints()
            loop = asyncio.get_running_loop()
            self.server_tasks = [loop.create_task(e.serve()) for e in self.endpoints]
            while not all(e.server.started for e in self.endpoints):
                await asyncio.sleep(0.02)
            await asyncio.to_thread(self.seed)
            self.engine.resume_all()
            self.background = [
                loop.create_task(self.engine.trigger_loop()),
                loop.create_task(self.world.autosave()),
            ]
            env_path = self.write_outputs()
            print(f"emulator ready: {env_path}", flush=True)
            print(
                f"  (started in {time.monotonic() - started:.1f} s; ARM {self.world.endpoints.arm})",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop serving, stop runs, save state, stop Azurite; bounded so SIGTERM ends us within seconds."""
        for e in self.endpoints:
            e.stop()
        for t in self.background:
            t.cancel()
        await self.engine.stop()
        pending = self.server_tasks + self.background
        if pending:
            _, late = await asyncio.wait(pending, timeout=2)
            for t in late:
                t.cancel()
        self.world.save()
        await self.azurite.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acr-transfer emulator", description="The local Azure stand-in.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stand-in in the foreground until SIGTERM or Ctrl-C")
    up.add_argument("--state-dir", type=Path, default=Path(".emulator"), help="state directory (default .emulator/)")
    up.add_argument("--topology", type=Path, default=None, help="topology JSON (default: the built-in topology)")
    up.add_argument("--run-seconds", type=float, default=1.0, help="minimum duration of a pipeline run (s)")
    up.add_argument("--bytes-per-second", type=float, default=50 * 1024 * 1024, help="run speed for large blobs")
    up.add_argument("--trigger-interval", type=float, default=2.0, help="source trigger scan interval (s)")
    up.add_argument("--arm-read-burst", type=float, default=250, help="ARM read bucket size per subscription")
    up.add_argument("--arm-read-rate", type=float, default=25, help="ARM reads refilled per second")
    up.add_argument("--arm-write-burst", type=float, default=200, help="ARM write bucket size per subscription")
    up.add_argument("--arm-write-rate", type=float, default=10, help="ARM writes refilled per second")
    up.add_argument("--page-size", type=int, default=20, help="items per ARM list page")
    up.add_argument(
        "--registry-token-seconds", type=float, default=75 * 60, help="registry access token lifetime (75 min)"
    )
    up.add_argument(
        "--registry-refresh-seconds", type=float, default=3 * 3600, help="registry refresh token lifetime (3 h)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    speed = RunSpeed(args.run_seconds, args.bytes_per_second, args.trigger_interval)
    emulator = Emulator(args.state_dir, args.topology, speed, args)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await emulator.run(stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner())
    return 0
