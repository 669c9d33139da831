"""The console page (GET /ui) in a real browser: Debian's headless Chromium, driven by playwright.

The service and the Export API simulator run on this test's Trio loop; the
browser is driven from a worker thread (playwright's sync API), so both go on
at once. The page must show live progress without a reload, a failed job's
files, cancel with the admin token (a wrong one refused), pause and resume,
and the dead letters; any error in the browser's console fails the test.

``CONSOLE_SCREENSHOTS=docs/screenshots`` keeps the screenshots there (the
README shows them); otherwise they go to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from pipeline._adapters.aws import sqs as _sqs
from pipeline._core.accounting import JobStatus
from pipeline.testing.demo import build_zip, metadata_for
from tests.support.stack import open_stack

CHROMIUM = "/usr/bin/chromium"
ADMIN = "admin-token-page"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
ENTRIES = [("a.txt", b"alpha" * 200), ("b.txt", b"beta" * 200)]
PART = [("part/c.bin", random.Random(4).randbytes(20_000))]
# Incompressible and stored, served slowly: a job that runs until cancelled.
LONG = [("long/b.bin", random.Random(5).randbytes(4 * 1024 * 1024))]
# The only console errors allowed: the browser's own line for the 401 the wrong token gets.
WRONG_TOKEN_LINE = "status of 401"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason="needs Debian's chromium (.ci/run installs it)"
    ),
]


def _drive(base: str, shots: Path) -> list[str]:
    """Everything the browser does; returns the console errors it saw."""
    from playwright.sync_api import expect, sync_playwright

    errors: list[str] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        expect.set_options(timeout=30_000)
        page.goto(f"{base}/ui")
        expect(page.locator("#live")).to_have_text("live")

        # Submitted now: its row appears and its bar moves, file by file, without a reload.
        httpx.post(f"{base}/jobs", json={"exportIds": ["exp-progress"]}, headers=AUTH)
        bar = page.locator('tr[data-export-id="exp-progress"] [role=progressbar]')
        seen: set[int] = set()
        shot = False
        with _no_reload(page):
            for _ in range(600):
                if bar.count():
                    seen.add(int(bar.get_attribute("aria-valuenow") or 0))
                    if not shot and any(0 < value < 100 for value in seen):
                        page.screenshot(path=shots / "jobs.png")
                        shot = True
                if 100 in seen:
                    break
                page.wait_for_timeout(100)
            row = page.locator('tr[data-export-id="exp-progress"]')
            expect(row.locator(".status")).to_have_text("COMPLETED")
        assert any(0 < value < 100 for value in seen), seen

        # Cancel a running job: a wrong token is refused and said so; the right one works.
        httpx.post(f"{base}/jobs", json={"exportIds": ["exp-long"]}, headers=AUTH)
        long_row = page.locator('tr[data-export-id="exp-long"]')
        expect(long_row.locator(".status")).to_have_text("RUNNING")
        long_row.get_by_role("button", name="cancel").click()
        page.locator("#token-input").fill("not-the-token")
        page.locator("#token-ok").click()
        expect(page.locator("#errors")).to_contain_text("admin token was refused (401)")
        expect(long_row.locator(".status")).to_have_text("RUNNING")
        long_row.get_by_role("button", name="cancel").click()
        page.locator("#token-input").fill(ADMIN)
        page.keyboard.press("Enter")
        expect(page.locator("#notice")).to_contain_text("exp-long: cancel accepted")
        expect(long_row.locator(".status")).to_have_text("CANCELLED")
        expect(page.locator("#token-state")).to_have_text("admin token: given")

        # Only FAILED jobs; a failed job's files say which file failed and why.
        page.locator("#status-filter").select_option("FAILED")
        rows = page.locator("#jobs tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-export-id", "exp-bad")
        rows.first.get_by_role("button", name="exp-bad").click()
        failed = page.locator("#files tbody tr", has_text="failed")
        expect(failed).to_have_count(1)
        expect(failed).to_contain_text("bad.zip")
        assert failed.locator(".error-text").inner_text().strip()
        expect(page.locator("#job-error")).to_be_visible()
        page.locator("#files-panel").screenshot(path=shots / "failed-files.png")

        # Pause and resume the export-job queue, from the keyboard.
        queue = page.locator('#queues tr[data-queue="export-jobs"]')
        queue.get_by_role("button", name="pause").focus()
        page.keyboard.press("Enter")
        expect(queue).to_contain_text("paused")
        queue.get_by_role("button", name="resume").click()
        expect(queue).to_contain_text("receiving")

        # A DLQ: look, redrive (the good body moves, the poison stays), delete.
        queue.get_by_role("button", name="view").click()
        messages = page.locator("#dlq-messages li")
        expect(messages).to_have_count(2)
        page.locator("#dlq-panel").screenshot(path=shots / "dlq.png")
        page.locator("#dlq-redrive").click()
        expect(page.locator("#notice")).to_contain_text("1 moved, 1 kept")
        expect(messages).to_have_count(1)
        messages.first.get_by_role("button", name="delete").click()
        expect(page.locator("#dlq-empty")).to_be_visible()

        # Phone width: the page fits, nothing scrolls sideways.
        page.set_viewport_size({"width": 390, "height": 844})
        page.locator("#errors").get_by_role("button", name="dismiss").click()
        page.locator("#files-close").click()
        page.locator("#status-filter").select_option("")
        expect(page.locator("#jobs tbody tr")).to_have_count(3)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        page.screenshot(path=shots / "phone.png")
        browser.close()
    return errors


class _no_reload:
    """Fails the block if the page navigated (a reload would defeat 'live')."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.navigations = 0

    def _count(self, frame: Any) -> None:
        if frame == self.page.main_frame:
            self.navigations += 1

    def __enter__(self) -> None:
        self.page.on("framenavigated", self._count)

    def __exit__(self, *exc: object) -> None:
        self.page.remove_listener("framenavigated", self._count)
        assert self.navigations == 0, "the page reloaded"


