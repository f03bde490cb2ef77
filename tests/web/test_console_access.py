"""The console's Access pages (audit log, tokens, tenants) in Chromium against a real
daemon: what an admin sees; the API's 403 for a member, said plainly; a new token's text
shown once and never kept (not in storage, the address, or the page after a reload);
revoking and rotating; the tenants' quotas edited with only the changed keys; every
refusal beside the field it names."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import WAIT_MS, make_agent, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("no_policy_violations")]

expect = pytest.importorskip("playwright.sync_api").expect
expect.set_options(timeout=WAIT_MS)


def mint(api: httpx.Client, name: str, role: str, **scope: Any) -> str:
    made = api.post("/v1/tokens", json={"name": name, "role": role, **scope})
    assert made.status_code == 201, made.text
    text: str = made.json()["token"]
    return text


def status_with(daemon: Daemon, text: str) -> int:
    with daemon.client(text) as client:
        return client.get("/v1/agents").status_code


def kept_anywhere(page: Any, text: str) -> list[str]:
    """Where the page keeps ``text``: storage, the address, the history's entries,
    the document (its text and its fields' values)."""
    found: list[str] = page.evaluate("""(text) => {
        const out = [];
        const stores = [['sessionStorage', sessionStorage], ['localStorage', localStorage]];
        for (const [name, store] of stores) {
            for (let i = 0; i < store.length; i++) {
                const k = store.key(i);
                if (k.includes(text) || String(store.getItem(k)).includes(text)) out.push(name);
            }
        }
        if (location.href.includes(text)) out.push('address');
        if (JSON.stringify(history.state || null).includes(text)) out.push('history');
        if (document.documentElement.outerHTML.includes(text)) out.push('markup');
        for (const el of document.querySelectorAll('input, textarea')) {
            if (el.value.includes(text)) out.push('field ' + (el.id || el.name));
        }
        return out;
    }""", text)
    return found


def confirm(page: Any, button: str) -> None:
    page.locator("dialog.confirm").get_by_role("button", name=button).click()
    expect(page.locator("dialog.confirm")).to_have_count(0)


def test_an_admin_sees_the_audit_log_filters_it_and_verifies_the_chain(
        page: Any, daemon: Daemon, api: httpx.Client) -> None:
    mint(api, "alice", "member")
    assert api.post("/v1/tenants", json={"name": "acme", "quotas": {"agents": 2}}
                    ).status_code == 201
    with daemon.client("not-a-token") as stranger:
        assert stranger.get("/v1/agents").status_code == 401
    rows = api.get("/v1/audit").json()["rows"]
    actions = [r["action"] for r in rows]
    assert actions[:2] == ["token.create", "tenant.create"] and "request.denied" in actions

    sign_in(page, daemon, at="#/access")
    table = page.locator("table.audit tbody tr")
    expect(table).to_have_count(len(rows))
    first = page.locator('table.audit tr[data-seq="1"]')
    expect(first).to_contain_text("token.create")
    expect(first).to_contain_text("token:alice")
    expect(first).to_contain_text('"role":"member"')
    expect(page.locator("[data-nav=access]")).to_have_attribute("aria-current", "page")

    # A family, then refusals only: the daemon filters, the address keeps them.
    page.fill("#audit-action", "token.*")
    page.get_by_role("button", name="Show").click()
    expect(table).to_have_count(1)
    assert "action=token.*" in page.evaluate("() => decodeURIComponent(location.hash)")
    page.fill("#audit-action", "")
    page.check("#audit-denied")
    denied = [r for r in rows if r["outcome"] == "denied"]
    expect(table).to_have_count(len(denied))
    expect(table.first).to_contain_text("no token")
    expect(table.first).to_contain_text("missing or invalid bearer token")
    # Opened from that address, the filters come back.
    page.reload()
    expect(page.locator("#audit-denied")).to_be_checked()
    expect(table).to_have_count(len(denied))

    # The chain: intact, with the head the API gives.
    page.get_by_role("button", name="Verify chain").click()
    verified = api.get("/v1/audit/verify").json()
    expect(page.locator(".audit-ok")).to_contain_text(f"{verified['rows']} rows")
    head = f"{verified['head']['seq']}:{verified['head']['hash']}"
    expect(page.locator("#audit-head-value")).to_have_value(head)
    # A head that is no head is the API's 422, beside the field.
    page.fill("#audit-head", "nonsense")
    page.get_by_role("button", name="Verify chain").click()
    expect(page.locator("#audit-head ~ .field-errors")).to_contain_text("pattern")
    expect(page.locator("#audit-head")).to_have_attribute("aria-invalid", "true")

    # A row edited in the store: verify names it, and the head of the rows before it.
    db = sqlite3.connect(daemon.home / "agentd.db")
    with db:
        db.execute("UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 2")
    db.close()
    page.fill("#audit-head", "")
    page.get_by_role("button", name="Verify chain").click()
    broken = page.locator(".audit-broken")
    expect(broken).to_contain_text("broken at row 2")
    expect(broken).to_contain_text("does not match its hash (the row was edited)")
    expect(page.locator("#audit-head-value")).to_have_value(f"1:{rows[0]['hash']}")

    # Pages: the whole log again, then 120 rows more, read 100 at a time.
    page.uncheck("#audit-denied")
    total = len(api.get("/v1/audit", params={"limit": 1000}).json()["rows"])
    expect(table).to_have_count(total)
    more = page.locator(".audit-rows ~ .pager button")
    expect(more).to_have_text("Check for newer")
    for n in range(120):
        mint(api, f"bulk-{n}", "viewer")
    more.click()
    expect(table).to_have_count(total + 100)
    expect(more).to_have_text("Load more")
    expect(page.locator(".pager .list-count")).to_contain_text(f"{total + 100} rows shown")
    more.click()
    expect(table).to_have_count(total + 120)
    expect(more).to_have_text("Check for newer")
    assert table.last.locator("td.audit-resource").inner_text() == "token:bulk-119"


def test_a_member_is_told_the_apis_refusals_plainly(page: Any, daemon: Daemon,
                                                    api: httpx.Client) -> None:
    member = mint(api, "alice", "member")
    with daemon.client(member) as client:
        refused = client.get("/v1/audit")
    assert refused.status_code == 403
    sign_in(page, daemon, member, at="#/access/audit")
    box = page.locator(".audit-refused")
    expect(box).to_contain_text(refused.json()["error"]["message"])
    expect(box).to_contain_text("forbidden")
    page.get_by_role("button", name="Verify chain").click()
    expect(page.locator(".audit-verdict")).to_contain_text("verifying the audit log needs")

    # Tokens: itself, and an admin token is beyond it: 403 naming the role, beside it.
    page.get_by_role("tab", name="Tokens").click()
    expect(page.locator('tr[data-token="alice"]')).to_contain_text("this console")
    page.get_by_role("button", name="New token").click()
    page.fill("#token-name", "boss")
    page.select_option("#token-role", "admin")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#token-role ~ .field-errors")).to_contain_text("above its own")
    assert "boss" not in {t["name"] for t in api.get("/v1/tokens").json()["tokens"]}

    # Tenants: a member makes none.
    page.get_by_role("tab", name="Tenants").click()
    page.get_by_role("button", name="New tenant").click()
    page.fill("#new-tenant-name", "mine")
    page.get_by_role("button", name="Create tenant").click()
    expect(page.locator(".tenant-form .form-error")).to_contain_text(
        "making a tenant needs a token of role 'admin'")
    assert api.get("/v1/tenants/mine").status_code == 404


def test_a_new_token_is_shown_once_then_revoked(page: Any, daemon: Daemon,
                                                api: httpx.Client) -> None:
    sign_in(page, daemon, at="#/access/tokens")
    configured = page.locator('tr[data-token="token"]')
    expect(configured).to_contain_text("configuration")
    expect(configured).to_contain_text("read-only")
    assert configured.get_by_role("button").count() == 0

    page.get_by_role("button", name="New token").click()
    page.fill("#token-name", "ci-deploy")
    page.select_option("#token-role", "viewer")
    page.fill("#token-agents", "support-*\nbilling")
    page.get_by_role("button", name="Create token").click()
    shown = page.locator("#token-once")
    expect(shown).to_have_value(re.compile(r"^agd_\w+_"))
    expect(page.locator(".once-box")).to_contain_text("Shown once")
    text = shown.input_value()
    listed = {t["name"]: t for t in api.get("/v1/tokens").json()["tokens"]}
    made = listed["ci-deploy"]
    assert made["role"] == "viewer" and made["agents"] == ["support-*", "billing"]
    assert text.startswith(made["prefix"] + "_")
    assert status_with(daemon, text) == 200
    row = page.locator('tr[data-token="ci-deploy"]')
    expect(row).to_contain_text(made["prefix"])
    assert text not in row.inner_text()
    # Kept nowhere but its own field; Done empties that.
    assert kept_anywhere(page, text) == ["field token-once"]
    page.get_by_role("button", name="Done").click()
    expect(page.locator(".once-box")).to_have_count(0)
    assert kept_anywhere(page, text) == []
    # Shown again, it goes with a reload too.
    page.get_by_role("button", name="New token").click()
    page.fill("#token-name", "second")
    page.get_by_role("button", name="Create token").click()
    second = page.locator("#token-once").input_value()
    assert second.startswith("agd_")
    page.reload()
    expect(page.locator('tr[data-token="second"]')).to_be_visible()
    expect(page.locator(".once-box")).to_have_count(0)
    assert kept_anywhere(page, second) == []

    # Revoke asks first; then the token is refused.
    row.get_by_role("button", name="Revoke…").click()
    expect(page.locator("dialog.confirm")).to_contain_text("Revoke ci-deploy?")
    page.locator("dialog.confirm").get_by_role("button", name="Cancel").click()
    assert status_with(daemon, text) == 200
    row.get_by_role("button", name="Revoke…").click()
    confirm(page, "Revoke token")
    expect(row).to_have_count(0)
    assert status_with(daemon, text) == 401
    assert "ci-deploy" not in {t["name"] for t in api.get("/v1/tokens").json()["tokens"]}


def test_rotate_shows_the_new_text_once_and_the_old_one_stops(
        page: Any, daemon: Daemon, api: httpx.Client) -> None:
    old = mint(api, "bot", "member")
    mine = mint(api, "me", "admin")
    sign_in(page, daemon, mine, at="#/access/tokens")
    page.locator('tr[data-token="bot"]').get_by_role("button", name="Rotate…").click()
    confirm(page, "Rotate token")
    new = page.locator("#token-once")
    expect(new).to_have_value(re.compile(r"^agd_"))
    text = new.input_value()
    assert text != old
    assert status_with(daemon, old) == 401 and status_with(daemon, text) == 200
    expect(page.locator('tr[data-token="bot"]')).to_contain_text("rotated")

    # The console's own token: it goes on with the new text, signed in.
    row = page.locator('tr[data-token="me"]')
    expect(row).to_contain_text("this console")
    row.get_by_role("button", name="Rotate…").click()
    expect(page.locator("dialog.confirm")).to_contain_text("it goes on with the new text")
    confirm(page, "Rotate token")
    expect(page.locator(".once-box")).to_contain_text("this console now uses the new text")
    text = page.locator("#token-once").input_value()
    assert status_with(daemon, mine) == 401 and status_with(daemon, text) == 200
    page.get_by_role("tab", name="Tenants").click()
    expect(page.locator('tr[data-tenant="default"]')).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('agentd.token')") == text


def test_token_refusals_go_beside_their_fields(page: Any, daemon: Daemon,
                                               api: httpx.Client) -> None:
    mint(api, "taken", "viewer")
    sign_in(page, daemon)
    page.wait_for_selector("#top:not([hidden])")
    # g x: the access pages, at the audit log; the tab is in the address.
    page.keyboard.press("g")
    page.keyboard.press("x")
    expect(page.get_by_role("tab", name="Audit log")).to_have_attribute("aria-selected", "true")
    page.get_by_role("tab", name="Tokens").click()
    assert page.evaluate("() => location.hash") == "#/access/tokens"
    page.get_by_role("button", name="New token").click()
    create = page.get_by_role("button", name="Create token")
    for name, field, said in (("bad name!", "#token-name", "invalid token name"),
                              ("taken", "#token-name", "already exists")):
        page.fill("#token-name", name)
        create.click()
        expect(page.locator(f"{field} ~ .field-errors")).to_contain_text(said)
    page.fill("#token-name", "fresh")
    page.fill("#token-tenant", "nowhere")
    create.click()
    expect(page.locator("#token-tenant ~ .field-errors")).to_contain_text("no such tenant")
    page.fill("#token-tenant", "")
    page.fill("#token-agents", "ok-*\nbroken[")
    create.click()
    expect(page.locator("#token-agents ~ .field-errors")).to_contain_text("never closed")
    page.fill("#token-agents", "")
    page.fill("#token-expires", "2001-01-01T00:00:00")
    create.click()
    expect(page.locator("#token-expires ~ .field-errors")).to_contain_text("in the past")
    # Nothing was made; what was typed stays.
    assert {t["name"] for t in api.get("/v1/tokens").json()["tokens"]} == {"token", "taken"}
    expect(page.locator("#token-name")).to_have_value("fresh")


def test_tenant_quotas_round_trip_with_only_the_changed_keys(
        page: Any, daemon: Daemon, api: httpx.Client) -> None:
    assert api.post("/v1/tenants", json={"name": "taken"}).status_code == 201
    sign_in(page, daemon, at="#/access/tenants")
    page.get_by_role("button", name="New tenant").click()
    # Refusals beside the field they name; nothing made.
    for name, said in (("taken", "already exists"), ("Bad.Name", "invalid tenant name")):
        page.fill("#new-tenant-name", name)
        page.get_by_role("button", name="Create tenant").click()
        expect(page.locator("#new-tenant-name ~ .field-errors")).to_contain_text(said)
    page.fill("#new-tenant-name", "acme")
    page.fill("#new-tenant-agents", "1000000000000")
    page.get_by_role("button", name="Create tenant").click()
    expect(page.locator("#new-tenant-agents ~ .field-errors")).to_contain_text(
        "less than or equal")
    assert api.get("/v1/tenants/acme").status_code == 404
    page.fill("#new-tenant-agents", "2")
    page.fill("#new-tenant-spend_usd_per_day", "1.5")
    page.get_by_role("button", name="Create tenant").click()
    row = page.locator('tr[data-tenant="acme"]')
    expect(row.locator('[data-quota="agents"]')).to_have_text("Agents 0 / 2")
    assert api.get("/v1/tenants/acme").json()["quotas"] == {"agents": 2, "spend_usd_per_day": 1.5}
    make_agent(api, "acme.one", settings={"tenant": "acme"})
    page.reload()
    expect(row.locator('[data-quota="agents"]')).to_have_text("Agents 1 / 2")

    patches: list[Any] = []
    page.on("request", lambda r: patches.append(json.loads(r.post_data or "null"))
            if r.method == "PATCH" else None)
    row.get_by_role("button", name="Edit quotas").click()
    form = page.locator("form.tenant-form")
    expect(page.locator("#edit-tenant-agents")).to_have_value("2")
    # A typo is caught here; a negative quota is the daemon's 422, beside its field.
    page.fill("#edit-tenant-sessions", "ten")
    form.get_by_role("button", name="Save quotas").click()
    expect(page.locator("#edit-tenant-sessions ~ .field-errors")).to_contain_text("Give a number")
    page.fill("#edit-tenant-sessions", "-1")
    form.get_by_role("button", name="Save quotas").click()
    expect(page.locator("#edit-tenant-sessions ~ .field-errors")).to_contain_text(
        "greater than or equal to 0")
    assert api.get("/v1/tenants/acme").json()["quotas"] == {"agents": 2, "spend_usd_per_day": 1.5}
    # Sessions set, agents emptied (lifted), spend untouched: only those two are sent.
    page.fill("#edit-tenant-sessions", "5")
    page.fill("#edit-tenant-agents", "")
    form.get_by_role("button", name="Save quotas").click()
    expect(form).to_have_count(0)
    assert patches[-1] == {"quotas": {"agents": None, "sessions": 5}}
    assert api.get("/v1/tenants/acme").json()["quotas"] == {"sessions": 5, "spend_usd_per_day": 1.5}
    expect(row.locator('[data-quota="agents"]')).to_have_text("Agents 1 / no limit")
    expect(row.locator('[data-quota="spend_usd_per_day"]')).to_have_text(
        "Spend per day (USD) $1.50")

    # Delete: refused while it has an agent, said in its row; then gone.
    row.get_by_role("button", name="Delete…").click()
    confirm(page, "Delete tenant")
    expect(row.locator(".error-box")).to_contain_text("still has 1 agent")
    expect(row.locator(".error-box")).to_contain_text("tenant_not_empty")
    assert api.delete("/v1/agents/acme.one").status_code == 204
    row.get_by_role("button", name="Delete…").click()
    confirm(page, "Delete tenant")
    expect(row).to_have_count(0)
    assert api.get("/v1/tenants/acme").status_code == 404
