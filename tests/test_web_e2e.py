"""The web app in headless Chromium against the real serving stack: ``boltorezka serve`` as
a subprocess on PostgreSQL, with coturn as its TURN relay.

Two people (two browser contexts) sign up, chat, see each other typing and online, edit and
delete; a peer-to-peer video call decodes frames on both sides, directly and then forced
through the relay; three people in one call move to the SFU (a second ``boltorezka serve``
that spawns ``boltorezka sfu``), each decodes both others, and the two left after a leave
keep decoding each other; a reload and a dropped connection resume the chat with nothing
missing and nothing twice; the phone-sized layout works; errors read as sentences.

Debian's chromium only (``/usr/bin/chromium``; Playwright never downloads a browser here).
Without it, or without coturn, the tests are skipped, except on CI (``CI=true``), where they
must run. Screenshots go to a folder under pytest's temporary directory; with
``BOLTOREZKA_WEB_SCREENSHOTS=<dir>`` the ones the README shows are copied there as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from tests.test_readme_walkthrough import Server, running_server
from tests.test_web_sdk import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.turn import TurnServer, run_coturn

SECRET = "web-e2e-turn-secret-0123456789abcdef"
PASSWORD = "correct horse battery"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
MEDIA_TIMEOUT = 30.0
# Three pages encoding and decoding at once through the SFU on two busy cores.
SFU_MEDIA_TIMEOUT = 60.0
SFU_START_TIMEOUT = 60.0
# Frames each page must decode from a remote tile beyond the count it first saw there, so a
# stalled track cannot pass.
FRAMES = 10
# Records every frame the page sends on its WebSocket, so a test can see how it resumed.
RECORD_SENT_FRAMES = """
(() => {
  const Native = window.WebSocket;
  window.__sentFrames = [];
  window.WebSocket = class extends Native {
    send(data) {
      try { window.__sentFrames.push(JSON.parse(data)); } catch {}
      return super.send(data);
    }
  };
})();
"""

_names = itertools.count(1)


@pytest.fixture(scope="module")
def coturn() -> Iterator[TurnServer]:
    require_chromium()
    with run_coturn(SECRET) as server:
        yield server


def _execute(pg_url: str, sql: str) -> None:
    async def execute() -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    # In a thread of its own: once Playwright's sync API runs, this thread has an event loop
    # running, and asyncio.run refuses to start another one in it.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, execute()).result()


@contextlib.contextmanager
def own_schema(pg_url: str) -> Iterator[str]:
    """A database URL whose connections use a new schema; dropped afterwards."""
    schema = f"t_web_{uuid.uuid4().hex[:12]}"
    _execute(pg_url, f"CREATE SCHEMA {schema}")
    try:
        yield f"{pg_url}?search_path={schema}"
    finally:
        _execute(pg_url, f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="module")
def schema_url(pg_url: str) -> Iterator[str]:
    with own_schema(pg_url) as url:
        yield url


def server_env(database_url: str, coturn: TurnServer) -> dict[str, str]:
    return {
        "BOLTOREZKA_DATABASE_URL": database_url,
        "BOLTOREZKA_SFU": "off",
        "BOLTOREZKA_TURN_SECRET": SECRET,
        "BOLTOREZKA_TURN_URIS": coturn.uri,
        # Every test signs people up from 127.0.0.1; the per-address limits are for attacks.
        "BOLTOREZKA_REGISTER_RATE_PER_MINUTE": "1000",
        "BOLTOREZKA_LOGIN_RATE_PER_MINUTE": "1000",
        "BOLTOREZKA_WS_CONNECT_RATE_PER_MINUTE": "1000",
        "BOLTOREZKA_LOG_LEVEL": "warning",
    }


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, schema_url: str, coturn: TurnServer
) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("web-e2e")
    env = server_env(schema_url, coturn)
    with running_server(work / "data", work / "server.log", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def sfu_server(
    tmp_path_factory: pytest.TempPathFactory, pg_url: str, coturn: TurnServer
) -> Iterator[Server]:
    """``boltorezka serve`` as deployed on one host: it spawns ``boltorezka sfu`` itself, and
    a call with more than two participants moves to it. A schema of its own: two nodes on
    one database without a shared bus would each take the other's calls for orphans."""
    work = tmp_path_factory.mktemp("web-e2e-sfu")
    with own_schema(pg_url) as url:
        env = server_env(url, coturn) | {
            "BOLTOREZKA_SFU": "spawn",
            "BOLTOREZKA_SFU_THRESHOLD": "2",
            "BOLTOREZKA_SFU_ICE_ADDRESSES": "127.0.0.1",
            # The SFU child logs "sfu started" at info once it listens on the bus.
            "BOLTOREZKA_LOG_LEVEL": "info",
        }
        with running_server(work / "data", work / "server.log", env=env) as running:
            wait_until(
                lambda: "sfu started" in running.log.read_text(errors="replace"),
                SFU_START_TIMEOUT,
                "the spawned SFU to start",
            )
            yield running


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Browser]:
    """Started after the server: Playwright's sync API keeps an event loop running in this
    thread, and the schema fixture needs asyncio.run before and after it."""
    require_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@dataclass
