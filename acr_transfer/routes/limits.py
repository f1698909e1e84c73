"""What a routes file may ask for, and what loading one may cost: the caller's :class:`RouteLimits`.

The loader reads no process settings (regsync's ``ConfigLoadReader`` takes its limits as arguments too), so the
caller says how large a file, how many routes and artifacts, which subscriptions and how large a flow run's
parameters may be. The defaults bound the work of a load by the file's size: a file over ``max_file_bytes`` is
refused before it is parsed, and one with more than ``max_routes`` routes while it is being parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

from acr_transfer.models import PARAMETER_LIMIT
from acr_transfer.naming import MAX_ARTIFACTS

MAX_FILE_BYTES = 1024 * 1024  # a routes file of 1 000 routes is ~200 kB; ten times that is no routes file
MAX_ROUTES = 1000


@dataclass(frozen=True)
class RouteLimits:
    """What a routes file may ask for, given by the caller (the loader reads no process settings).

    Attributes:
        max_artifacts: the most artifacts one route may list.
        allowed_subscriptions: subscriptions a registry named with an explicit subscription (``subscription_id``
            or ``resource_id``) may be in; ``None`` checks none at load. A registry without one is left to
            ``acr_transfer.context.address``, which knows the default subscription.
        max_file_bytes: the largest routes file read (in bytes, as UTF-8); a larger one is refused unparsed.
        max_routes: the most routes one file may hold; counted while the YAML is parsed.
        max_parameter_bytes: the most bytes a route's request may take as a Prefect flow run's parameters
            (Prefect's ``server.api.max_parameter_size``); 0 checks nothing, as in Prefect.
    """

    max_artifacts: int = MAX_ARTIFACTS
    allowed_subscriptions: frozenset[str] | None = None
    max_file_bytes: int = MAX_FILE_BYTES
    max_routes: int = MAX_ROUTES
    max_parameter_bytes: int = PARAMETER_LIMIT


def file_too_large(source: str, size: int, limit: int) -> str:
    """The message for a routes file of ``size`` bytes over ``limit``."""
    return (
        f"routes file {source} is {_bytes(size)}, more than the {_bytes(limit)} a routes file may be; it was not "
        "read. Remove what the routes do not need (large x- values or comments), or split the routes into "
        "several files"
    )


def _bytes(count: int) -> str:
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f} MiB ({count:,} bytes)"
    return f"{count:,} bytes"
