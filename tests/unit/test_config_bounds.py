"""What loading a routes file may cost, what a route may ask of Prefect, and how much of the input an error may
echo: the operator-reality bounds of the loader (and a refused SAS during the bridge, named like preflight names
it). Pure: no stand-in, no Prefect.

The three hostile files are measured in a subprocess each (the loader's CPU time, ``time.process_time``, and the
growth of its peak RSS), so a loaded 2-core machine makes them slower in wall time but not in what is asserted;
the margins are wide (a refusal takes milliseconds).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from acr_transfer.azure.storage import CopyRefused
from acr_transfer.errors import AuthError, ConfigError
from acr_transfer.models import (
    PARAMETER_LIMIT,
    PARAMETER_RESERVE,
    ImportRequest,
    TransferRequest,
    TransferRoute,
    parameter_bytes,
    parameter_size_problem,
)
from acr_transfer.routes import RouteLimits, load_routes, parse_routes
from acr_transfer.routes.limits import MAX_FILE_BYTES, MAX_ROUTES
from acr_transfer.steps import bridge
from tests.unit.fakes import (
    BRIDGE_SECRET,
    EXPORT_CONTAINER,
    EXPORT_SECRET,
    IMPORT_CONTAINER,
    FakeAzure,
    make_ctx,
    run_state,
)

SIDES = (
    "  source: {registry: {resource_group: rg, name: sourceregistry}, export_pipeline: exportpipeline}\n"
    "  target: {registry: {resource_group: rg, name: targetregistry}, import_pipeline: importpipeline}\n"
)
ONE_ROUTE = "routes:\n- name: demo\n" + SIDES
CPU_SECONDS, RSS_MIB = 2.0, 200

# run in a fresh interpreter: load argv[1] with argv[2] as max_file_bytes, print what it cost as JSON. The peak
# RSS is the kernel's VmHWM of this process (ru_maxrss would start at the parent's: Linux keeps it across exec)
MEASURE = textwrap.dedent("""\
    import json, re, resource, sys, time
    from pathlib import Path
    from acr_transfer.errors import ConfigError
    from acr_transfer.routes import RouteLimits, load_routes

    def peak_kib():
        status = Path("/proc/self/status")
        if status.exists():
            return int(re.search(r"VmHWM:\\s+(\\d+)", status.read_text()).group(1))
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    limits = RouteLimits(max_file_bytes=int(sys.argv[2]))
    rss = peak_kib()
    cpu = time.process_time()
    try:
        load_routes(sys.argv[1], limits)
        message = None
    except ConfigError as e:
        message = e.message
    cpu = time.process_time() - cpu
    print(json.dumps({"cpu": cpu, "rss_mib": (peak_kib() - rss) / 1024, "message": message}))
""")


def cost_of_loading(path: Path, max_file_bytes: int = MAX_FILE_BYTES) -> dict[str, object]:
    """Load ``path`` in a subprocess; its CPU seconds, peak RSS growth (MiB) and error message (None: loaded)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), str(max_file_bytes)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def hostile_files(tmp: Path) -> dict[str, tuple[Path, int, str]]:
    """name → (file, max_file_bytes to load it with, what the refusal must say)."""
    files: dict[str, tuple[Path, int, str]] = {}

    def write(name: str, text: str, cap: int, says: str) -> None:
        path = tmp / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        files[name] = (path, cap, says)

    # the file: a 1 MB string aliased 90 000 times (loaded after 67 s before)
    big = 'x-big: &big "' + "a" * 1_000_000 + '"\n'
    write("alias-1MB-x90000", f"version: 1\n{big}x-refs: [{', '.join(['*big'] * 90_000)}]\n{ONE_ROUTE}", 0, "1.5 MiB")
    # within the size cap: a 600 kB description aliased 60 000 times, and used by the route too
    desc = 'x-desc: &desc "' + "d" * 600_000 + '"\n'
    refs = f"x-refs: [{', '.join(['*desc'] * 60_000)}]\n"
    write("alias-600kB-x60000", f"version: 1\n{desc}{refs}{ONE_ROUTE}  description: *desc\n", 0, "makes a request")
    write("20MB", f'version: 1\n{ONE_ROUTE}  description: "{"d" * 20_000_000}"\n', 0, "19.1 MiB")
    routes = "".join(f"- name: r{i}\n" + SIDES for i in range(100_000))
    write("100000-routes", f"version: 1\nroutes:\n{routes}", 0, "20.1 MiB")
    # the same routes with the size cap out of the way: refused by their number, while they are parsed
    write("100000-routes-uncapped", f"version: 1\nroutes:\n{routes}", 10**9, f"more than {MAX_ROUTES:,} routes")
    # 100 000 routes within the size cap (aliases of one route)
    aliased = "version: 1\nroutes:\n- &r\n  name: r\n" + SIDES + "- *r\n" * 99_999
    write("100000-routes-aliased", aliased, 0, f"more than {MAX_ROUTES:,} routes (route 1,001 starts at line 1006)")
    return files


