"""Unit tests: core functions only, in-process, no network, no stand-in, no Prefect (the whole folder runs in
a few seconds). Fixtures shared by more than one module live here."""

from __future__ import annotations

import base64
import os

import pytest


@pytest.fixture
def account_key() -> str:
    """A random storage account key: SAS tokens signed with it are real tokens that no account accepts."""
    return base64.b64encode(os.urandom(64)).decode()
