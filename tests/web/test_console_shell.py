"""The console's shell: served from the package with a strict policy, sign-in with a
bearer token kept out of URLs, a refused token, signing out."""

from __future__ import annotations

import http.client
from typing import Any

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import TOKEN, sign_in

from agentd.web import ASSETS

pytestmark = pytest.mark.e2e


def test_the_page_and_every_asset_are_served_with_the_policy(daemon: Daemon) -> None:
    with httpx.Client(base_url=daemon.url) as anonymous:
        page = anonymous.get("/ui/")
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert page.headers["x-frame-options"] == "DENY"
        assert anonymous.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
        for path in sorted(p for p in ASSETS.rglob("*") if p.is_file()):
            name = path.relative_to(ASSETS).as_posix()
            served = anonymous.get(f"/ui/assets/{name}")
            assert served.status_code == 200, name
            assert served.content == path.read_bytes()
            again = anonymous.get(f"/ui/assets/{name}",
                                  headers={"If-None-Match": served.headers["etag"]})
            assert again.status_code == 304
        # Nothing outside the assets, and the API still needs a token.
        for outside in ("/ui/assets/../../config.py", "/ui/assets/%2e%2e/__init__.py",
                        "/ui/assets/..%2f__init__.py", "/ui/assets/pages/../../_serve.py"):
            refused = anonymous.get(outside)
            assert refused.status_code in (401, 404), outside
            assert b"import" not in refused.content
        assert anonymous.get("/v1/agents").status_code == 401
    # A public prefix with dot segments sent raw (httpx would remove them): the
    # daemon's routes see the same path as the token check, so none is reached.
    for raw in ("/ui/assets/../../v1/agents", "/ui/assets/..%2f..%2fv1/agents",
                "/ui/../v1/agents", "/ui/assets/%2e%2e/%2e%2e/v1/kernel"):
        connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
        try:
            connection.request("GET", raw)
            answer = connection.getresponse()
            body = answer.read()
        finally:
            connection.close()
        assert answer.status in (401, 404), (raw, answer.status)
        assert b'"agents"' not in body and b"lanes" not in body, raw


def test_sign_in_keeps_the_token_out_of_urls(page: Any, daemon: Daemon) -> None:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    sign_in(page, daemon)
    page.wait_for_selector("#top:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('agentd.token')") == TOKEN
    assert page.evaluate("localStorage.getItem('agentd.token')") is None
    assert urls and not [u for u in urls if TOKEN in u]
    assert TOKEN not in daemon.log()


def test_a_wrong_token_is_refused_on_the_page(page: Any, daemon: Daemon) -> None:
    sign_in(page, daemon, "not-the-token")
    error = page.locator("#signin-error")
    error.wait_for()
    assert "refused" in error.inner_text()
    assert page.evaluate("sessionStorage.getItem('agentd.token')") is None


def test_sign_out_forgets_the_token(signed_in: Any) -> None:
    signed_in.get_by_role("button", name="Sign out").click()
    signed_in.get_by_label("Token").wait_for()
    assert signed_in.evaluate("sessionStorage.getItem('agentd.token')") is None


def test_a_token_the_daemon_stops_taking_signs_out_and_comes_back(
        signed_in: Any, daemon: Daemon) -> None:
    page = signed_in
    page.goto(f"{daemon.url}/ui/#/usage")
    page.locator("main h1").wait_for()
    # The token the tab holds is no longer the daemon's (rotated, removed): the next
    # request is refused, the page says so and keeps where the operator was.
    page.evaluate("sessionStorage.setItem('agentd.token', 'rotated-away')")
    page.goto(f"{daemon.url}/ui/#/kernel")
    error = page.locator("#signin-error")
    error.wait_for()
    assert "refused the token" in error.inner_text()
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_function("() => location.hash === '#/kernel'")
    page.locator("#top:not([hidden])").wait_for()


def test_keys_move_between_pages_and_switch_the_theme(signed_in: Any) -> None:
    page = signed_in
    page.locator("main h1").wait_for()
    page.keyboard.press("g")
    page.keyboard.press("a")
    page.wait_for_function("() => location.hash === '#/approvals'")
    page.keyboard.press("g")
    page.keyboard.press("u")
    page.wait_for_function("() => location.hash === '#/usage'")
    before = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.keyboard.press("t")
    page.wait_for_function(
        "(b) => getComputedStyle(document.body).backgroundColor !== b", arg=before)
    theme = page.evaluate("document.documentElement.dataset.theme")
    assert theme in ("dark", "light")
    page.keyboard.press("t")
    assert page.evaluate("document.documentElement.dataset.theme") != theme


def test_the_overview_fits_a_phone(browser: Any, daemon: Daemon) -> None:
    from tests.web.conftest import WAIT_MS

    context = browser.new_context(viewport={"width": 390, "height": 844},
                                  is_mobile=True, has_touch=True)
    context.set_default_timeout(WAIT_MS)
    try:
        page = context.new_page()
        sign_in(page, daemon)
        page.locator("#top:not([hidden])").wait_for()
        page.locator("main h1").wait_for()
        # Nothing wider than the screen: no sideways scrolling of the whole page.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert page.get_by_role("link", name="Approvals").is_visible()
    finally:
        context.close()