async def test_the_console_page_in_chromium(aws_endpoint: str, tmp_path: Path) -> None:
    """Live progress to COMPLETED, FAILED filter and files, cancel with the token (a wrong one
    refused), pause/resume and the dead letters, in headless Chromium without console errors."""
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    await trio.Path(shots).mkdir(parents=True, exist_ok=True)
    async with open_stack(aws_endpoint) as stack:
        sim = stack.simulator
        # Five files that end 2, 4, 6, 8 and 10 s after they start: the bar moves in steps.
        part = build_zip(PART, method=zipfile.ZIP_STORED)
        progress_ids = sim.add_export("exp-progress", [(f"part-{n}.zip", part) for n in range(5)])
        for n, file_id in enumerate(progress_ids):
            sim.set_throttle("exp-progress", file_id, len(part) / (2 * (n + 1)))
        (long_id,) = sim.add_export(
            "exp-long", [("long.zip", build_zip(LONG, method=zipfile.ZIP_STORED))]
        )
        sim.set_throttle("exp-long", long_id, 50_000)
        sim.add_export("exp-bad", [("good.zip", build_zip(ENTRIES)), ("bad.zip", b"not a zip")])
        await stack.seed("exp-progress", metadata_for(PART))
        await stack.seed("exp-bad", metadata_for(ENTRIES))
        await stack.seed("exp-long", metadata_for(LONG))
        base, stop = await stack.serve_http(ADMIN_TOKEN=ADMIN)
        await stack.send_job(["exp-bad"])
        assert (await stack.wait_final("exp-bad")).status is JobStatus.FAILED
        # Dead letters: a poison body the service sends there itself (with its reason),
        # and a good body as a queue's redrive policy would leave it.
        dlq = stack.urls.export_jobs_dlq_url
        await stack.send_raw("{not json: a poison body")
        await _sqs.send(stack.aws.sqs, dlq, json.dumps({"exportIds": ["exp-bad"]}))
        with trio.fail_after(30):
            while await stack.queue_depth(dlq) < 2:  # noqa: ASYNC110 - SQS has no event to wait on
                await trio.sleep(0.2)
        errors = await trio.to_thread.run_sync(_drive, base, shots)
        stop.set()
    unexpected = [line for line in errors if WRONG_TOKEN_LINE not in line]
    assert not unexpected, unexpected
    assert len(errors) - len(unexpected) <= 1