CASES = [
    "alias-1MB-x90000",
    "alias-600kB-x60000",
    "20MB",
    "100000-routes",
    "100000-routes-uncapped",
    "100000-routes-aliased",
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int, str]]:
    return hostile_files(tmp_path_factory.mktemp("hostile"))


@pytest.mark.faults
@pytest.mark.parametrize("case", CASES)
def test_hostile_routes_files_are_refused_within_two_cpu_seconds_and_200_mib(
    hostile: dict[str, tuple[Path, int, str]], case: str
) -> None:
    path, cap, says = hostile[case]
    cost = cost_of_loading(path, cap or MAX_FILE_BYTES)
    message = cost["message"]
    assert isinstance(message, str), f"{case} loaded"
    assert says in message and str(path) in message
    assert len(message) < 12_000
    assert "a" * 100 not in message and "d" * 100 not in message  # no echo of the amplified value
    assert float(str(cost["cpu"])) < CPU_SECONDS, cost
    assert float(str(cost["rss_mib"])) < RSS_MIB, cost


@pytest.mark.faults
def test_too_many_routes_says_so_not_aliases() -> None:
    text = "version: 1\nroutes:\n" + "".join(f"- name: r{i}\n" + SIDES for i in range(3))
    with pytest.raises(ConfigError) as raised:
        parse_routes(text, "routes.yaml", RouteLimits(max_routes=2))
    assert raised.value.message.startswith("routes file routes.yaml has more than 2 routes (route 3 starts at line 9)")
    assert "alias" not in raised.value.message
    assert parse_routes(text, "routes.yaml", RouteLimits(max_routes=3)).names() == ["r0", "r1", "r2"]
    merged = "version: 1\n<<: {routes: [{name: a}, {name: b}, {name: c}]}\n"  # a list no composer saw as routes
    with pytest.raises(ConfigError, match="has more than 2 routes"):
        parse_routes(merged, "routes.yaml", RouteLimits(max_routes=2))


@pytest.mark.faults
def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(f"version: 1\n{ONE_ROUTE}" + "# padding\n" * 200)
    size = path.stat().st_size
    assert load_routes(path, RouteLimits(max_file_bytes=size)).names() == ["demo"]
    with pytest.raises(ConfigError) as raised:
        load_routes(path, RouteLimits(max_file_bytes=size - 1))
    assert raised.value.message.startswith(
        f"routes file {path} is {size:,} bytes, more than the {size - 1:,} bytes a routes file may be"
    )
    with pytest.raises(ConfigError, match=r"is 1\.5 MiB"):  # the text given directly is measured as UTF-8
        parse_routes("é" * 800_000)


@pytest.mark.faults
def test_an_aliased_value_is_expanded_once_and_reported_wherever_it_appears() -> None:
    """1 000 routes share a 400 kB description with a ${VAR} in it: it is expanded once (one object in every
    route), and a SAS signature in a value 60 000 aliases repeat is reported at each of them."""
    head = f'version: 1\nx-v: &v "${{REGION}}{"v" * 400_000}"\nroutes:\n'
    first = "- {name: r0, description: *v, source: &s {registry: {resource_group: rg, name: sourceregistry}, "
    first += "export_pipeline: exportpipeline}}\n"
    rest = "".join(f"- {{name: r{i}, description: *v, source: *s}}\n" for i in range(1, 1000))
    loaded = parse_routes(head + first + rest, environ={"REGION": "west"})
    assert loaded.get("r999").description.startswith("westvvv")
    assert len({id(route.description) for route in loaded.routes.values()}) == 1
    signed = f'version: 1\nx-v: &v "sig={"v" * 600_000}"\nx-refs: [{", ".join(["*v"] * 60_000)}]\n{ONE_ROUTE}'
    with pytest.raises(ConfigError, match="holds a SAS signature") as raised:
        parse_routes(signed)
    assert "has 60001 problems" in raised.value.message  # every place it appears, each named
    assert "v" * 100 not in raised.value.message and len(raised.value.message) < 11_000


# --- what a route may ask of Prefect ---------------------------------------------------------------------------


def route_text(description: str) -> str:
    return f"version: 1\n{ONE_ROUTE}  " + yaml.safe_dump({"description": description}, width=float("inf"))


def prefect_count(request: TransferRequest | ImportRequest) -> int:
    # how Prefect's API counts a flow run's parameters (prefect._internal.schemas.validators.validate_parameter_size)
    return len(json.dumps({"request": request.model_dump(mode="json")}, separators=(",", ":")).encode())


