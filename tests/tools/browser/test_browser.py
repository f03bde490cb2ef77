"""The browser tools, for real: Chromium driven through the runtime by a scripted
model, against pages a local server (a process of its own) serves.

A page is read, its elements listed with stable references, clicked, filled, typed
into, scrolled and screenshotted into the workspace; a page that never finishes
loading, or hangs its renderer, fails in bounded time; bad arguments are refused
before anything starts; the tools exist only when the operator enables them; the
policy asks before a tainted session acts. (The attacks: test_browser_attacks.py.)
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import eventually
from tests.tools.browser._kit import (
    ALLOW,
    CHROMIUM,
    TOOLS,
    call,
    ok,
    ref,
    require_chromium,
    session_page,
)

from agentd.assembly import Runtime
from agentd.config import BrowserConfig, Settings
from agentd.errors import InvalidInput

require_chromium()

# (``rt`` is the module's runtime, on the module's event loop: conftest.py.)
pytestmark = pytest.mark.asyncio(loop_scope="module")


# -- reading and acting ----------------------------------------------------------------


async def test_open_returns_the_readable_text_and_taints(rt: Runtime, pages: int) -> None:
    finished = await call(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    assert not finished["is_error"], finished
    out = finished["output"]
    assert "title: Home page" in out and f"url: http://127.0.0.1:{pages}/" in out
    assert "Welcome home" in out and "The quick brown fox." in out
    assert "Second page" not in out  # the <main>, not the nav
    assert finished["tainted"] == "its output comes from outside"


async def test_long_text_is_cut(rt: Runtime, pages: int) -> None:
    out = await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/big"})
    assert out.endswith("[text cut at 20000 characters]")
    assert 20_000 < len(out) < 20_200


async def test_observe_lists_elements_with_stable_refs(rt: Runtime, pages: int) -> None:
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    first = await ok(rt, "browser_observe", {})
    assert "button 'Change me'" in first and "input[text] 'Query'" in first
    assert "a 'Second page' href='/second'" in first
    assert "placeholder='press here'" in first
    refs = re.findall(r"^(e\d+) ", first, re.MULTILINE)
    assert refs == [f"e{i}" for i in range(9)]  # 2 links, 3 buttons, 4 fields
    again = await ok(rt, "browser_observe", {})
    assert again == first  # the same references while the page does not navigate


async def test_click_changes_the_page(rt: Runtime, pages: int) -> None:
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    button = ref(await ok(rt, "browser_observe", {}), "Change me")
    out = await ok(rt, "browser_act", {"action": "click", "ref": button})
    assert out.startswith(f"click {button}: done") and "Clicked: yes" in out


async def test_fill_and_submit_a_form(rt: Runtime, pages: int) -> None:
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    observed = await ok(rt, "browser_observe", {})
    await ok(rt, "browser_act", {"action": "fill", "ref": ref(observed, "Query"),
                                  "value": "red fox"})
    assert "value='red fox'" in await ok(rt, "browser_observe", {})
    out = await ok(rt, "browser_act", {"action": "click", "ref": ref(observed, "Search")})
    assert "title: Results" in out and "You searched for: red fox" in out


async def test_type_and_press_enter(rt: Runtime, pages: int) -> None:
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    observed = await ok(rt, "browser_observe", {})
    field = next(line for line in observed.splitlines() if "press here" in line).split()[0]
    await ok(rt, "browser_act", {"action": "type", "ref": field, "value": "abc"})
    out = await ok(rt, "browser_act", {"action": "press", "ref": field, "value": "Enter"})
    assert "Pressed: Enter" in out
    # The form's field, Enter: the form is submitted.
    await ok(rt, "browser_act", {"action": "type", "ref": ref(observed, "Query"),
                                  "value": "typed"})
    out = await ok(rt, "browser_act", {"action": "press", "ref": ref(observed, "Query"),
                                        "value": "Enter"})
    assert "You searched for: typed" in out


async def test_select_and_check(rt: Runtime, pages: int) -> None:
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    observed = await ok(rt, "browser_observe", {})
    assert "select 'Size' value='s'" in observed and "'Agree' unchecked" in observed
    await ok(rt, "browser_act", {"action": "select", "ref": ref(observed, "Size"),
                                  "value": "Large"})
    await ok(rt, "browser_act", {"action": "check", "ref": ref(observed, "Agree")})
    after = await ok(rt, "browser_observe", {})
    assert "select 'Size' value='l'" in after and "'Agree' checked" in after


async def test_scroll(rt: Runtime, pages: int) -> None:
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    far = ref(await ok(rt, "browser_observe", {}), "Far away")
    # A screenshot of the top does not hold the far button; scrolling moves the page.
    position = "() => window.scrollY"
    await ok(rt, "browser_act", {"action": "scroll", "value": "down"})
    async with session_page(rt) as page:
        assert await page.evaluate(position) > 0
    await ok(rt, "browser_act", {"action": "scroll", "ref": far})
    async with session_page(rt) as page:
        assert await page.evaluate(position) > 2000
    out = await ok(rt, "browser_act", {"action": "click", "ref": far})
    assert "far clicked" in out


async def test_screenshot_into_the_workspace(rt: Runtime, pages: int) -> None:
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    out = await ok(rt, "browser_screenshot", {"path": "shots/home.png"})
    assert "to shots/home.png" in out
    agent = await rt.get_agent("web")
    shot = rt.settings.workspaces_dir / agent.id / "shots" / "home.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_a_screenshot_reaches_the_model_as_an_image(rt: Runtime, pages: int) -> None:
    """The screenshot is the result's image: kept once in the store (not in the log),
    given to the model as an image (the scripted model says what it saw)."""
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    settings = dict((await rt.get_agent("web")).settings)
    settings.pop("script", None)  # the scripted model's rules: it summarises the result
    await rt.update_agent("web", {"settings": settings})
    sent = await rt.send("web", "s", '/tool browser_screenshot {"path": "seen.png"}')
    run = await rt.wait(sent.run.id)
    assert run.status == "completed", run
    assert run.output is not None
    assert "browser_screenshot returned: saved a" in run.output
    assert "[image image/png seen.png " in run.output  # its size: NNNxNNN
    finished = next(e for e in await rt.read_events(sent.session.id, after=0)
                    if e.kind == "tool.finished" and e.run_id == sent.run.id)
    [part] = finished.data["parts"]
    stored = await rt.store.blob(sent.session.id, part["blob"])
    assert stored is not None and stored[1][:8] == b"\x89PNG\r\n\x1a\n"
    assert part["size"] == len(stored[1]) and part["width"] and part["height"]


async def test_screenshot_paths_stay_in_the_workspace(rt: Runtime, pages: int,
                                                      tmp_path: Path) -> None:
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    agent = await rt.get_agent("web")
    workspace = rt.settings.workspaces_dir / agent.id
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "link").symlink_to(outside)
    for path in ("../escape.png", "/tmp/escape.png", "link/escape.png"):
        finished = await call(rt, "browser_screenshot", {"path": path})
        assert finished["is_error"], (path, finished)
        assert "workspace" in finished["output"] or "link" in finished["output"], finished
    assert not list(outside.iterdir())
    assert not (workspace.parent / "escape.png").exists()


async def test_a_new_tab_becomes_the_page(rt: Runtime, pages: int) -> None:
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    link = ref(await ok(rt, "browser_observe", {}), "New tab")
    await ok(rt, "browser_act", {"action": "click", "ref": link})
    observed = await ok(rt, "browser_observe", {})
    assert f"url: http://127.0.0.1:{pages}/second" in observed


async def test_sessions_have_pages_of_their_own(rt: Runtime, pages: int) -> None:
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/second"}, key="one")
    finished = await call(rt, "browser_observe", {}, key="two")
    assert finished["is_error"] and "browser_open first" in finished["output"]
    assert "tainted" not in finished  # nothing came in
    assert "/second" in await ok(rt, "browser_observe", {}, key="one")


# -- bad input -------------------------------------------------------------------------


async def test_a_page_that_never_finishes_loading(rt: Runtime, pages: int) -> None:
    finished = await call(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/never"})
    assert finished["is_error"]
    assert "did not load within 20s" in finished["output"], finished
    assert "navigation_timeout_s" in finished["output"]
    # The daemon goes on, and so does the browser.
    out = await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/second"})
    assert "This is the second page." in out


async def test_a_page_that_hangs_its_renderer(settings: Settings, tmp_path: Path,
                                              pages: int) -> None:
    """A page whose script never yields: the call ends at call_timeout_s saying so,
    the page is closed, and the session can open another."""
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.sandbox = settings.sandbox.model_copy(
        update={"private_endpoints": [f"127.0.0.1:{pages}"]})
    settings.browser = BrowserConfig(enabled=True, executable=CHROMIUM, call_timeout_s=10,
                                     action_timeout_s=3, navigation_timeout_s=8)
    rt = await Runtime.open(settings)
    try:
        await rt.create_agent(name="web", model="scripted", tools=TOOLS,
                              settings={"policy": {"network": True, "rules": ALLOW}})
        await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/hang"})
        button = ref(await ok(rt, "browser_observe", {}), "Hang")
        # The click's handler never returns: the click times out (action_timeout_s),
        # or reading the page after it does (call_timeout_s).
        stuck = await call(rt, "browser_act", {"action": "click", "ref": button})
        assert stuck["is_error"], stuck
        if "call_timeout_s" not in stuck["output"]:
            assert "timed out" in stuck["output"], stuck
            stuck = await call(rt, "browser_observe", {})
        assert stuck["output"] == ("the browser did not finish within 10s ([browser] "
                                   "call_timeout_s); the page was closed")
        gone = await call(rt, "browser_observe", {})
        assert gone["is_error"] and "browser_open first" in gone["output"], gone
        out = await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/second"})
        assert "This is the second page." in out
    finally:
        await rt.close()


@pytest.mark.parametrize(("arguments", "expected"), [
    ({"action": "click"}, "click needs a ref"),
    ({"action": "click", "ref": "#b"}, "ref must look like e12"),
    ({"action": "fill", "ref": "e1"}, "fill needs a value"),
    ({"action": "press", "value": "Enter; rm -rf"}, "not a key"),
    ({"action": "scroll", "value": "sideways"}, '"down" or "up"'),
    ({"action": "jump", "ref": "e1"}, "action"),
])
async def test_bad_actions_are_refused(rt: Runtime, pages: int, arguments: dict[str, Any],
                                       expected: str) -> None:
    finished = await call(rt, "browser_act", arguments)
    assert finished["is_error"] and expected in finished["output"], finished


async def test_an_unknown_ref(rt: Runtime, pages: int) -> None:
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    finished = await call(rt, "browser_act", {"action": "click", "ref": "e999"})
    assert finished["is_error"] and "no element e999" in finished["output"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "chrome://settings",
                                 "view-source:http://127.0.0.1/", "data:text/html,hi",
                                 "javascript:alert(1)", "not a url",
                                 "http://[::1"])
async def test_only_http_urls_are_opened(rt: Runtime, url: str) -> None:
    finished = await call(rt, "browser_open", {"url": url})
    assert finished["is_error"], finished
    assert ("only http:// and https://" in finished["output"]
            or "not a URL" in finished["output"]), finished
    assert "tainted" not in finished


async def test_a_huge_url_is_refused(rt: Runtime) -> None:
    await rt.create_agent(name="huge", model="scripted", tools=TOOLS,
                          settings={"policy": {"network": True, "rules": ALLOW}})
    finished = await call(rt, "browser_open", {"url": "http://a.example/" + "x" * 9000},
                          agent="huge")
    assert finished["is_error"] and "longer than 8192" in finished["output"]
    agent = await rt.get_agent("huge")
    assert rt.browsers is not None and agent.id not in rt.browsers._browsers  # none started


# -- policy and lifecycle --------------------------------------------------------------


async def test_acting_in_a_tainted_session_asks_by_default(
        rt: Runtime, pages: int) -> None:
    """browser_act can send data out (a form): after a page was read, the default
    policy asks a person, as for http_fetch."""
    await rt.create_agent(name="careful", model="scripted", tools=TOOLS,
                          settings={"policy": {"network": True}})
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"}, agent="careful")
    assert (await ok(rt, "browser_observe", {}, agent="careful")).startswith("url:")
    current = await rt.get_agent("careful")
    settings = {**current.settings, "script": [
        {"tool_calls": [{"name": "browser_act", "arguments": {"action": "click",
                                                               "ref": "e0"}}]},
        {"text": "done"}]}
    await rt.update_agent("careful", {"settings": settings})
    sent = await rt.send("careful", "s", "go")

    async def waiting() -> bool:
        run, _, _ = await rt.get_run(sent.run.id)
        return run.status == "waiting_approval"

    await eventually(waiting, what="the click to wait for approval")
    await rt.cancel_run(sent.run.id)


async def test_browsers_close_with_sleep_and_limits(settings: Settings, tmp_path: Path,
                                                    pages: int) -> None:
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.sandbox = settings.sandbox.model_copy(
        update={"private_endpoints": [f"127.0.0.1:{pages}"]})
    settings.browser = BrowserConfig(enabled=True, executable=CHROMIUM, max_browsers=1)
    rt = await Runtime.open(settings)
    try:
        for name in ("one", "two"):
            await rt.create_agent(name=name, model="scripted", tools=TOOLS,
                                  settings={"policy": {"network": True, "rules": ALLOW}})
        assert rt.browsers is not None
        await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"}, agent="one")
        await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"}, agent="two")
        assert rt.browsers.running == 1  # one's (idle) browser made way
        finished = await call(rt, "browser_observe", {}, agent="one")
        assert finished["is_error"] and "browser_open first" in finished["output"]
        two = await rt.get_agent("two")
        await rt.browsers.close_agent(two.id)
        assert rt.browsers.running == 0
    finally:
        await rt.close()
    assert rt.browsers.running == 0


@pytest.mark.parametrize("why", ["browser idle", "agent asleep"])
async def test_idle_browsers_are_closed(settings: Settings, tmp_path: Path, pages: int,
                                        why: str) -> None:
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.sandbox = settings.sandbox.model_copy(
        update={"private_endpoints": [f"127.0.0.1:{pages}"]})
    if why == "browser idle":
        settings.browser = BrowserConfig(enabled=True, executable=CHROMIUM, idle_s=0.2)
    else:
        settings.browser = BrowserConfig(enabled=True, executable=CHROMIUM)
        settings.agent_idle_s = 0.2
    rt = await Runtime.open(settings)
    try:
        await rt.create_agent(name="web", model="scripted", tools=TOOLS,
                              settings={"policy": {"network": True, "rules": ALLOW}})
        await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/second"})
        browsers = rt.browsers
        assert browsers is not None
        await eventually(lambda: browsers.running == 0, what=f"the browser closed ({why})")
        # The next call starts a new one.
        await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/second"})
    finally:
        await rt.close()


async def test_the_tools_exist_only_when_enabled(settings: Settings, tmp_path: Path
                                                 ) -> None:
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    rt = await Runtime.open(settings)
    try:
        assert rt.tools.get("browser_open") is None and rt.browsers is None
        with pytest.raises(InvalidInput, match="browser_open"):
            await rt.create_agent(name="w", model="scripted", tools=["browser_open"])
    finally:
        await rt.close()


async def test_enabled_without_chromium_stops_the_daemon(settings: Settings,
                                                         tmp_path: Path) -> None:
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.browser = BrowserConfig(enabled=True, executable=str(tmp_path / "nochrome"))
    with pytest.raises(InvalidInput, match=r"browser\.enabled: no Chromium at"):
        await Runtime.open(settings)


async def test_a_chromium_that_does_not_start(settings: Settings, tmp_path: Path,
                                              pages: int) -> None:
    """The call fails saying so; the daemon goes on (the next call tries again)."""
    broken = tmp_path / "chromium"
    broken.write_text("#!/bin/sh\necho 'no display, no luck' >&2\nexit 3\n")
    broken.chmod(0o755)
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.browser = BrowserConfig(enabled=True, executable=str(broken),
                                     navigation_timeout_s=10)
    rt = await Runtime.open(settings)
    try:
        await rt.create_agent(name="web", model="scripted", tools=TOOLS,
                              settings={"policy": {"network": True, "rules": ALLOW}})
        for _ in range(2):
            finished = await call(rt, "browser_open",
                                   {"url": f"http://127.0.0.1:{pages}/second"})
            assert finished["is_error"], finished
            assert finished["output"].startswith("the browser did not start"), finished
            assert "tainted" not in finished  # nothing was reached
        assert rt.browsers is not None and rt.browsers.running == 0
    finally:
        await rt.close()


@pytest.fixture
def slow_chromium() -> Iterator[Path]:
    """A Chromium that takes 6 s to start (in a directory any sandbox uid can read)."""
    base = Path(tempfile.mkdtemp(prefix="agentd-slow-chromium-"))
    base.chmod(0o755)
    slow = base / "chromium"
    slow.write_text(f"#!/bin/sh\nsleep 6\nexec {CHROMIUM} \"$@\"\n")
    slow.chmod(0o755)
    yield slow
    shutil.rmtree(base, ignore_errors=True)


async def test_a_slow_start_is_not_the_calls_time(settings: Settings, tmp_path: Path,
                                                  pages: int, slow_chromium: Path) -> None:
    """Chromium's start-up is bounded by launch_timeout_s, not call_timeout_s: a cold
    start longer than a call may take still serves the call; one longer than
    launch_timeout_s fails it saying the browser did not start."""
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.sandbox = settings.sandbox.model_copy(
        update={"private_endpoints": [f"127.0.0.1:{pages}"]})
    settings.browser = BrowserConfig(enabled=True, executable=str(slow_chromium),
                                     call_timeout_s=5, launch_timeout_s=60)
    rt = await Runtime.open(settings)
    try:
        await rt.create_agent(name="web", model="scripted", tools=TOOLS,
                              settings={"policy": {"network": True, "rules": ALLOW}})
        out = await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/second"})
        assert "This is the second page." in out
    finally:
        await rt.close()
    settings.browser = BrowserConfig(enabled=True, executable=str(slow_chromium),
                                     launch_timeout_s=1)
    rt = await Runtime.open(settings)
    try:
        finished = await call(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/second"})
        assert finished["is_error"], finished
        assert finished["output"].startswith("the browser did not start (TimeoutError"), (
            finished)
        assert rt.browsers is not None and rt.browsers.running == 0
    finally:
        await rt.close()
