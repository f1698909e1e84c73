"""A real browser for UI tests: Debian's chromium driven by Playwright (which cannot download its own browser
here), with a screenshot of the page whenever a step fails."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
MESSAGE_LINES = 12
NOT_INSTALLED = (
    f"chromium is not installed ({CHROMIUM}); `make tools` installs it (Debian, as root: apt-get install chromium)"
)


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG of ``page`` as ``build/screenshots/<name>.png``; returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.contextmanager
def shot_on_failure(page: Page, name: str) -> Iterator[None]:
    """Run a step of a UI test; if it fails, save a screenshot and fail with its path and the page URL.

    Raises:
        AssertionError: the step failed (an assertion or a Playwright timeout), chained to its cause.
    """
    try:
        yield
    except Exception as e:
        try:
            where = f"screenshot: {screenshot(page, name)}"
        except Exception as shot_error:  # a dead page: still report the step's own failure
            where = f"no screenshot ({type(shot_error).__name__}: {shot_error})"
        # Playwright's message ends in an aria snapshot of the whole page: the head says what was expected
        head = "\n".join(str(e).splitlines()[:MESSAGE_LINES])
        raise AssertionError(f"{name} failed at {page.url}: {head}\n{where}") from e