@pytest.mark.parametrize("description", ["", "plain", "ünï/cødé ☃ 𝄞", 'quotes " and \\ and \n\t\x7f', "d" * 5000])
def test_parameter_bytes_is_what_prefect_counts(description: str) -> None:
    route = parse_routes(route_text(description)).get("demo")
    for request in (
        TransferRequest(route=route, artifacts=["demo/app:v1", "é/x:v1"], transfer_id="abc123def"),
        ImportRequest(route=route, blob="demo/x/batch001.tar", artifacts=["demo/app:v1"]),
    ):
        assert parameter_bytes(request) == prefect_count(request)


@pytest.mark.faults
def test_a_route_too_large_for_a_flow_run_is_refused_at_load_naming_route_and_size() -> None:
    text = route_text("d" * PARAMETER_LIMIT)
    with pytest.raises(ConfigError) as raised:
        parse_routes(text, "routes.yaml")
    message = raised.value.message
    unchecked = parse_routes(text, limits=RouteLimits(max_parameter_bytes=0))  # 0: no check, as in Prefect
    size = prefect_count(TransferRequest(route=unchecked.get("demo")))
    assert f"line 3: routes[0] (route 'demo'): route 'demo' makes a request of {size:,} bytes" in message
    assert f"more than a Prefect flow run takes as parameters ({PARAMETER_LIMIT:,} bytes" in message
    assert "d" * 100 not in message and len(message) < 1000


@pytest.mark.faults
def test_a_request_too_large_for_a_flow_run_is_refused_before_any_run_exists() -> None:
    """What sync-routes (and any caller) checks before submitting: the route, the request's size, the limit."""
    route = TransferRoute.model_validate(_demo("x"))
    empty = parameter_bytes(TransferRequest(route=route))
    fits = TransferRoute.model_validate(_demo("x" * (PARAMETER_LIMIT - PARAMETER_RESERVE - empty + 1)))
    assert parameter_bytes(TransferRequest(route=fits)) + PARAMETER_RESERVE == PARAMETER_LIMIT
    assert parameter_size_problem(TransferRequest(route=fits)) is None
    over = TransferRoute.model_validate(_demo("x" * (PARAMETER_LIMIT - PARAMETER_RESERVE - empty + 2)))
    problem = parameter_size_problem(TransferRequest(route=over))
    assert problem is not None and problem.startswith(f"route 'demo' makes a request of {PARAMETER_LIMIT - 1023:,}")
    refs = [f"demo/app{i}:{'v' * 120}" for i in range(2500)]  # the request's own artifacts count too
    assert parameter_size_problem(TransferRequest(route=route, artifacts=refs), 200_000) is not None


def _demo(description: str) -> dict[str, object]:
    registry = {"resource_group": "rg", "name": "sourceregistry"}
    return {
        "name": "demo",
        "description": description,
        "source": {"registry": registry, "export_pipeline": "exportpipe"},
    }


# --- errors echo a few hundred characters of the input at most ----------------------------------------------------

LONG = "q" * 100_000
DEEP = "".join(f"{{{'q' * 200}{i}: " for i in range(38)) + "{token: 1}" + "}" * 38  # a secret 40 keys down
UNKNOWN = ", ".join(f"{i}{'q' * 100}: 1" for i in range(5))  # five unknown keys, each 100 characters


