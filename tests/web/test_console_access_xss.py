"""Attacks on the Access pages: what a stranger, a tenant or a token's maker can put in
the audit log, the token list and the tenant list holds HTML, script, bidi overrides and
zero-width characters. The pages show it as inert, visible text: nothing runs (a payload
that ran would set ``window.__pwned``), no element is made from it, and every invisible
character is an escape, as the CLI shows it.

Most of it goes in through the API as any client could: a refused request's path (from
anyone, without a token), a token's agent patterns, a tenant's description. Names the
API refuses today (a token or tenant named ``<img ...>``, an actor or action of any
text) are written into the store the daemon reads, as a bug elsewhere or an older
version could have left them: the pages must not depend on the API's name rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import TOKEN, WAIT_MS, sign_in
from tests.web.test_console_agents_xss import BOTH, IMG, SCRIPT, injected

from agentd.cli._safe import INVISIBLE, terminal_safe
from agentd.security.identity import hash_token, new_token
from agentd.store import AuditEntry, TenantRow, TokenRow, open_store

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("no_policy_violations")]

expect = pytest.importorskip("playwright.sync_api").expect
expect.set_options(timeout=WAIT_MS)

#: What the API lets through in free text (no control characters there): a bidi
#: override, a zero-width space, a tag character.
BIDI = "\u202egpj.exe\u202c\u200b\U000e0041"
#: Written into the store: an escape and a newline too.
HIDDEN = f"{BIDI}\x1b[8m\nnext line"
TOKEN_NAME = f"{IMG}{HIDDEN}"
TENANT_NAME = f"{SCRIPT}\u200b"


def seed_store(home: Path) -> None:
    """A token and a tenant with hostile names, each with its audit row (actor, action,
    resource, reason and details hostile), written as the daemon's store writes them:
    the hash chain stays intact."""
    async def write() -> None:
        store = await open_store(f"sqlite:///{home / 'agentd.db'}")
        try:
            now = time.time()
            text, ident = new_token()
            await store.insert_token(TokenRow(
                name=TOKEN_NAME, id=ident, hash=hash_token(text), role="member", tenant=None,
                agents=[BOTH], expires_at=None, created_at=now, created_by=f"{SCRIPT}{BIDI}",
                rotated_at=None), audit=AuditEntry(
                actor=f"{SCRIPT}{BIDI}", role="admin", action=f"token.create{IMG}",
                resource=f"token:{TOKEN_NAME}", outcome="allowed", reason=f"{BOTH}{HIDDEN}",
                details={"why": f"{BOTH}{HIDDEN}", IMG: [BIDI]}, at=now))
            await store.insert_tenant(TenantRow(
                name=TENANT_NAME, quotas={"agents": 3}, description=f"{BOTH}{HIDDEN}",
                created_at=now, updated_at=now, created_by=None), audit=AuditEntry(
                actor=None, role=None, action="tenant.create", resource=f"tenant:{TENANT_NAME}",
                outcome="allowed", at=now))
        finally:
            await store.close()

    # (Playwright's sync API holds this thread's event loop.)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, write()).result()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """The console's daemon, started on a store already holding the seeded rows (on
    SQLite a daemon reads tokens and tenants at start: no other node writes them)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    seed_store(home)
    started = Daemon(home, tmp_path / "agentd.log", env={"AGENTD_TOKEN": TOKEN}, args=())
    try:
        yield started.start()
    finally:
        started.cleanup()


def shows_nothing_hidden(page: Any) -> None:
    shown = page.locator("main").inner_text().replace("\t", " ")
    assert not INVISIBLE.search(shown), [
        f"U+{ord(m.group()):04X}" for m in INVISIBLE.finditer(shown)]


def on_one_line(text: str) -> str:
    """How the pages show a name, actor, resource or reason: the CLI's escapes, and
    a newline as ``\\n`` (in a name it would read as a space)."""
    return terminal_safe(text.replace("\n", "\\n"))


