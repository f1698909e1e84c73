"""Shared fixtures: one stand-in per test session, its env applied to this process."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.standin import StandIn, start_standin


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    """A running stand-in with fast runs; the SDKs in this process are pointed at it."""
    state_dir = tmp_path_factory.mktemp("standin")
    stand_in = start_standin(state_dir, "--run-seconds", "0.3", "--trigger-interval", "0.5")
    saved = dict(os.environ)
    os.environ.update(stand_in.env)
    try:
        yield stand_in
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stand_in.stop()
