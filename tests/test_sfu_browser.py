"""Three real browsers in a three-way ``sfu`` call: Debian's chromium driven by Playwright,
the real server and a real ``boltorezka sfu`` process, media on 127.0.0.1.

Each browser runs the small harness page in ``tests/web_harness/`` (not the web client,
which lives in ``clients/web/``). Success is what the browsers decode, read from
``getStats()`` (``inbound-rtp`` ``framesDecoded`` per publishing participant), not ICE
states: each browser must decode video from both others, and after one leaves the two left
must keep decoding each other. Every condition is polled against a deadline; the machine
may be busy. A screenshot of every page goes to the test's tmp dir.

Chromium comes from the system (``/usr/bin/chromium``); Playwright never downloads one.
Without it the test is skipped, or fails on CI (``CI=true``), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from boltorezka.runtime import Services
from tests.helpers import add_member, create_room, quick_accounts
from tests.test_sfu_call import sfu_stack
from tests.test_web_sdk import CHROMIUM_ARGS, require_chromium

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Page
    from playwright.async_api import Error as PageError

HARNESS = Path(__file__).resolve().parent / "web_harness"
# Generous for a loaded two-core machine; each wait returns as soon as its condition holds.
MEDIA_DEADLINE = 50.0
AFTER_LEAVE_DEADLINE = 30.0
# Frames each browser must decode from a source beyond the first it saw (10 fps sources).
FRAMES = 10


def chromium_or_skip() -> str:
    path = require_chromium()
    if os.environ.get("CI") == "true":
        import playwright  # noqa: F401  (on CI a missing Playwright fails the test)
    else:
        pytest.importorskip("playwright")
    return path


@contextlib.asynccontextmanager
async def harness_site() -> AsyncIterator[str]:
    """Serve tests/web_harness/ on a loopback port of its own; yield its origin."""
    app = web.Application()
    app.router.add_static("/", HARNESS)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass
class Browser:
    """One participant: a page in a browser context of its own."""

    name: str
    page: Page
    console: list[str] = field(default_factory=list)
    participant_id: str = ""

    def __post_init__(self) -> None:
        def on_console(message: ConsoleMessage) -> None:
            self.console.append(f"{message.type}: {message.text}")

        def on_error(error: PageError) -> None:
            self.console.append(f"pageerror: {error}")

        self.page.on("console", on_console)
        self.page.on("pageerror", on_error)

    async def call(self, expression: str, arg: Any = None) -> Any:
        return await self.page.evaluate(expression, arg)

    async def decoded(self) -> dict[str, int]:
        frames: dict[str, int] = await self.call("harness.decoded()")
        return frames

    async def errors(self) -> list[str]:
        found: list[str] = await self.call("harness.errors")
        return found


async def until(
    check: Callable[[], Awaitable[bool]], deadline: float, what: Callable[[], Awaitable[str]]
) -> None:
    """Poll ``check`` until it holds; fail with ``what()`` once ``deadline`` seconds pass."""
    end = time.monotonic() + deadline
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:.0f}s: {await what()}")
        await asyncio.sleep(0.25)


async def wait_decoding(
    viewers: list[Browser], sources: dict[str, list[str]], deadline: float
) -> None:
    """Wait until every viewer decoded FRAMES more frames from each of its sources than it
    had when it first saw that source decode at all (so a stalled track cannot pass)."""
    first: dict[tuple[str, str], int] = {}
    latest: dict[str, dict[str, int]] = {}

    async def check() -> bool:
        done = True
        for viewer in viewers:
            latest[viewer.name] = frames = await viewer.decoded()
            for source in sources[viewer.name]:
                count = frames.get(source, 0)
                if count > 0:
                    first.setdefault((viewer.name, source), count)
                if (viewer.name, source) not in first or count < first[
                    (viewer.name, source)
                ] + FRAMES:
                    done = False
        return done

    async def what() -> str:
        errors = {v.name: await v.errors() for v in viewers}
        return f"decoded {latest}, wanted {sources}; page errors {errors}"

    await until(check, deadline, what)


async def test_three_browsers_decode_each_other_through_the_sfu_and_survive_a_leave(
    services: Services, tmp_path: Path
) -> None:
    chromium = chromium_or_skip()
    from playwright.async_api import async_playwright

    async with contextlib.AsyncExitStack() as stack:
        origin = await stack.enter_async_context(harness_site())
        # The harness page is served from its own origin, which the server must accept.
        custom = Services.build(
            replace(services.settings, ws_allowed_origins=(origin,)), services.pool
        )
        sfu = await stack.enter_async_context(sfu_stack(custom, with_sfu=True))
        accounts = await quick_accounts(custom, 3)
        room = await create_room(sfu.http, accounts[0])
        for member in accounts[1:]:
            await add_member(sfu.http, room, accounts[0], member)

        playwright = await stack.enter_async_context(async_playwright())
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        stack.push_async_callback(browser.close)
        browsers: list[Browser] = []
        for name in ("alice", "bob", "carol"):
            context = await browser.new_context(viewport={"width": 560, "height": 200})
            page = await context.new_page()
            peer = Browser(name, page)
            await page.goto(f"{origin}/index.html")
            browsers.append(peer)

        try:
            for peer, account in zip(browsers, accounts, strict=True):
                await peer.call(
                    "([u, t]) => harness.connect(u, t)", [sfu.ws_url, account.access_token]
                )
            alice, bob, carol = browsers
            entered = await alice.call("r => harness.enterCall(r, null)", room)
            call_id = entered["callId"]
            alice.participant_id = entered["participantId"]
            for peer in (bob, carol):
                joined = await peer.call("([r, c]) => harness.enterCall(r, c)", [room, call_id])
                peer.participant_id = joined["participantId"]

            def others(of: Browser, among: list[Browser]) -> list[str]:
                return [p.participant_id for p in among if p is not of]

            await wait_decoding(
                browsers, {p.name: others(p, browsers) for p in browsers}, MEDIA_DEADLINE
            )
            for peer in browsers:
                assert await peer.errors() == [], peer.name
                await peer.page.screenshot(path=str(tmp_path / f"{peer.name}-3way.png"))

            # Carol leaves; the SFU renegotiates her tracks away and the other two keep
            # decoding each other (through re-offers the browsers must accept).
            answered = {p.name: await p.call("harness.offersAnswered") for p in (alice, bob)}
            await carol.call("harness.leave()")
            remaining = [alice, bob]

            async def renegotiated() -> bool:
                for p in remaining:
                    if await p.call("harness.offersAnswered") <= answered[p.name]:
                        return False
                return True

            async def offers() -> str:
                return str({p.name: await p.call("harness.offersAnswered") for p in remaining})

            await until(renegotiated, AFTER_LEAVE_DEADLINE, offers)
            await wait_decoding(
                remaining, {p.name: others(p, remaining) for p in remaining}, AFTER_LEAVE_DEADLINE
            )
            for peer in browsers:
                assert await peer.errors() == [], peer.name
            for peer in remaining:  # a leave is a leave, not media the SFU lost
                states = await peer.call("harness.callStates")
                assert not [s for s in states if s.get("reason") == "media_lost"], states

            # Each browser reported its first decoded frame; the call counts once, as media.
            async def reported() -> bool:
                text = sfu.services.metrics.render().decode()
                return (
                    'boltorezka_call_media_total{outcome="media"} 1.0' in text
                    and "boltorezka_call_first_frame_seconds_count 3.0" in text
                )

            async def metrics() -> str:
                lines = sfu.services.metrics.render().decode().splitlines()
                return str(
                    [line for line in lines if "call_media" in line or "first_frame" in line]
                )

            await until(reported, 10, metrics)
        except BaseException:
            for peer in browsers:
                print(f"--- {peer.name} console\n" + "\n".join(peer.console))
            print("--- sfu log\n" + sfu.sfu_log.read_text())
            raise
        finally:
            for peer in browsers:
                with contextlib.suppress(Exception):
                    await peer.page.screenshot(path=str(tmp_path / f"{peer.name}-end.png"))
