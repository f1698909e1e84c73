"""Two workers share ARM's read budget without talking to each other: each paces its reads by its own model of
ARM's bucket, corrected by ARM's remaining-reads header, so neither reads into a 429.

A stand-in with a small read bucket (20, refilled 5 a second: far below what the workers' settings assume) and
two holders of clients — two workers' worth of pacers, each with its own state — reading hard from 4 threads each.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from acr_transfer.azure.clients import AzureClients
from acr_transfer.context import address
from acr_transfer.models import RegistryRef
from acr_transfer.settings import Settings, get_settings
from tests.support import azure
from tests.support.standin import StandIn, start_standin

pytestmark = [pytest.mark.integration]
READS_PER_THREAD = 8


@pytest.fixture(scope="module")
def small_bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    standin = start_standin(tmp_path_factory.mktemp("small-bucket"), "--arm-read-burst", "20", "--arm-read-rate", "5")
    saved = dict(os.environ)
    os.environ.update(standin.env)
    get_settings.cache_clear()
    try:
        yield standin
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        standin.stop()


def test_two_workers_reading_hard_never_meet_a_429(small_bucket: StandIn) -> None:
    settings = Settings()
    workers = [AzureClients(settings), AzureClients(settings)]
    ref = RegistryRef(resource_group=azure.RG, name="sourceregistry")
    registry = address(ref, settings.subscription_id, settings.permitted_subscriptions())
    small_bucket.clear_requests()
    errors: list[BaseException] = []

    def read(clients: AzureClients) -> None:
        try:  # the registry's GET: each is its own request (concurrent reads of a pipeline would share one)
            for _ in range(READS_PER_THREAD):
                assert clients.arm.login_server(registry)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=read, args=(w,)) for w in workers for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert not errors, errors
        reads = [r for r in small_bucket.requests("arm") if r["method"] == "GET" and r["path"].endswith(registry.id)]
        assert len(reads) == 2 * 4 * READS_PER_THREAD  # nothing retried: every read got through the first time
        assert [r["status"] for r in reads if r["status"] == 429] == []
        for w in workers:  # each paced itself on what ARM said was left, and none saw a 429
            assert w.read_pacer.stats.throttled == 0 and w.read_pacer.stats.waited_seconds > 0
    finally:
        for w in workers:
            w.close()