def test_hostile_text_on_the_access_pages_stays_inert_and_visible(
        page: Any, daemon: Daemon, api: httpx.Client) -> None:
    # Anyone: a refused request's path is the audit row's resource.
    path = f"/v1/agents/{IMG}{BIDI}"
    with httpx.Client(base_url=daemon.url) as stranger:
        assert stranger.get(quote(path)).status_code == 401
    # A token's maker: its agent patterns (the token list, the audit row's details).
    made = api.post("/v1/tokens", json={"name": "patterns", "role": "viewer",
                                        "agents": [IMG, f"a{BIDI}*"]})
    assert made.status_code == 201, made.text
    # An admin: a tenant's description.
    assert api.post("/v1/tenants", json={"name": "acme", "description": f"{BOTH}{BIDI}"}
                    ).status_code == 201
    assert TOKEN_NAME in {t["name"] for t in api.get("/v1/tokens").json()["tokens"]}
    assert TENANT_NAME in {t["name"] for t in api.get("/v1/tenants").json()["tenants"]}

    sign_in(page, daemon, at="#/access/audit")
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(len(api.get("/v1/audit").json()["rows"]))
    denied = page.locator("table.audit tr").filter(has_text="request.denied")
    expect(denied.locator(".audit-resource")).to_have_text(terminal_safe(f"GET {path}"))
    seeded = page.locator("table.audit tr").filter(has_text="token.create<img")
    expect(seeded.locator(".audit-actor")).to_contain_text(terminal_safe(f"{SCRIPT}{BIDI}"))
    expect(seeded.locator(".audit-resource")).to_have_text(
        "token:" + on_one_line(TOKEN_NAME))
    expect(seeded.locator(".audit-reason")).to_have_text(
        on_one_line(f"{BOTH}{HIDDEN}"))
    expect(seeded.locator(".audit-details")).to_contain_text("\\u202e")
    expect(seeded.locator(".audit-details")).to_contain_text("onerror")
    page.get_by_role("button", name="Verify chain").click()
    expect(page.locator(".audit-ok")).to_be_visible()
    assert injected(page) == {"pwned": None, "nodes": 0}
    shows_nothing_hidden(page)

    page.get_by_role("tab", name="Tokens").click()
    hostile = page.locator("table.tokens tbody tr").filter(
        has=page.locator(".token-name", has_text="<img"))
    expect(hostile.locator(".token-name")).to_have_text(on_one_line(TOKEN_NAME))
    expect(hostile).to_contain_text(terminal_safe(f"{SCRIPT}{BIDI}"))  # its maker
    scoped = page.locator('tr[data-token="patterns"]')
    expect(scoped.locator(".patterns code")).to_have_text([IMG, terminal_safe(f"a{BIDI}*")])
    assert injected(page) == {"pwned": None, "nodes": 0}
    shows_nothing_hidden(page)
    # Its name in the confirm dialog is text too; the API refuses the name in a path
    # (422), said in the row.
    hostile.get_by_role("button", name="Revoke…").click()
    dialog = page.locator("dialog.confirm")
    expect(dialog.locator("h2")).to_have_text(
        "Revoke " + on_one_line(TOKEN_NAME) + "?")
    assert page.locator("dialog img, dialog script, dialog svg").count() == 0
    dialog.get_by_role("button", name="Revoke token").click()
    expect(hostile.locator(".error-box")).to_contain_text("control characters")
    assert injected(page) == {"pwned": None, "nodes": 0}

    page.get_by_role("tab", name="Tenants").click()
    tenant = page.locator("table.tenants tbody tr").filter(
        has=page.locator(".tenant-name", has_text="<script"))
    expect(tenant.locator(".tenant-name")).to_have_text(terminal_safe(TENANT_NAME))
    expect(tenant.locator(".tenant-description")).to_have_text(
        terminal_safe(f"{BOTH}{HIDDEN}"))
    expect(page.locator('tr[data-tenant="acme"] .tenant-description')).to_have_text(
        terminal_safe(f"{BOTH}{BIDI}"))
    assert injected(page) == {"pwned": None, "nodes": 0}
    shows_nothing_hidden(page)
    # The edit form: the name in its title as text.
    tenant.get_by_role("button", name="Edit quotas").click()
    expect(page.locator("form.tenant-form h3")).to_have_text(
        "Quotas of " + terminal_safe(TENANT_NAME))
    assert injected(page) == {"pwned": None, "nodes": 0}
