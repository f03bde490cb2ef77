"""The agent page's MCP tab in a real browser: an agent's MCP server that takes OAuth
tokens, "Authorize…" shows the same link `agentd mcp login` prints, a person (another
browser) signs in at the real authorization server and consents, and the tab says the
server is authorized, without a token on the page; then "Log out"."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.oauth.authserver import AuthServer, Person
from tests.oauth.conftest import Protected, oauth_server
from tests.web.conftest import make_agent, sign_in

pytestmark = pytest.mark.no_replay


@pytest.fixture(scope="module")
def authserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    server = AuthServer(tmp_path_factory.mktemp("as")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def protected(authserver: AuthServer, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Protected]:
    server = Protected(authserver.issuer, tmp_path_factory.mktemp("mcp"))
    try:
        yield server
    finally:
        server.stop()


def test_the_mcp_tab_shows_the_login_link_and_the_authorization(
        page: Any, daemon: Any, api: httpx.Client, authserver: AuthServer,
        protected: Protected) -> None:
    make_agent(api, "bot", model="scripted", settings={"mcp": [oauth_server(protected.url)]})
    sign_in(page, daemon, at="#/agents/bot?tab=mcp")
    row = page.locator("li.mcp-server[data-server='gh']")
    row.get_by_text("not authorized").wait_for()
    row.get_by_role("button", name="Authorize…").click()
    link = row.locator("a[data-role='authorize-link']")
    link.wait_for()
    url = link.get_attribute("href")
    assert url is not None and url.startswith(authserver.metadata()["authorization_endpoint"])
    assert link.get_attribute("rel") == "noopener noreferrer"
    person = Person("alice")
    try:
        back = person.authorize(url)
    finally:
        person.close()
    assert back.status_code == 200, back.text
    row.get_by_text("authorized", exact=True).wait_for()
    assert "mcp:tools" in row.inner_text()
    stored = api.get("/v1/agents/bot/mcp").json()["servers"][0]
    assert stored["authorized"] is True
    # No token is on the page (the daemon never answered one).
    kept = daemon_tokens(daemon)
    assert kept and all(token not in page.content() for token in kept)
    row.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="Log out").last.click()  # the confirmation
    row.get_by_text("not authorized").wait_for()
    assert api.get("/v1/agents/bot/mcp").json()["servers"][0]["authorized"] is False


def daemon_tokens(daemon: Any) -> list[str]:
    """The access and refresh tokens the daemon keeps (read as the tests' helper reads
    them: from the sealed secret, with the daemon's key)."""
    import asyncio
    import concurrent.futures
    import json

    from agentd.secrets import Secrets
    from agentd.store import open_store
    from agentd.store.secrets import SecretStore

    async def read() -> list[str]:
        store = await open_store(f"sqlite:///{daemon.home / 'agentd.db'}")
        try:
            secrets = Secrets(SecretStore(store.engine), key_file=daemon.home / "secrets.key",
                              environ={}, tenant_exists=lambda t: True)
            rows = await store.engine.read(lambda tx: tx.all(
                "SELECT tenant, agent, name FROM secrets"))
            found = []
            for tenant, agent, name in rows:
                value = await secrets.open_row(tenant=tenant, agent=agent, name=name)
                kept = json.loads(value or "{}")
                found += [kept.get("access_token"), kept.get("refresh_token")]
            return [t for t in found if t]
        finally:
            await store.close()

    # (Playwright's sync API runs an event loop in this thread: the read runs in another.)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()
