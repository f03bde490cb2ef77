"""The agent page's Schedules tab in Chromium against a real daemon: a schedule created
with every field the form offers (jitter, catch-up window, end time, paused), a one-shot
"once at", and Edit (PATCH of the changed fields only; a refusal beside its field with
what was typed kept; Cancel and Escape leave the schedule as it was).

The creating and deleting of ordinary schedules is in test_console_agents.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import WAIT_MS, make_agent, sign_in

pytestmark = pytest.mark.e2e

expect = pytest.importorskip("playwright.sync_api").expect
expect.set_options(timeout=WAIT_MS)

BERLIN = ZoneInfo("Europe/Berlin")


def instant(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def schedules_of(api: httpx.Client, agent: str) -> list[dict[str, Any]]:
    listed = api.get(f"/v1/agents/{agent}/schedules")
    assert listed.status_code == 200, listed.text
    found: list[dict[str, Any]] = listed.json()["schedules"]
    return found


def test_create_with_jitter_catchup_end_and_paused(
        page: Any, daemon: Daemon, api: httpx.Client, no_policy_violations: None) -> None:
    make_agent(api, "clock")
    sign_in(page, daemon, at="#/agents/clock?tab=schedules")
    page.get_by_role("button", name="New schedule").click()
    form = page.locator("form.new-schedule")
    form.get_by_label("Trigger").select_option("every_s")
    expect(form.get_by_label("Time zone")).to_be_hidden()
    form.get_by_label("Every (seconds)").fill("600")
    form.get_by_label("Session key").fill("ticks")
    form.get_by_label("Message").fill("Look at the queue.")
    form.get_by_label("Catch-up (seconds)").fill("120")
    form.get_by_label("Create paused").check()

    # A jitter as long as the interval: refused beside the jitter, nothing lost.
    form.get_by_label("Jitter (seconds)").fill("600")
    form.get_by_role("button", name="Add schedule").click()
    jitter_error = form.locator('[data-error-for="jitter_s"]')
    expect(jitter_error).to_contain_text("below every_s")
    expect(form.get_by_label("Jitter (seconds)")).to_have_attribute("aria-invalid", "true")
    expect(form.get_by_label("Message")).to_have_value("Look at the queue.")
    expect(form.get_by_label("Catch-up (seconds)")).to_have_value("120")
    assert schedules_of(api, "clock") == []

    # An end time already past: beside the end time. Typing one shows the time zone it
    # is read in.
    form.get_by_label("Jitter (seconds)").fill("30")
    past = (datetime.now(BERLIN) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    form.get_by_label("Ends at").fill(past)
    expect(form.get_by_label("Time zone")).to_be_visible()
    form.get_by_label("Time zone").fill("Europe/Berlin")
    form.get_by_role("button", name="Add schedule").click()
    ends_error = form.locator('[data-error-for="ends_at"]')
    expect(ends_error).to_contain_text("past")
    expect(jitter_error).to_be_hidden()
    expect(form.get_by_label("Ends at")).to_have_value(past)
    expect(form.get_by_label("Jitter (seconds)")).to_have_value("30")
    assert schedules_of(api, "clock") == []

    # Fixed: every field stored as typed, the end read in Berlin time.
    ends = (datetime.now(BERLIN) + timedelta(days=3)).replace(hour=18, minute=30, second=0,
                                                              microsecond=0)
    form.get_by_label("Ends at").fill(ends.strftime("%Y-%m-%dT%H:%M"))
    form.get_by_role("button", name="Add schedule").click()
    expect(form).to_have_count(0)
    [made] = schedules_of(api, "clock")
    stored = api.get(f"/v1/schedules/{made['id']}").json()
    assert (stored["every_s"], stored["session"], stored["content"], stored["jitter_s"],
            stored["catchup_s"], stored["enabled"], stored["timezone"]) == (
        600, "ticks", "Look at the queue.", 30, 120, False, "Europe/Berlin")
    assert instant(stored["ends_at"]) == ends
    row = page.locator(f'[data-schedule="{made["id"]}"]')
    expect(row).to_contain_text("every 10m")
    expect(row).to_contain_text("paused")


def test_once_at_a_time_shows_its_next_fire(
        page: Any, daemon: Daemon, api: httpx.Client, no_policy_violations: None) -> None:
    make_agent(api, "clock")
    sign_in(page, daemon, at="#/agents/clock?tab=schedules")
    page.get_by_role("button", name="New schedule").click()
    form = page.locator("form.new-schedule")
    form.get_by_label("Trigger").select_option("at")
    fire = (datetime.now(UTC) + timedelta(minutes=10)).replace(second=0, microsecond=0)
    form.get_by_label("At", exact=True).fill(fire.strftime("%Y-%m-%dT%H:%M"))
    form.get_by_label("A new session per fire").check()
    form.get_by_label("Message").fill("Stand up and stretch.")
    form.get_by_role("button", name="Add schedule").click()
    expect(form).to_have_count(0)
    [made] = schedules_of(api, "clock")
    assert instant(made["at"]) == fire and made["session"] is None and made["enabled"]
    assert instant(made["next_fire_at"]) == fire
    row = page.locator(f'[data-schedule="{made["id"]}"]')
    expect(row).to_contain_text("once")
    # The next fire column shows the fire time (a <time> with its instant).
    expect(row.locator(f'td:nth-child(4) time[datetime="{made["next_fire_at"]}"]')).to_be_visible()


def test_edit_a_schedule(page: Any, daemon: Daemon, api: httpx.Client,
                         no_policy_violations: None) -> None:
    make_agent(api, "clock")
    created = api.post("/v1/agents/clock/schedules", json={
        "cron": "0 9 * * *", "timezone": "Europe/Berlin", "session": "digest",
        "content": "Send the morning digest.", "jitter_s": 15, "catchup_s": 300,
        "ends_at": "2030-01-01T12:00:00", "overlap": "enqueue"})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    before = api.get(f"/v1/schedules/{sid}").json()
    patches: list[Any] = []
    page.on("request", lambda r: patches.append(r.post_data_json)
            if r.method == "PATCH" and r.url.endswith(f"/v1/schedules/{sid}") else None)
    sign_in(page, daemon, at="#/agents/clock?tab=schedules")
    row = page.locator(f'[data-schedule="{sid}"]')
    edit = row.get_by_role("button", name="Edit")

    # The form holds the schedule's values, its times in its own zone.
    edit.click()
    form = page.locator("form.edit-schedule")
    expect(form.get_by_label("Trigger")).to_be_focused()
    expect(form.get_by_label("Trigger")).to_have_value("cron")
    expect(form.get_by_label("Cron expression")).to_have_value("0 9 * * *")
    expect(form.get_by_label("Time zone")).to_have_value("Europe/Berlin")
    expect(form.get_by_label("Session key")).to_have_value("digest")
    expect(form.get_by_label("Message")).to_have_value("Send the morning digest.")
    expect(form.get_by_label("Overlap")).to_have_value("enqueue")
    expect(form.get_by_label("Jitter (seconds)")).to_have_value("15")
    expect(form.get_by_label("Catch-up (seconds)")).to_have_value("300")
    expect(form.get_by_label("Ends at")).to_have_value("2030-01-01T12:00")
    expect(form.get_by_label("Paused")).not_to_be_checked()
    expect(edit).to_be_disabled()  # one edit at a time

    # An invalid cron expression: refused beside the cron field, what was typed kept.
    form.get_by_label("Cron expression").fill("61 * * * *")
    form.get_by_label("Message").fill("Send the evening digest.")
    form.get_by_role("button", name="Save schedule").click()
    cron_error = form.locator('[data-error-for="cron"]')
    expect(cron_error).to_be_visible()
    expect(cron_error).not_to_be_empty()
    expect(form.get_by_label("Cron expression")).to_have_attribute("aria-invalid", "true")
    expect(form.get_by_label("Cron expression")).to_have_value("61 * * * *")
    expect(form.get_by_label("Message")).to_have_value("Send the evening digest.")
    assert api.get(f"/v1/schedules/{sid}").json() == before

    # Cancel: the form closes, the schedule is as it was, focus back on its Edit.
    form.get_by_role("button", name="Cancel").click()
    expect(form).to_have_count(0)
    expect(edit).to_be_focused()
    assert api.get(f"/v1/schedules/{sid}").json() == before
    # Escape cancels too, from the keyboard alone.
    page.keyboard.press("Enter")
    expect(form.get_by_label("Cron expression")).to_have_value("0 9 * * *")  # reopened fresh
    page.keyboard.press("Escape")
    expect(form).to_have_count(0)
    expect(edit).to_be_focused()

    # The message and the cron expression changed: only they are sent, and stored.
    edit.click()
    form.get_by_label("Cron expression").fill("30 7 * * 1-5")
    form.get_by_label("Message").fill("Send the evening digest.")
    form.get_by_role("button", name="Save schedule").click()
    expect(form).to_have_count(0)
    after = api.get(f"/v1/schedules/{sid}").json()
    assert (after["cron"], after["content"]) == ("30 7 * * 1-5", "Send the evening digest.")
    for key in ("timezone", "session", "jitter_s", "catchup_s", "ends_at", "overlap",
                "missed", "enabled"):
        assert after[key] == before[key], key
    assert after["next_fire_at"] != before["next_fire_at"]
    assert patches[-1] == {"cron": "30 7 * * 1-5", "content": "Send the evening digest."}
    expect(row).to_contain_text("30 7 * * 1-5")
    expect(row).to_contain_text("Send the evening digest.")
    expect(row.locator(f'time[datetime="{after["next_fire_at"]}"]')).to_be_visible()

    # Another trigger kind, a new session per fire, paused: PATCH takes them all.
    edit.click()
    form.get_by_label("Trigger").select_option("every_s")
    form.get_by_label("Every (seconds)").fill("3600")
    form.get_by_label("A new session per fire").check()
    form.get_by_label("Paused").check()
    form.get_by_role("button", name="Save schedule").click()
    expect(form).to_have_count(0)
    last = api.get(f"/v1/schedules/{sid}").json()
    assert (last["cron"], last["every_s"], last["session"], last["enabled"]) == (
        None, 3600, None, False)
    assert last["content"] == "Send the evening digest."
    expect(row).to_contain_text("every 1h")
    expect(row).to_contain_text("new each fire")
    expect(row).to_contain_text("paused")


def test_an_edit_survives_the_list_redrawn_by_fires(
        page: Any, daemon: Daemon, api: httpx.Client, no_policy_violations: None) -> None:
    make_agent(api, "busy", settings={"schedules": {"min_interval_s": 1}})
    ticking = api.post("/v1/agents/busy/schedules",
                       json={"every_s": 1, "content": "tick", "session": "ticks"})
    assert ticking.status_code == 201, ticking.text
    quiet = api.post("/v1/agents/busy/schedules",
                     json={"every_s": 3600, "content": "hourly", "session": "hours"})
    assert quiet.status_code == 201, quiet.text
    sign_in(page, daemon, at="#/agents/busy?tab=schedules")
    tick_row = page.locator(f'[data-schedule="{ticking.json()["id"]}"]')
    page.locator(f'[data-schedule="{quiet.json()["id"]}"]').get_by_role(
        "button", name="Edit").click()
    message = page.locator("form.edit-schedule").get_by_label("Message")
    message.click()
    page.keyboard.press("End")
    page.keyboard.type(" and more")
    # The ticking schedule's fires redraw the list (its fire count moves on) while the
    # form is open: what was typed, the focus and the caret stay.
    seen = int(tick_row.locator("td.num").inner_text().split()[0].replace(",", ""))
    page.wait_for_function(
        "([id, n]) => { const c = document.querySelector(`tr[data-schedule=\"${id}\"] td.num`);"
        " return c && parseInt(c.textContent.replace(/,/g, ''), 10) >= n; }",
        arg=[ticking.json()["id"], seen + 2], timeout=60_000)
    expect(message).to_be_focused()
    page.keyboard.type("!")
    expect(message).to_have_value("hourly and more!")