class Person:
    username: str
    display_name: str
    context: BrowserContext
    page: Page
    problems: list[str] = field(default_factory=list)

    def check_clean(self) -> None:
        assert not self.problems, f"{self.username}'s page reported: {self.problems}"


@pytest.fixture
def people(browser: Browser, server: Server) -> Iterator[Callable[..., Person]]:
    """Signs a new person up in a browser context of their own; closes them afterwards."""
    opened: list[Person] = []

    def open_person(
        display_name: str,
        *,
        viewport: dict[str, int] = DESKTOP,
        phone: bool = False,
        at: Server = server,
    ) -> Person:
        # The schema is this module's own, so a counter keeps names unique (and readable).
        username = f"{display_name.lower()}{next(_names)}"
        context = browser.new_context(
            base_url=at.base_url,
            viewport=viewport,  # type: ignore[arg-type]
            is_mobile=phone,
            has_touch=phone,
            device_scale_factor=1,
            color_scheme="light",
        )
        context.set_default_timeout(15_000)
        context.add_init_script(RECORD_SENT_FRAMES)
        page = context.new_page()
        person = Person(username, display_name, context, page)
        page.on("pageerror", lambda error: person.problems.append(f"uncaught: {error}"))
        page.on(
            "console",
            lambda message: (
                person.problems.append(f"console: {message.text}")
                if "Content Security Policy" in message.text
                else None
            ),
        )
        opened.append(person)
        sign_up(person)
        return person

    yield open_person
    for person in opened:
        person.context.close()
    for person in opened:
        person.check_clean()


def sign_up(person: Person) -> None:
    page = person.page
    page.goto("/")
    page.get_by_role("tab", name="Create account").click()
    page.fill("#auth-username", person.username)
    page.fill("#auth-password", PASSWORD)
    page.fill("#auth-display", person.display_name)
    page.locator("form button[type=submit]").click()
    page.wait_for_selector(".sidebar")
    page.wait_for_selector(".conn.open")


def create_room(person: Person, name: str, topic: str = "") -> str:
    page = person.page
    page.get_by_role("button", name="New room").click()
    page.fill("#room-name", name)
    if topic:
        page.fill("#room-topic", topic)
    page.locator("dialog button[type=submit]").click()
    page.wait_for_selector(f".room-head h1:has-text('{name}')")
    return room_id(person)


def room_id(person: Person) -> str:
    hash_part: str = person.page.evaluate("location.hash")
    return hash_part.removeprefix("#/room/")


def join_public_room(person: Person, name: str) -> None:
    page = person.page
    page.get_by_role("button", name="Browse").click()
    page.locator(f".result:has-text('{name}')").get_by_role("button", name="Join").click()
    page.wait_for_selector(f".room-head h1:has-text('{name}')")


def send(person: Person, text: str) -> None:
    page = person.page
    page.fill(".composer textarea", text)
    page.keyboard.press("Enter")
    wait_for_message(person, text)


def wait_for_message(person: Person, text: str) -> None:
    person.page.locator(".messages .msg .text", has_text=text).first.wait_for()


