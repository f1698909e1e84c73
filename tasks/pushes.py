"""What was pushed to a registry in a window, read back from the Prefect events the receiver forwarded.

``export-on-push`` fires once per burst (a Reactive trigger, threshold 1, ``within`` the window); the flow
then waits for the window to close and reads every ``acr.transfer.image.pushed`` event of the source registry
in it, so one export carries exactly the tags the burst pushed. An event after the window starts the next
burst; one on its edge is read by both, and the route's ledger (or the target) makes the second a no-op.
"""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)

from acr_transfer.events import EventName, registry_resource_id
from acr_transfer.listing import ListedTag
from acr_transfer.refs import is_repository, is_tag
from acr_transfer.sync import latest_pushes
from tasks.concurrency import PrefectApi
from tasks.retry import step_options

PAGE = 50  # the most the events API returns per page


@task(name="collect-pushes", **step_options())
def collect_pushes(registry: str, since: datetime, until: datetime) -> list[ListedTag]:
    """The tags pushed to ``registry`` between ``since`` and ``until`` (the last push of each tag)."""
    log = get_run_logger()
    only = EventFilter(
        occurred=EventOccurredFilter(since=since, until=until),
        event=EventNameFilter(name=[str(EventName.IMAGE_PUSHED)]),
        resource=EventResourceFilter(id=[registry_resource_id(registry.lower())]),
    )
    api = PrefectApi()
    pushes: list[ListedTag] = []
    by_digest = 0
    page = api().read_events(filter=only, limit=PAGE)
    while True:
        for event in page.events:
            payload = event.payload or {}
            repo, tag, digest = payload.get("repository"), payload.get("tag"), payload.get("digest")
            if not (isinstance(repo, str) and is_repository(repo) and isinstance(digest, str)):
                continue
            if not (isinstance(tag, str) and is_tag(tag)):
                by_digest += 1  # an untagged push (a referrer): it travels with its subject
                continue
            pushes.append(ListedTag(repo, tag, digest, event.occurred, event.occurred))
        if not page.next_page:
            break
        page = api().read_events_page(page.next_page)
    found = latest_pushes(pushes)
    log.info(
        "%s push event(s) to %s between %s and %s: %s tag(s)%s",
        len(pushes) + by_digest,
        registry,
        since.isoformat(timespec="seconds"),
        until.isoformat(timespec="seconds"),
        len(found),
        f", {by_digest} by digest (they travel with their subjects)" if by_digest else "",
    )
    return found
