"""The dashboard in a real browser: headless Chromium, a real server, a real worker thread.

The overview's counts change as tasks are enqueued (live updates, no reload); a failed task's
page re-queues it with a click, and the worker runs it to success.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dowork.dashboard import create_app

from .app import make_queue
from .live import chrome, serve

pytestmark = pytest.mark.realtime


def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll ``check`` until it returns something true; return that.

    The overview's live region is replaced every refresh, so an element found a moment ago
    may be gone: that counts as "not yet" and the check runs again.
    """
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except StaleElementReferenceException:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in the browser"
        time.sleep(0.05)


def test_overview_live_counts_and_requeue_from_the_browser(sqlite_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    worker = make_queue(sqlite_url, "shop")
    waiting = make_queue(sqlite_url, "mail")  # nobody works it: its pending count only grows
    waiting.greet.submit("first")
    worker.start()
    switch = tmp_path / "switch"
    app = create_app(sqlite_url, refresh=0.3)
    try:
        with serve(app) as url, chrome() as browser:
            browser.get(url + "/")

            def pending_mail() -> str:
                cells = browser.find_elements(
                    By.CSS_SELECTOR, 'tr[data-queue="mail"] td[data-status="pending"]'
                )
                return cells[0].text if cells else ""

            assert until(lambda: pending_mail() == "1")
            marker = browser.execute_script("return (window.__mark = 'same page')")
            for n in range(4):
                waiting.greet.submit(str(n))
            assert until(lambda: pending_mail() == "5")  # updated in place
            assert browser.execute_script("return window.__mark") == marker  # no reload

            failed = worker.flaky.submit(str(switch))
            assert failed.wait(10)

            def click(by: str, what: str) -> bool:
                found = browser.find_elements(by, what)
                if found:
                    found[0].click()
                return bool(found)

            failed_cell = 'tr[data-queue="shop"] td[data-status="failed"] a'
            until(lambda: click(By.CSS_SELECTOR, failed_cell))  # the queue's failed tasks
            until(lambda: click(By.PARTIAL_LINK_TEXT, failed.id[:18]))
            assert "the service behind" in browser.find_element(By.TAG_NAME, "main").text
            switch.touch()  # fix the cause, then re-queue from the page
            browser.find_element(By.XPATH, '//button[normalize-space()="Re-queue"]').click()
            assert until(lambda: "re-queued 1 task" in browser.page_source)

            def shown_status() -> str:
                browser.refresh()
                return str(browser.find_element(By.CSS_SELECTOR, "#status .badge").text)

            assert until(lambda: shown_status() == "succeeded")
            assert '"fixed"' in browser.find_element(By.ID, "result").text
    finally:
        worker.shutdown(timeout=5)
        waiting.shutdown(timeout=5)