def timeline(person: Person) -> list[tuple[int, str]]:
    """(seq, text) of every message the page shows, top to bottom."""
    found: list[list[Any]] = person.page.evaluate(
        """() => [...document.querySelectorAll('.messages .msg')].map(m =>
             [Number(m.dataset.seq), m.querySelector('.text').firstChild.textContent])"""
    )
    return [(int(seq), str(text)) for seq, text in found]


def sent(person: Person, kind: str) -> list[dict[str, Any]]:
    """The payloads of the frames of type ``kind`` the page sent, since it loaded."""
    frames: list[dict[str, Any]] = person.page.evaluate("window.__sentFrames")
    return [f["payload"] for f in frames if f.get("type") == kind]


def sent_joins(person: Person) -> list[dict[str, Any]]:
    return sent(person, "room.join")


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def call_stats(person: Person) -> list[dict[str, Any]]:
    stats: list[dict[str, Any]] = person.page.evaluate("window.boltorezka.callStats()")
    return stats


def wait_media(person: Person, *, candidate: str | None = None) -> list[dict[str, Any]]:
    """Until every connection of the call is connected and has decoded remote video."""

    def flowing() -> list[dict[str, Any]] | None:
        stats = call_stats(person)
        good = stats and all(
            s["connectionState"] == "connected"
            and s["framesDecoded"] > 0
            and (candidate is None or s["candidateType"] == candidate)
            for s in stats
        )
        return stats if good else None

    stats: list[dict[str, Any]] = wait_until(flowing, MEDIA_TIMEOUT, f"{person.username}'s media")
    return stats


def call_id(person: Person) -> str:
    value: str = person.page.evaluate("window.boltorezka.call.call.callId")
    return value


def set_relay_only(person: Person) -> None:
    page = person.page
    page.get_by_role("button", name="Settings").click()
    page.locator("#relay-only").check()
    page.locator("dialog").get_by_role("button", name="Done").click()
    assert page.evaluate("localStorage.getItem('boltorezka.relayOnly')") == "1"


def start_and_join_call(caller: Person, callee: Person) -> None:
    caller.page.get_by_role("button", name="Start a video call").click()
    caller.page.wait_for_selector(".call .tile.local")
    callee.page.get_by_role("button", name="Join call").click()
    callee.page.wait_for_selector(".call .tile.local")


# Video frames each remote tile's track decoded, by the tile's participant id: what the page
# shows, not only what its connections receive.
TILE_FRAMES = """
async () => {
  const call = window.boltorezka.call?.call;
  if (!call) return {};
  const connections = [...call.peers.values(), ...(call.sfu ? [call.sfu] : [])];
  const decoded = new Map();
  for (const { pc } of connections) {
    for (const receiver of pc.getReceivers()) {
      if (receiver.track.kind !== 'video') continue;
      (await receiver.getStats()).forEach((entry) => {
        if (entry.type === 'inbound-rtp') decoded.set(receiver.track.id, entry.framesDecoded ?? 0);
      });
    }
  }
  const out = {};
  for (const tile of document.querySelectorAll('.call .tile:not(.local)')) {
    const stream = tile.querySelector('video').srcObject;
    const counts = (stream?.getVideoTracks() ?? []).map((track) => decoded.get(track.id) ?? 0);
    out[tile.dataset.participantId] = Math.max(0, ...counts);
  }
  return out;
}
"""


def tile_frames(person: Person) -> dict[str, int]:
    frames: dict[str, int] = person.page.evaluate(TILE_FRAMES)
    return frames


def participant_id(person: Person) -> str:
    value: str = person.page.evaluate("window.boltorezka.call.call.participantId")
    return value


def wait_decoding(viewers: list[tuple[Person, list[str]]], timeout: float) -> None:
    """Until every viewer's tile of each of its sources decoded FRAMES frames more than when
    that tile first decoded anything."""
    first: dict[tuple[str, str], int] = {}
    latest: dict[str, dict[str, int]] = {}

    def done() -> bool:
        complete = True
        for viewer, sources in viewers:
            latest[viewer.username] = frames = tile_frames(viewer)
            for source in sources:
                count = frames.get(source, 0)
                if count > 0:
                    first.setdefault((viewer.username, source), count)
                start = first.get((viewer.username, source))
                if start is None or count < start + FRAMES:
                    complete = False
        return complete

    wanted = {viewer.username: sources for viewer, sources in viewers}
    wait_until(done, timeout, f"decoded frames {wanted}; {latest}")


