"""One local stack (`make up`'s: Prefect server and UI, worker, stand-in with the demo images, event receiver)
for every test of this folder in a session: starting it takes a minute on a busy machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deployments.stack import Stack, up


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = up(tmp_path_factory.mktemp("stack"))
    try:
        yield s
    finally:
        s.down()
