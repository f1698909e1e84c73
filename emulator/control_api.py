"""The control API, served on the ARM endpoint under ``/_emulator`` (a contract other issues rely on).

- ``POST /_emulator/faults`` a fault rule (see ``emulator.control``); ``GET`` lists; ``DELETE`` clears.
- ``POST /_emulator/runs/{runName}/outcome`` ``{"fail": "<message>"}`` or ``{"hang": true}``: that run
  (when it next executes) ends that way.
- ``GET /_emulator/runs``: every run with its state and the moments (epoch) it was created and became terminal.
- ``GET /_emulator/requests`` the request log ``[{service, method, path, status, at}]``; ``DELETE`` clears.
- ``POST /_emulator/speed`` ``{"min_seconds", "bytes_per_second", "trigger_interval"}``: change pacing.
- ``POST /_emulator/registry-tokens`` ``{"access_seconds", "refresh_seconds", "anonymous_seconds"}`` (any of
  them): the lifetime of registry tokens issued from now on (``emulator.registry_auth``); ``GET`` shows them.
- ``POST /_emulator/registries/{name}/anonymous-pull`` ``{"enabled": true|false}``: anonymous pull on that
  registry (tokens with ``pull`` only, from ``/oauth2/token`` without credentials); ``GET`` shows it.
- Vault access (grant and revoke secret access by access policy or role assignment): the routes of
  ``emulator.arm_access.access_control_routes`` under ``/_emulator/vaults/{vault}/…`` and
  ``/_emulator/role-assignments``.
- ``GET /_emulator/health``.

Registry token lifetimes and anonymous pull live in memory: a restart goes back to the command line's
``--registry-token-seconds`` / ``--registry-refresh-seconds`` and the topology's ``anonymous_pull``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator.arm_access import access_control_routes
from emulator.control import FaultRuleError
from emulator.registry_auth import RegistryAccess
from emulator.world import World


def control_routes(world: World, registry_access: RegistryAccess) -> list[Route]:
    """Starlette routes of the control API over ``world`` and the registries' ``registry_access``."""
    controller = world.controller

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            controller.clear_rules()
            return Response(status_code=204)
        if request.method == "GET":
            return JSONResponse([r.to_json() for r in controller.rules])
        try:
            body = await request.json()
            rules = body if isinstance(body, list) else [body]
            added = [controller.add_rule(dict(r)).to_json() for r in rules]
        except (ValueError, TypeError, FaultRuleError) as e:
            return JSONResponse({"error": str(e)}, 400)
        return JSONResponse(added if isinstance(body, list) else added[0], 201)

    async def outcome(request: Request) -> Response:
        body = await request.json()
        if not isinstance(body, dict) or not (isinstance(body.get("fail"), str) or body.get("hang") is True):
            return JSONResponse({"error": 'expected {"fail": "<message>"} or {"hang": true}'}, 400)
        world.outcomes[request.path_params["name"].lower()] = body
        return JSONResponse(body, 201)

    async def runs(request: Request) -> Response:
        out = []
        for rec in world.runs.values():
            res = rec["resource"]
            out.append(
                {
                    "id": res["id"],
                    "name": res["name"],
                    "registry": rec["registry"],
                    "provisioningState": res["properties"]["provisioningState"],
                    "status": res["properties"]["response"].get("status"),
                    "started_at": rec.get("started_at"),
                    "finished_at": rec.get("finished_at"),
                }
            )
        return JSONResponse(out)

    async def requests(request: Request) -> Response:
        if request.method == "DELETE":
            controller.log.clear()
            return Response(status_code=204)
        return JSONResponse(controller.log)

    async def speed(request: Request) -> Response:
        body = await request.json()
        for key in ("min_seconds", "bytes_per_second", "trigger_interval"):
            if key in body:
                setattr(world.speed, key, float(body[key]))
        return JSONResponse(vars(world.speed))

    async def registry_tokens(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await request.json()
                if not isinstance(body, dict):
                    raise ValueError('expected {"access_seconds": …, "refresh_seconds": …}')
                registry_access.set_lifetimes(body)
            except (ValueError, TypeError) as e:
                return JSONResponse({"error": str(e)}, 400)
        return JSONResponse(vars(registry_access.lifetimes))

    async def anonymous_pull(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in registry_access.registries:
            return JSONResponse({"error": f"no registry {name!r}; known: {registry_access.registries}"}, 404)
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("enabled"), bool):
                return JSONResponse({"error": 'expected {"enabled": true} or {"enabled": false}'}, 400)
            if body["enabled"]:
                registry_access.anonymous_pull.add(name)
            else:
                registry_access.anonymous_pull.discard(name)
        return JSONResponse({"registry": name, "enabled": name in registry_access.anonymous_pull})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return [
        Route("/_emulator/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_emulator/runs/{name}/outcome", outcome, methods=["POST"]),
        Route("/_emulator/runs", runs, methods=["GET"]),
        Route("/_emulator/requests", requests, methods=["GET", "DELETE"]),
        Route("/_emulator/speed", speed, methods=["POST"]),
        Route("/_emulator/registry-tokens", registry_tokens, methods=["GET", "POST"]),
        Route("/_emulator/registries/{name}/anonymous-pull", anonymous_pull, methods=["GET", "POST"]),
        Route("/_emulator/health", health, methods=["GET"]),
        *access_control_routes(world),
    ]