def screenshot(person: Person, shots: Path, name: str, *, publish: bool = False) -> None:
    path = shots / name
    person.page.screenshot(path=str(path))
    target = os.environ.get("BOLTOREZKA_WEB_SCREENSHOTS")
    if publish and target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / name)


# --- tests -----------------------------------------------------------------------------------


def test_two_people_chat_with_typing_presence_edits_and_history(
    people: Callable[..., Person], shots: Path
) -> None:
    alice, bob = people("Alice"), people("Bob")
    name = "general"
    create_room(alice, name, "Say hello")
    join_public_room(bob, name)

    # Presence: each sees the other online in the members panel.
    alice.page.wait_for_selector(f".member.online:has-text('{bob.display_name}')")
    bob.page.wait_for_selector(f".member.online:has-text('{alice.display_name}')")

    # Typing: bob's keystrokes show on alice's screen, and stop when he sends.
    bob.page.fill(".composer textarea", "hello ther")
    alice.page.wait_for_selector(f".typing:has-text('{bob.display_name} is typing')")
    bob.page.keyboard.press("Enter")
    wait_for_message(alice, "hello ther")
    alice.page.wait_for_selector(".typing:empty")

    send(alice, f"Hi @{bob.username}, welcome!")
    wait_for_message(bob, "welcome!")
    bob.page.locator(".mention-text", has_text=f"@{bob.username}").wait_for()

    # Edit and delete one's own messages; the other side sees both.
    seq = bob.page.locator(".msg.own", has_text="hello ther").get_attribute("data-seq")
    own = bob.page.locator(f".messages .msg[data-seq='{seq}']")
    own.hover()
    own.get_by_role("button", name="Edit message").click()
    editor = own.locator("textarea")
    editor.fill("hello there")
    editor.press("Enter")
    alice.page.locator(".msg", has_text="hello there").locator(".edited").wait_for()
    screenshot(alice, shots, "chat.png", publish=True)
    send(bob, "a typo I regret")
    seq = bob.page.locator(".msg.own", has_text="a typo I regret").get_attribute("data-seq")
    regret = bob.page.locator(f".messages .msg[data-seq='{seq}']")
    regret.hover()
    regret.get_by_role("button", name="Delete message").click()
    regret.get_by_role("button", name="Delete", exact=True).click()
    alice.page.locator(".msg.deleted", has_text="This message was deleted.").wait_for()
    assert "a typo I regret" not in [text for _, text in timeline(alice)]

    # Unread counts and mentions for the rooms not open; opening one reads it, for good.
    side = "design-review"
    general = room_id(bob)
    create_room(alice, side)
    join_public_room(bob, side)
    bob.page.goto(f"/#/room/{general}")
    bob.page.wait_for_selector(f".room-head h1:has-text('{name}')")
    send(alice, "news in the side room")
    send(alice, f"@{bob.username} have a look")
    item = bob.page.locator(f".room-item:has-text('{side}')")
    item.locator(".badge:not(.mention)", has_text="2").wait_for()
    item.locator(".badge.mention").wait_for()
    item.click()
    wait_for_message(bob, "have a look")
    item.locator(".badge").first.wait_for(state="detached")
    bob.page.reload()
    bob.page.wait_for_selector(".conn.open")
    assert bob.page.locator(f".room-item:has-text('{side}') .badge").count() == 0
    bob.page.goto(f"/#/room/{general}")

    # Scroll-back: more history than one page; a newcomer loads it on demand, in order.
    alice.page.goto(f"/#/room/{general}")
    alice.page.wait_for_selector(f".room-head h1:has-text('{name}')")
    for i in range(1, 61):
        alice.page.evaluate(
            "([room, body]) => window.boltorezka.realtime.sendMessage(room, body)",
            [general, f"backlog {i}"],
        )
    wait_for_message(bob, "backlog 60")
    carol = people("Carol")
    join_public_room(carol, name)
    wait_for_message(carol, "backlog 60")
    assert len(timeline(carol)) == 50
    carol.page.locator(".timeline-start").scroll_into_view_if_needed()
    # Three messages before the backlog: 63 in all, the first 13 from the older page.
    wait_until(lambda: len(timeline(carol)) == 63, 10, "the older page")
    assert [seq for seq, _ in timeline(carol)] == list(range(1, 64))
    assert timeline(carol)[0] == (1, "hello there")


