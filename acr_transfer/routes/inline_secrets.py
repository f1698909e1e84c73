"""Secrets are referenced, never written: a routes file holding one is refused before anything echoes it.

A key named like a secret (``sas``, ``token``, ``password``, ``account_key``, …) or a value holding a SAS
signature (``sig=``) stops the load, with its line and path but never the value: a secret in routes.yaml ends
up in git, Prefect parameters and logs. The check runs before and after ``${VAR}`` expansion, so an environment
variable cannot smuggle one in either.

Its cost is linear in the document as written: a string an alias (or the defaults) repeats is the same object at
every reference, and is searched once; each further reference costs a dictionary lookup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from acr_transfer.errors import shown
from acr_transfer.routes.report import Loc, Report

# key names that can only mean a secret; compared after lower-casing and '-' → '_'
_SECRET_KEY = re.compile(r"^(?:.*_)?(?:sas|sas_?token|token|password|passwd|key|account_?key|connection_?string)$")
_SIGNATURE = re.compile("sig=", re.IGNORECASE)  # searched in place: no lower-cased copy of a long value
_SECRET_ADVICE = (
    "put SAS tokens in Key Vault and reference them by secret URI (bridge: {secret_uri: "
    "https://VAULT.vault.azure.net/secrets/NAME}); a secret written here ends up in git, Prefect parameters and logs"
)


def stop_at_inline_secrets(data: Any, report: Report) -> None:
    """Raise when the document holds a secret, before any value is validated or echoed in a message.

    Raises:
        ConfigError: every key named like a secret and every value with a SAS signature (never the value), and
            whatever else ``report`` holds so far.
    """
    before = len(report.problems)
    _refuse_inline_secrets(data, (), report, Verdicts())
    if len(report.problems) > before:
        report.raise_if_any()


@dataclass
class Verdicts:
    """What is known of each string searched so far, by ``id``: the document keeps every string alive while it
    is scanned, so an id names one string throughout."""

    keys: dict[int, bool] = field(default_factory=dict)
    values: dict[int, bool] = field(default_factory=dict)


def _refuse_inline_secrets(value: Any, loc: Loc, report: Report, seen: Verdicts) -> None:
    """Report every key named like a secret and every value holding a SAS signature (never the value itself)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if _secret_key(key, seen):
                report.add((*loc, key), f"'{shown(key)}' looks like an inline secret; {_SECRET_ADVICE}")
            else:
                _refuse_inline_secrets(item, (*loc, key), report, seen)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_inline_secrets(item, (*loc, index), report, seen)
    elif isinstance(value, str) and _signed(value, seen):
        report.add(loc, f"this value holds a SAS signature ('sig='); {_SECRET_ADVICE}")


def _secret_key(key: str, seen: Verdicts) -> bool:
    if id(key) not in seen.keys:
        seen.keys[id(key)] = bool(_SECRET_KEY.match(key.lower().replace("-", "_")))
    return seen.keys[id(key)]


def _signed(value: str, seen: Verdicts) -> bool:
    if id(value) not in seen.values:
        seen.values[id(value)] = _SIGNATURE.search(value) is not None
    return seen.values[id(value)]
