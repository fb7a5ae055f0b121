"""A real headless Chromium for the dashboard tests, driven from a Trio test.

Playwright's Python API runs on asyncio or on greenlets, not on Trio, so the
browser lives in one thread of its own (its sync API must stay on the thread
that started it) and the test hands it steps: ``await browser.do(fn)`` runs
``fn(page)`` there while the Trio side keeps driving the call. The browser
is the Debian ``chromium`` (``make chromium``), never a downloaded build.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "dashboard"

T = TypeVar("T")
_Job = tuple[Callable[[Any], Any], concurrent.futures.Future[Any]]


class Browser:
    """One page in one headless Chromium, on its own thread."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, name="chromium", daemon=True)

    def _run(self) -> None:
        from playwright.sync_api import sync_playwright

        try:
            if not Path(CHROMIUM).exists():
                raise RuntimeError(f"{CHROMIUM} is missing: `make chromium` installs it")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.set_default_timeout(20_000)
                self._started.set_result(None)
                while (job := self._jobs.get()) is not None:
                    fn, done = job
                    try:
                        done.set_result(fn(page))
                    except BaseException as exc:
                        done.set_exception(exc)
                browser.close()
        except BaseException as exc:
            if not self._started.done():
                self._started.set_exception(exc)
            raise

    async def do(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(page)`` on the browser's thread; its result (or exception)."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((fn, done))
        return await trio.to_thread.run_sync(done.result, abandon_on_cancel=True)

    async def screenshot(self, name: str) -> Path:
        """Keep a full-page screenshot as a test artefact (``tests/artifacts/``)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.do(lambda page: page.screenshot(path=str(path), full_page=True))
        return path


@asynccontextmanager
async def open_browser() -> AsyncIterator[Browser]:
    browser = Browser()
    browser._thread.start()
    await trio.to_thread.run_sync(browser._started.result)
    try:
        yield browser
    finally:
        browser._jobs.put(None)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(browser._thread.join, 10.0)