def test_p2p_video_call_decodes_frames_on_both_sides(
    people: Callable[..., Person], shots: Path
) -> None:
    alice, bob = people("Alice"), people("Bob")
    name = "standup"
    create_room(alice, name)
    join_public_room(bob, name)
    send(alice, "Video?")
    wait_for_message(bob, "Video?")
    start_and_join_call(alice, bob)

    for person in (alice, bob):
        stats = wait_media(person)
        assert len(stats) == 1
        # Frames reach the screen too, not only the decoder.
        person.page.wait_for_function(
            "() => [...document.querySelectorAll('.tile:not(.local) video')]"
            ".some(v => v.videoWidth > 0 && v.currentTime > 0)"
        )
    screenshot(bob, shots, "call.png", publish=True)

    # Bob's socket drops mid-call: he joins the call again as the same participant and
    # restarts ICE, and his video keeps reaching Alice.
    participant = bob.page.evaluate("window.boltorezka.call.call.participantId")
    bob.page.evaluate("window.boltorezka.realtime.reconnect()")
    wait_until(
        lambda: any(offer.get("iceRestart") for offer in sent(bob, "rtc.offer")),
        MEDIA_TIMEOUT,
        "an ICE-restart offer from Bob",
    )
    assert sent(bob, "call.join") == [{"callId": call_id(bob)}] * 2, "joined, then rejoined"
    assert bob.page.evaluate("window.boltorezka.call.call.participantId") == participant
    decoded = call_stats(alice)[0]["framesDecoded"]
    wait_until(
        lambda: (
            (s := call_stats(alice)[0])["connectionState"] == "connected"
            and s["framesDecoded"] > decoded + 10
        ),
        MEDIA_TIMEOUT,
        "Bob's video after the ICE restart",
    )

    # Mute: the microphone track stops sending sound; the call goes on.
    alice.page.get_by_role("button", name="Mute microphone").click()
    assert alice.page.evaluate("window.boltorezka.call.stream.getAudioTracks()[0].enabled") is False
    alice.page.get_by_role("button", name="Unmute microphone").wait_for()

    # Leaving: bob's tile for alice goes, and the room's call ends with the last one out.
    alice.page.get_by_role("button", name="Leave call").click()
    alice.page.wait_for_selector(".call", state="detached")
    bob.page.wait_for_function("() => document.querySelectorAll('.tile:not(.local)').length === 0")
    bob.page.get_by_role("button", name="Leave call").click()
    bob.page.wait_for_selector(".call", state="detached")
    alice.page.wait_for_selector(".banner:has-text('A call is going on')", state="hidden")


def test_call_forced_through_the_turn_relay(
    people: Callable[..., Person], coturn: TurnServer
) -> None:
    alice, bob = people("Alice"), people("Bob")
    name = "relayed"
    create_room(alice, name)
    join_public_room(bob, name)
    for person in (alice, bob):
        set_relay_only(person)
    start_and_join_call(alice, bob)

    for person in (alice, bob):
        wait_media(person, candidate="relay")
        servers: list[dict[str, Any]] = person.page.evaluate(
            "window.boltorezka.call.call.iceServers"
        )
        assert coturn.uri in json.dumps(servers), servers
        assert servers[0]["username"] and servers[0]["credential"]
    alice.page.get_by_role("button", name="Leave call").click()
    bob.page.get_by_role("button", name="Leave call").click()
    bob.page.wait_for_selector(".call", state="detached")


