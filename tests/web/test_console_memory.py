"""The agent page's Memory tab beyond reading and editing a block (test_console_agents.py
covers those): a block's history with Restore, deleting a block, and long-term memory
entries added, edited (a stale edit refused with the 409 shown), deleted and searched,
in headless Chromium against a real daemon. Every outcome is checked through the API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import WAIT_MS, make_agent, sign_in

pytestmark = pytest.mark.e2e

expect = pytest.importorskip("playwright.sync_api").expect
expect.set_options(timeout=WAIT_MS)

IMG = '<img src=x onerror="window.__pwned=(window.__pwned||0)+1">'


def injected(page: Any) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate("""() => ({
        pwned: window.__pwned === undefined ? null : window.__pwned,
        nodes: document.querySelectorAll('main img, main script, main [onerror]').length,
    })""")
    return found


def confirm(page: Any, button: str) -> None:
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name=button).click()
    expect(dialog).to_have_count(0)


def entries_of(api: httpx.Client, agent: str) -> list[dict[str, Any]]:
    response = api.get(f"/v1/agents/{agent}/memory/entries")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["entries"]
    return found


def test_block_history_restore_and_delete(page: Any, daemon: Daemon, api: httpx.Client,
                                           no_policy_violations: None) -> None:
    make_agent(api, "keeper")
    base = "/v1/agents/keeper/memory/blocks"
    assert api.put(f"{base}/persona", json={"value": "First persona."}).status_code == 200
    assert api.patch(f"{base}/persona", json={"value": IMG, "read_only": True}).status_code == 200
    assert api.put(f"{base}/human", json={"value": "Ann."}).status_code == 200
    sign_in(page, daemon, at="#/agents/keeper?tab=memory")

    card = page.locator('[data-block="persona"]')
    expect(card).to_contain_text("read-only for the agent")
    expect(card).to_contain_text("v2")
    history = card.get_by_role("button", name="History")
    history.click()
    expect(history).to_have_attribute("aria-expanded", "true")
    versions = card.locator(".block-version")
    expect(versions).to_have_count(2)
    newest = card.locator('.block-version[data-version="2"]')
    expect(newest).to_contain_text("current")
    expect(newest).to_contain_text("api:")  # who wrote it
    expect(newest.locator("pre")).to_have_text(IMG)  # the value as text
    expect(newest.get_by_role("button", name="Restore")).to_have_count(0)
    assert injected(page) == {"pwned": None, "nodes": 0}

    # Restore asks first; Cancel changes nothing.
    card.locator('.block-version[data-version="1"]').get_by_role("button", name="Restore").click()
    confirm(page, "Cancel")
    assert api.get(f"{base}/persona").json()["version"] == 2
    card.locator('.block-version[data-version="1"]').get_by_role("button", name="Restore").click()
    confirm(page, "Restore")
    expect(card.locator("pre.block-value").first).to_have_text("First persona.")
    expect(card.locator(".block-head")).to_contain_text("v3")
    block = api.get(f"{base}/persona").json()
    assert (block["value"], block["version"]) == ("First persona.", 3)
    versions_now = api.get(f"{base}/persona/history").json()["versions"]
    assert [v["version"] for v in versions_now] == [1, 2, 3]

    # Delete asks first too.
    human = page.locator('[data-block="human"]')
    human.get_by_role("button", name="Delete").click()
    confirm(page, "Cancel")
    assert api.get(f"{base}/human").status_code == 200
    human.get_by_role("button", name="Delete").click()
    confirm(page, "Delete block")
    expect(human).to_have_count(0)
    expect(page.locator('[data-block="persona"]')).to_be_visible()
    gone = api.get(f"{base}/human")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "block_not_found"


def test_entries_add_edit_stale_edit_and_delete(page: Any, daemon: Daemon,
                                                api: httpx.Client) -> None:
    make_agent(api, "scribe")
    sign_in(page, daemon, at="#/agents/scribe?tab=memory")
    expect(page.locator(".entries")).to_contain_text("No memory entries yet")

    page.get_by_role("button", name="New entry").click()
    form = page.locator("form.new-entry")
    form.get_by_role("button", name="Add entry").click()  # nothing typed
    expect(page.locator('#new-entry-content[aria-invalid="true"]')).to_be_visible()
    expect(form.locator('[data-error-for="content"]')).to_contain_text("remember")
    page.locator("#new-entry-tags").fill("travel, " + "t" * 65)  # a tag too long
    page.locator("#new-entry-content").fill("The user flies to Oslo in May.")
    form.get_by_role("button", name="Add entry").click()
    expect(form.locator('[data-error-for="tags"]')).to_be_visible()
    expect(page.locator("#new-entry-content")).to_have_value("The user flies to Oslo in May.")
    assert entries_of(api, "scribe") == []
    page.locator("#new-entry-tags").fill("travel, plans")
    form.get_by_role("button", name="Add entry").click()
    expect(form).to_have_count(0)
    [entry] = entries_of(api, "scribe")
    assert (entry["content"], entry["tags"], entry["namespace"]) == (
        "The user flies to Oslo in May.", ["travel", "plans"], None)
    item = page.locator(f'[data-entry="{entry["id"]}"]')
    expect(item).to_contain_text("The user flies to Oslo in May.")
    expect(item.locator(".tag")).to_have_text(["travel", "plans"])

    # The same words again: nothing added, said beside the content.
    page.get_by_role("button", name="New entry").click()
    page.locator("#new-entry-content").fill("the user flies to Oslo in May.")
    page.locator("form.new-entry").get_by_role("button", name="Add entry").click()
    expect(page.locator('form.new-entry [data-error-for="content"]')).to_contain_text("already")
    assert len(entries_of(api, "scribe")) == 1
    page.locator("form.new-entry").get_by_role("button", name="Cancel").click()

    # Edit: content and tags, sent with the version.
    item.get_by_role("button", name="Edit").click()
    item.get_by_label("Content").fill("The user flies to Oslo in June.")
    item.get_by_label("Tags (comma-separated)").fill("travel")
    item.get_by_role("button", name="Save entry").click()
    expect(item.locator(".entry-content")).to_have_text("The user flies to Oslo in June.")
    now = api.get(f"/v1/agents/scribe/memory/entries/{entry['id']}").json()
    assert (now["content"], now["tags"], now["version"]) == (
        "The user flies to Oslo in June.", ["travel"], 2)

    # A stale edit: the entry changes elsewhere between opening the form and saving.
    item.get_by_role("button", name="Edit").click()
    item.get_by_label("Content").fill("Mine: the user flies in July.")
    changed = api.patch(f"/v1/agents/scribe/memory/entries/{entry['id']}",
                        json={"content": "Theirs: the user flies in August."})
    assert changed.status_code == 200, changed.text
    item.get_by_role("button", name="Save entry").click()
    refusal = item.locator('.error-box[data-code="entry_changed"]')
    expect(refusal).to_contain_text("Changed elsewhere")
    expect(refusal).to_contain_text("Theirs: the user flies in August.")
    expect(item.get_by_label("Content")).to_have_value("Mine: the user flies in July.")
    assert api.get(f"/v1/agents/scribe/memory/entries/{entry['id']}").json()["content"] == \
        "Theirs: the user flies in August."
    item.get_by_role("button", name="Save entry").click()  # knowing, replaces theirs
    expect(item.locator(".entry-content")).to_have_text("Mine: the user flies in July.")
    assert api.get(f"/v1/agents/scribe/memory/entries/{entry['id']}").json()["version"] == 4

    # Escape in the editor cancels it, changing nothing.
    item.get_by_role("button", name="Edit").click()
    item.get_by_label("Content").fill("Not saved.")
    item.get_by_label("Content").press("Escape")
    expect(item.locator(".entry-content")).to_have_text("Mine: the user flies in July.")
    assert api.get(f"/v1/agents/scribe/memory/entries/{entry['id']}").json()["version"] == 4

    # Delete asks first.
    item.get_by_role("button", name="Delete").click()
    confirm(page, "Cancel")
    assert len(entries_of(api, "scribe")) == 1
    item.get_by_role("button", name="Delete").click()
    confirm(page, "Delete entry")
    expect(item).to_have_count(0)
    assert entries_of(api, "scribe") == []
    gone = api.get(f"/v1/agents/scribe/memory/entries/{entry['id']}")
    assert gone.status_code == 404


def test_search_and_hostile_entries_stay_text(page: Any, daemon: Daemon, api: httpx.Client,
                                              no_policy_violations: None) -> None:
    make_agent(api, "finder")
    for content in ("The user drinks green tea every morning.", "Quarterly review on Friday."):
        assert api.post("/v1/agents/finder/memory/entries",
                        json={"content": content}).status_code == 201
    sign_in(page, daemon, at="#/agents/finder?tab=memory")
    expect(page.locator(".entry")).to_have_count(2)

    # A hostile entry typed into the form is stored verbatim and shown as text.
    page.get_by_role("button", name="New entry").click()
    page.locator("#new-entry-content").fill(f"Hostile {IMG} oolong tea")
    page.locator("#new-entry-tags").fill(IMG)
    page.locator("form.new-entry").get_by_role("button", name="Add entry").click()
    expect(page.locator(".entry")).to_have_count(3)
    expect(page.locator(".entry-content").first).to_have_text(f"Hostile {IMG} oolong tea")
    newest = entries_of(api, "finder")[0]
    assert (newest["content"], newest["tags"]) == (f"Hostile {IMG} oolong tea", [IMG])
    assert injected(page) == {"pwned": None, "nodes": 0}

    search = page.get_by_label("Search memory entries", exact=True)
    search.fill("")
    page.get_by_role("button", name="Search").click()
    expect(page.locator('[data-error-for="query"]')).to_be_visible()
    search.fill("green tea morning")
    search.press("Enter")
    results = page.locator(".search-results .entry")
    expect(results.first).to_contain_text("The user drinks green tea every morning.")
    best = api.post("/v1/agents/finder/memory/search",
                    json={"query": "green tea morning"}).json()["results"][0]
    expect(results.first).to_have_attribute("data-entry", best["id"])
    expect(results.first.locator(".entry-score")).to_have_text(f"score {best['score']:.3f}")
    expect(page.locator(".list-count")).to_contain_text("result")

    search.fill("oolong")
    page.get_by_role("button", name="Search").click()
    expect(results.first.locator(".entry-content")).to_have_text(f"Hostile {IMG} oolong tea")
    assert injected(page) == {"pwned": None, "nodes": 0}

    page.get_by_role("button", name="Back to the list").click()
    expect(page.locator(".search-results")).to_have_count(0)
    expect(page.locator(".entry")).to_have_count(3)
    expect(search).to_have_value("")
    assert injected(page) == {"pwned": None, "nodes": 0}
