"""The defaults cascade: ``defaults:`` deep-merged into each route, remembering where each value was written.

A merged route is validated as one mapping, so a problem pydantic finds in it is at a path of the merged route
(``target.registry.name``); ``origins`` maps that path back to the file, to the route's own key or to the one
under ``defaults:``, so the message names the line the user has to change.
"""

from __future__ import annotations

from typing import Any

from acr_transfer.routes.report import Loc


def merge(
    base: dict[str, Any], over: dict[str, Any], base_loc: Loc, over_loc: Loc, rel: Loc, origins: dict[Loc, Loc]
) -> dict[str, Any]:
    """Deep merge (keys of ``over`` win, nested mappings merge key by key); ``origins`` records where each came from.

    Args:
        base: the defaults (at ``base_loc`` in the file).
        over: the route (at ``over_loc``).
        rel: the path of both within the merged route (``()`` at the top).
        origins: filled with merged path → location in the file, for every value taken.
    """
    out: dict[str, Any] = {}
    for key in [*base, *(k for k in over if k not in base)]:
        if isinstance(base.get(key), dict) and isinstance(over.get(key), dict):
            out[key] = merge(base[key], over[key], (*base_loc, key), (*over_loc, key), (*rel, key), origins)
        else:
            where, side = (over_loc, over) if key in over else (base_loc, base)
            out[key] = side[key]
            origins[(*rel, key)] = (*where, key)
    return out


def origin(rel: Loc, origins: dict[Loc, Loc], route_loc: Loc) -> Loc:
    """Where in the file a path of the merged route was written: the route itself or ``defaults``."""
    for cut in range(len(rel), 0, -1):
        if rel[:cut] in origins:
            return origins[rel[:cut]] + rel[cut:]
    return route_loc + rel