def test_three_people_call_through_the_sfu_and_two_go_on_after_a_leave(
    people: Callable[..., Person], sfu_server: Server, shots: Path
) -> None:
    alice, bob, carol = (people(name, at=sfu_server) for name in ("Alice", "Bob", "Carol"))
    everyone = (alice, bob, carol)
    warnings: dict[str, list[str]] = {person.username: [] for person in everyone}

    def collect(into: list[str]) -> Callable[[ConsoleMessage], None]:
        def on_console(message: ConsoleMessage) -> None:
            if message.type == "warning" and message.text.startswith("call: "):
                into.append(message.text)

        return on_console

    for person in everyone:
        # The call view logs what the call survived (a failed offer, say) as `call: …`.
        person.page.on("console", collect(warnings[person.username]))
    name = "huddle"
    create_room(alice, name)
    for person in (bob, carol):
        join_public_room(person, name)
    for person in (bob, carol):
        person.page.wait_for_selector(f".member.online:has-text('{alice.display_name}')")

    # Alice starts it; Bob joins (two: peer to peer), then Carol (three: past the threshold,
    # the server moves the call to the SFU and everyone reconnects through it).
    alice.page.get_by_role("button", name="Start a video call").click()
    alice.page.wait_for_selector(".call .tile.local")
    for person in (bob, carol):
        person.page.get_by_role("button", name="Join call").click()
        person.page.wait_for_selector(".call .tile.local")
    for person in everyone:
        person.page.wait_for_function(
            "() => (c => c.mode === 'sfu' && c.sfu !== null && c.peers.size === 0)"
            "(window.boltorezka.call.call)",
            timeout=SFU_MEDIA_TIMEOUT * 1000,
        )
    ids = {person.username: participant_id(person) for person in everyone}

    def sources(viewer: Person, among: tuple[Person, ...]) -> list[str]:
        return [ids[p.username] for p in among if p is not viewer]

    wait_decoding([(p, sources(p, everyone)) for p in everyone], SFU_MEDIA_TIMEOUT)
    for person in everyone:
        tiles = person.page.locator(".call .tile:not(.local)")
        assert sorted(tiles.evaluate_all("ts => ts.map(t => t.dataset.participantId)")) == sorted(
            sources(person, everyone)
        ), "one tile per other participant"
        for other in everyone:
            if other is not person:
                tiles.filter(has_text=other.display_name).wait_for()
        # Video that plays is not "Connecting…": the SFU connection's state is every tile's.
        person.page.wait_for_function(
            "() => [...document.querySelectorAll('.call .tile:not(.local) .state')]"
            ".every(s => s.textContent === '')"
        )
        screenshot(person, shots, f"sfu-{person.display_name.lower()}.png", publish=True)

    # Carol leaves from the call panel. The SFU re-offers the other two their connections
    # without her tracks; they answer, drop her tile and keep decoding each other.
    answers = {p.username: len(sent(p, "rtc.answer")) for p in (alice, bob)}
    carol.page.get_by_role("button", name="Leave call").click()
    carol.page.wait_for_selector(".call", state="detached")
    remaining = (alice, bob)
    for person in remaining:
        person.page.wait_for_function(
            "id => !document.querySelector(`.call .tile[data-participant-id='${id}']`)",
            arg=ids[carol.username],
        )
        person.page.wait_for_function(
            "n => window.__sentFrames.filter(f => f.type === 'rtc.answer').length > n",
            arg=answers[person.username],
            timeout=SFU_MEDIA_TIMEOUT * 1000,
        )
    wait_decoding([(p, sources(p, remaining)) for p in remaining], SFU_MEDIA_TIMEOUT)
    for person in remaining:
        assert person.page.evaluate("window.boltorezka.call.call.mode") == "sfu"
        assert person.page.evaluate("window.boltorezka.call.call.state.reason ?? null") != (
            "media_lost"
        ), "a leave is a leave, not media the SFU lost"
    assert warnings == {person.username: [] for person in everyone}, warnings

    for person in remaining:
        person.page.get_by_role("button", name="Leave call").click()
        person.page.wait_for_selector(".call", state="detached")
    alice.page.wait_for_selector(".banner:has-text('A call is going on')", state="hidden")


