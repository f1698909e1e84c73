"""The routes file: one versioned YAML document, loaded and validated in one place.

    version: 1          required; this release reads version 1 and refuses any other
    defaults: {…}       any route key except ``name``; deep-merged into every route (the route's own keys win)
    routes: [{…}, …]    one TransferRoute per source → target path

Modelled on regsync's config (regclient ``cmd/regsync/config.go``): an unknown version or key is an error
with its line, ``x-`` keys anywhere are left to users, secrets are only ever referenced (a Key Vault secret
URI), never written inline, and safety floors are enforced here rather than discovered at run time. String
values may read the environment with ``${VAR}`` or ``${VAR:-default}`` (``$${`` is a literal ``${``).

Every problem in a file is collected and reported in one ConfigError, each with its line and its path
(``routes[0].target.registry.nmae``), so a user fixes the whole file in one pass.

Loading is a pure function of its input, like regsync's ``ConfigLoadReader``: the text, the environment it
interpolates from, and the :class:`RouteLimits` the caller passes; no process settings are read here. Its cost
is bounded by the file's size: a file over ``max_file_bytes`` is refused unread, more than ``max_routes`` routes
while they are parsed, and an alias is scanned once however often it is referenced. The
modules of this package, in the order a document goes through them:

    limits          RouteLimits: what a file may ask for and what loading it may cost
    compose         YAML → plain data with the line of every key; node, depth, route and alias caps
    inline_secrets  refuse keys named like secrets and SAS signatures
    interpolate     drop ``x-`` keys, expand ``${VAR}``
    merge           the defaults cascade, with the origin of every merged value
    validate        top-level shape and version, unknown keys, each route (pydantic, floors, subscriptions)
    report          the problems found and their lines (used by all of the above)

Only the names below are the package's API; the modules are not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from acr_transfer.errors import ConfigError, shown
from acr_transfer.models import TransferRoute
from acr_transfer.routes.compose import compose
from acr_transfer.routes.inline_secrets import stop_at_inline_secrets
from acr_transfer.routes.interpolate import interpolate, without_x_keys
from acr_transfer.routes.limits import RouteLimits, file_too_large
from acr_transfer.routes.report import Report
from acr_transfer.routes.validate import SUPPORTED_VERSION, TOP_LEVEL_KEYS, check_top_level, defaults_of, routes_of

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_ROUTES_FILE",
    "ROUTES_VARIABLE",
    "SUPPORTED_VERSION",
    "TOP_LEVEL_KEYS",
    "RouteLimits",
    "RoutesFile",
    "load_routes",
    "parse_routes",
    "routes_path",
]

ROUTES_VARIABLE = "ACR_TRANSFER_ROUTES"
DEFAULT_ROUTES_FILE = Path("routes.yaml")
DEFAULT_LIMITS = RouteLimits()
KNOWN_SHOWN = 20  # route names a "not in the file" message lists


@dataclass(frozen=True)
class RoutesFile:
    """A loaded, valid routes file: its routes by name, in file order."""

    version: int
    routes: dict[str, TransferRoute]
    source: str = "<string>"

    def names(self) -> list[str]:
        """Route names in file order."""
        return list(self.routes)

    def get(self, name: str) -> TransferRoute:
        """The route called ``name``.

        Raises:
            ConfigError: no such route; the message names the file and every known route.
        """
        if name in self.routes:
            return self.routes[name]
        raise ConfigError(f"route '{shown(name)}' is not in {self.source}; known routes: {self._known()}")

    def select(self, names: list[str] | None) -> list[TransferRoute]:
        """The named routes in the order given (duplicates dropped); ``None`` or ``[]`` selects every route.

        Raises:
            ConfigError: naming every unknown route at once, and the known ones.
        """
        if not names:
            return list(self.routes.values())
        wanted = list(dict.fromkeys(names))
        unknown = [name for name in wanted if name not in self.routes]
        if unknown:
            named = ", ".join(f"'{shown(name)}'" for name in unknown[:20]) + (" …" if len(unknown) > 20 else "")
            raise ConfigError(f"route(s) {named} not in {self.source}; known routes: {self._known()}")
        return [self.routes[name] for name in wanted]

    def _known(self) -> str:
        names = list(self.routes)
        listed = ", ".join(names[:KNOWN_SHOWN]) or "(none)"
        return listed + (f" … ({len(names)} in all)" if len(names) > KNOWN_SHOWN else "")


def routes_path(given: str | Path | None, environ: Mapping[str, str] = os.environ) -> Path:
    """Which routes file to read: ``given``, else ``$ACR_TRANSFER_ROUTES``, else ``routes.yaml`` (relative to the
    working directory). An empty value counts as not given. Whether the file exists is the caller's question.

    Args:
        given: a path the user named (``--routes``, a flow's ``routes_file``), or ``None``.
        environ: where ``ACR_TRANSFER_ROUTES`` is read.
    """
    return Path(given or environ.get(ROUTES_VARIABLE) or DEFAULT_ROUTES_FILE)


def load_routes(
    path: str | Path, limits: RouteLimits = DEFAULT_LIMITS, *, environ: Mapping[str, str] | None = None
) -> RoutesFile:
    """Read and validate a routes file.

    Args:
        path: the YAML file (UTF-8).
        limits: what the file and a route may ask for (file size, routes, artifacts, subscriptions, parameter
            size); the defaults check no subscriptions.
        environ: where ``${VAR}`` is read (default: this process's environment, at the time of the call).

    Raises:
        ConfigError: the file cannot be read, is larger than ``limits.max_file_bytes`` (at most one byte more is
            read), or has problems; every problem is listed with its line.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(limits.max_file_bytes + 1)
            if len(data) > limits.max_file_bytes:
                size = os.fstat(file.fileno()).st_size
                raise ConfigError(file_too_large(str(path), max(size, len(data)), limits.max_file_bytes))
        text = data.decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"routes file '{path}' not found; copy routes.example.yaml to start one") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = "it is not UTF-8 text" if isinstance(e, UnicodeDecodeError) else e.strerror
        raise ConfigError(f"routes file '{path}' cannot be read ({reason}); check the path and encoding") from None
    return parse_routes(text, source=str(path), limits=limits, environ=environ)


def parse_routes(
    text: str,
    source: str = "<string>",
    limits: RouteLimits = DEFAULT_LIMITS,
    *,
    environ: Mapping[str, str] | None = None,
) -> RoutesFile:
    """Validate the text of a routes file.

    Args:
        text: the YAML document.
        source: how messages name the document (usually its path).
        limits: what the document and a route may ask for (size, routes, artifacts, subscriptions, parameter
            size); the defaults check no subscriptions.
        environ: where ``${VAR}`` is read (default: this process's environment, at the time of the call).

    Raises:
        ConfigError: a document over ``limits.max_file_bytes`` (as UTF-8) or with more than ``limits.max_routes``
            routes, YAML syntax (with line and column), an unsupported version, unknown keys, inline secrets, unset
            environment variables, invalid or duplicate routes, too many artifacts, a registry in a subscription
            ``limits`` does not allow, a route too large for a flow run's parameters: all listed in one message.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_file_bytes:
        raise ConfigError(file_too_large(source, size, limits.max_file_bytes))
    report = Report(source)
    data = compose(text, report, limits.max_routes)
    check_top_level(data, report)
    stop_at_inline_secrets(data, report)
    data = interpolate(without_x_keys(data), (), report, os.environ if environ is None else environ)
    stop_at_inline_secrets(data, report)  # a ${VAR} must not smuggle a SAS in either
    routes = routes_of(data, defaults_of(data, report), limits, report)
    report.raise_if_any()
    return RoutesFile(version=SUPPORTED_VERSION, routes=routes, source=source)