@pytest.mark.faults
@pytest.mark.parametrize(
    ("text", "says"),
    [
        (f"version: 1\nroutes: *{LONG}\n", "found undefined alias"),
        (f"version: 1\nroutes: !{LONG} x\n", "could not determine a constructor"),
        (f"version: 1\nx: &{LONG} 1\ny: &{LONG} 2\nroutes: []\n", "found duplicate anchor"),
        (f"version: 1\n{ONE_ROUTE}  description: '${{{LONG}}}'\n", f"environment variable {'q' * 60}… is not set"),
        (f"version: 1\n{ONE_ROUTE}  description: '${{a {LONG}}}'\n", "not a variable name"),
        (f"version: 1\n{ONE_ROUTE}  blob_name_template: '{{{LONG}}}{{transfer_id}}'\n", "unknown placeholders"),
        (f"version: 1\n{ONE_ROUTE}  {'q' * 1000}: 1\n", "unknown key"),  # YAML allows 1024 in a plain key
        (f"version: 1\nx-deep: {DEEP}\n{ONE_ROUTE}", "looks like an inline secret"),
        ("version: 1\nroutes:\n" + "".join(f"- {{name: r{i}, {UNKNOWN}}}\n" for i in range(1000)), "5000 problems"),
    ],
    ids=["alias", "tag", "anchor", "variable", "reference", "placeholder", "key", "deep", "thousands"],
)
def test_errors_quote_a_few_hundred_characters_of_the_input_at_most(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_routes(text, "routes.yaml", environ={})
    message = raised.value.message
    assert says in message
    assert "q" * 301 not in message
    assert all(len(line) <= 400 for line in message.splitlines()), max(message.splitlines(), key=len)[:200]
    assert len(message) < 11_000


def test_an_unknown_route_lists_twenty_known_ones_and_a_count() -> None:
    text = "version: 1\nroutes:\n" + "".join(f"- name: route-{i:04}\n" + SIDES for i in range(1000))
    loaded = parse_routes(text, "routes.yaml")
    with pytest.raises(ConfigError) as raised:
        loaded.get("nope")
    assert raised.value.message.endswith("route-0019 … (1000 in all)") and len(raised.value.message) < 400
    with pytest.raises(ConfigError, match=r"\(1000 in all\)$"):
        loaded.select(["nope"])


# --- a refused SAS during the bridge names its Key Vault secret -------------------------------------------------

REFUSED = (
    "read properties of blob 'b' in container {c}: 403 AuthorizationFailure: This request is not authorized; "
    "the SAS is expired, not yet valid or signed for another container: renew the secret in Key Vault "
    "(https://acct.blob.core.windows.net/c?sv=1&sig=SECRETSIG)"
)


@pytest.mark.parametrize(
    ("side", "container", "secret", "named"),
    [
        (
            "source",
            EXPORT_CONTAINER,
            EXPORT_SECRET,
            "secret 'acrexportsas' (vault https://sourcevault.vault.azure.net)",
        ),
        (
            "target",
            IMPORT_CONTAINER,
            BRIDGE_SECRET,
            "secret 'acrbridgesas' (vault https://targetvault.vault.azure.net)",
        ),
    ],
)
def test_a_storage_403_during_the_bridge_names_the_secret_whose_sas_failed(
    side: str, container: str, secret: str, named: str
) -> None:
    ctx = make_ctx(import_container=IMPORT_CONTAINER, bridge_secret=BRIDGE_SECRET)
    azure = FakeAzure.for_ctx(ctx)
    azure.blobs.add_container(EXPORT_CONTAINER, "b")
    refused = CopyRefused(REFUSED.format(c=container), side=side, code="AuthorizationFailure", status=403)
    azure.blobs.container_errors[container] = refused
    with pytest.raises(AuthError) as raised:
        bridge(azure.blobs, azure.secrets, ctx, run_state("x1", blob="b"))
    message = raised.value.message
    assert f"route 'demo': bridging blob 'b': the SAS in {named} was refused (403 AuthorizationFailure); renew it" in (
        message
    )
    assert secret in message and "SECRETSIG" not in message
    assert (raised.value.code, raised.value.status) == ("AuthorizationFailure", 403)
    other = BRIDGE_SECRET if side == "source" else EXPORT_SECRET
    assert other not in message


def test_a_refused_copy_of_unknown_side_names_both_secrets_and_an_identity_keeps_its_advice() -> None:
    ctx = make_ctx(import_container=IMPORT_CONTAINER, bridge_secret=BRIDGE_SECRET)
    azure = FakeAzure.for_ctx(ctx)
    azure.blobs.container_errors[EXPORT_CONTAINER] = AuthError("copy refused", code="AuthorizationFailure", status=403)
    with pytest.raises(AuthError, match=r"secret 'acrexportsas' .* or secret 'acrbridgesas'"):
        bridge(azure.blobs, azure.secrets, ctx, run_state("x1", blob="b"))
    ctx = make_ctx(import_container=IMPORT_CONTAINER)  # the worker's identity writes the target
    azure = FakeAzure.for_ctx(ctx)
    azure.blobs.add_container(EXPORT_CONTAINER, "b")
    identity = CopyRefused("grant the identity a data role", side="target", code="AuthorizationFailure", status=403)
    azure.blobs.container_errors[IMPORT_CONTAINER] = identity
    with pytest.raises(AuthError) as raised:
        bridge(azure.blobs, azure.secrets, ctx, run_state("x1", blob="b"))
    assert raised.value is identity


def test_the_routes_file_limits_come_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from acr_transfer.settings import get_settings
    from flows.routes import load_configured_routes, route_limits

    monkeypatch.setenv("ACR_TRANSFER_ROUTES_MAX_FILE_BYTES", "2048")
    monkeypatch.setenv("ACR_TRANSFER_ROUTES_MAX_ROUTES", "7")
    get_settings.cache_clear()
    try:
        limits = route_limits()
        assert (limits.max_file_bytes, limits.max_routes) == (2048, 7)
        big = tmp_path / "routes.yaml"
        big.write_text("version: 1\nroutes: []\n# " + "x" * 4096 + "\n")
        with pytest.raises(ConfigError, match=r"more than the 2,048 bytes a routes file may be"):
            load_configured_routes(str(big))
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