def test_reload_and_dropped_connection_resume_with_nothing_missing(
    people: Callable[..., Person],
) -> None:
    alice, bob = people("Alice"), people("Bob")
    name = "resume"
    create_room(alice, name)
    join_public_room(bob, name)
    for i in range(1, 4):
        send(alice, f"before {i}")
    wait_for_message(bob, "before 3")
    url = bob.page.url

    # The page goes away; messages arrive meanwhile; the page comes back and resumes.
    bob.page.goto("about:blank")
    for i in range(1, 4):
        send(alice, f"while away {i}")
    bob.page.goto(url)
    wait_for_message(bob, "while away 3")
    expected = [f"before {i}" for i in range(1, 4)] + [f"while away {i}" for i in range(1, 4)]
    assert timeline(bob) == list(enumerate(expected, start=1))
    assert {"roomId": room_id(bob), "lastSeq": 3} in sent_joins(bob), sent_joins(bob)

    # The network drops: nothing can reconnect until it is back; then the room resumes.
    bob.context.set_offline(True)
    bob.page.evaluate("window.boltorezka.realtime.reconnect()")
    bob.page.wait_for_selector(".banner.offline:has-text('Reconnecting')")
    for i in range(1, 3):
        send(alice, f"while offline {i}")
    time.sleep(0.5)  # a reconnect attempt or two fail meanwhile
    assert "while offline 1" not in [text for _, text in timeline(bob)]
    bob.context.set_offline(False)
    wait_for_message(bob, "while offline 2")
    bob.page.wait_for_selector(".banner.offline", state="hidden")
    expected += [f"while offline {i}" for i in range(1, 3)]
    assert timeline(bob) == list(enumerate(expected, start=1))
    assert {"roomId": room_id(bob), "lastSeq": 6} in sent_joins(bob), sent_joins(bob)

    # And the resumed socket is live: the next message arrives once, right after.
    send(alice, "after")
    wait_for_message(bob, "after")
    assert timeline(bob)[-1] == (9, "after") and len(timeline(bob)) == 9


def test_phone_sized_window(people: Callable[..., Person], shots: Path) -> None:
    dave = people("Dave")
    name = "on-the-go"
    create_room(dave, name, "Pocket-sized")
    send(dave, "Anyone around?")
    carol = people("Carol", viewport=PHONE, phone=True)
    page = carol.page
    join_public_room(carol, name)
    # One column at a time: the room fills the screen, with a way back to the list.
    assert not page.locator(".sidebar").is_visible()
    back = page.get_by_role("link", name="Back to rooms")
    assert back.is_visible()
    send(carol, f"Here, @{dave.username}! Typing from my phone.")
    wait_for_message(dave, "Typing from my phone")
    send(dave, "Nice, the layout fits.")
    wait_for_message(carol, "the layout fits")
    width: int = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "nothing sticks out sideways"
    screenshot(carol, shots, "phone.png", publish=True)
    back.click()
    page.wait_for_selector(".sidebar")
    assert page.locator(f".room-item:has-text('{name}')").is_visible()
    assert not page.locator(".room-head").is_visible()


def test_errors_read_as_sentences(browser: Browser, server: Server) -> None:
    context = browser.new_context(base_url=server.base_url, viewport=DESKTOP)  # type: ignore[arg-type]
    try:
        page = context.new_page()
        page.goto("/")
        page.fill("#auth-username", "nobody-like-this")
        page.fill("#auth-password", "not the password")
        page.locator("form button[type=submit]").click()
        alert = page.get_by_role("alert")
        alert.get_by_text("That username and password do not match.").wait_for()

        page.get_by_role("tab", name="Create account").click()
        page.fill("#auth-username", "no spaces allowed")
        page.fill("#auth-password", PASSWORD)
        page.locator("form button[type=submit]").click()
        alert.get_by_text("Usernames are 3 to 32 characters").wait_for()
        assert "validation_failed" not in alert.inner_text()

        taken = f"taken{uuid.uuid4().hex[:6]}"
        for attempt in range(2):
            if attempt:
                page.evaluate("localStorage.clear()")
                page.goto("/")
                page.get_by_role("tab", name="Create account").click()
            page.fill("#auth-username", taken)
            page.fill("#auth-password", PASSWORD)
            page.locator("form button[type=submit]").click()
            if not attempt:
                page.wait_for_selector(".sidebar")
        page.get_by_role("alert").get_by_text("That username is taken. Try another one.").wait_for()
    finally:
        context.close()
