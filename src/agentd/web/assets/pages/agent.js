// An agent (#/agents/NAME, a tab with ?tab=...): its state and controls, then tabs for
// its settings, sessions, memory, schedules, skills, heartbeat and OAuth MCP servers. Live from the
// activity feed for this agent: its agent.updated / agent.state frames (a change by
// another client, on any node) re-read the agent, its agent.deleted frame shows it gone
// at once; a slow poll is the backstop while the feed is down. A deleted agent is said
// so plainly; what the user typed stays on the page.

import { ApiError, del, get, path, post } from "../api.js";
import { follow } from "../live.js";
import { banner, errorBox, fmtInt, h, toast, visible } from "../ui.js";
import { confirmDialog, every, statePills, when } from "./agent-shared.js";
import { settingsTab } from "./agent-settings.js";
import { heartbeatTab, sessionsTab } from "./agent-tabs.js";
import { skillsTab } from "./agent-skills.js";
import { schedulesTab } from "./agent-schedules.js";
import { memoryTab } from "./agent-memory.js";
import { mcpTab } from "./agent-mcp.js";

export const title = "Agent";

const TABS = [
  ["settings", "Settings", settingsTab],
  ["sessions", "Sessions", sessionsTab],
  ["memory", "Memory", memoryTab],
  ["schedules", "Schedules", schedulesTab],
  ["skills", "Skills", skillsTab],
  ["heartbeat", "Heartbeat", heartbeatTab],
  ["mcp", "MCP", mcpTab],
];
// The backstop only: the feed says when the agent changes.
const POLL_MS = 30000;
const AGENT_CHANGES = new Set(["agent.created", "agent.updated", "agent.state"]);

export async function render(root, params, ctx) {
  // Agent names cannot hold "?", so "NAME?tab=memory" splits without doubt.
  const [name, query = ""] = String(params.agent).split("?", 2);
  const wantedTab = new URLSearchParams(query).get("tab");
  ctx.setTitle(name);

  const crumbs = h("nav.crumbs", { "aria-label": "Breadcrumbs" }, h("a", { href: "#/" }, "Overview"), " / ", name);
  const section = h("section.page.agent-page", { dataset: { agent: name } }, crumbs);
  root.append(section);

  let agent;
  try {
    agent = await get(path`/v1/agents/${name}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return undefined;
    if (e instanceof ApiError && e.status === 404) {
      section.append(h("div.gone-box", { role: "alert" },
        h("h1", "No agent named ", h("code", name)),
        h("p", "It may have been deleted, or the link is wrong."),
        h("a.button", { href: "#/" }, "Back to the overview")));
      return undefined;
    }
    section.append(errorBox(e, `Could not load ${name}`),
      h("button", { type: "button", onclick: () => window.dispatchEvent(new HashChangeEvent("hashchange")) }, "Try again"));
    return undefined;
  }

  const state = { agent, gone: false, tab: null, tabView: null, feed: "connecting", pollOk: true };

  // -- header -------------------------------------------------------------------------------
  const pills = h("span.head-pills");
  const model = h("code.model");
  const meta = h("p.agent-meta");
  const actions = h("div.actions");
  const settingsWarn = h("div.settings-warn");
  const goneBox = h("div.gone-slot");
  section.append(
    h("div.page-head", h("h1.agent-name", name), pills, model, actions),
    meta, goneBox, settingsWarn);

  function drawHead() {
    const a = state.agent;
    pills.replaceChildren(statePills(a));
    model.textContent = visible(a.model);
    meta.replaceChildren(
      `${fmtInt(a.tools.length)} tool${a.tools.length === 1 ? "" : "s"} · tenant `,
      h("code", String((a.settings || {}).tenant || "default")),
      " · created ", when(a.created_at), " · changed ", when(a.updated_at));
    const s = a.state;
    const button = (label, action, opts = {}) => h("button", { type: "button", class: opts.danger ? "danger" : null,
      disabled: state.gone, dataset: { action }, onclick: () => act(action) }, label);
    actions.replaceChildren(...[
      s === "paused" || s === "stopped" || s === "error" ? button("Resume", "resume") : button("Pause", "pause"),
      s === "stopped" ? null : button("Stop", "stop"),
      button("Delete…", "delete", { danger: true })].filter(Boolean));
    const errs = a.settings_errors || [];
    settingsWarn.replaceChildren(...(errs.length ? [h("div.warn-box", { role: "status" },
      h("strong", "This version refuses the stored settings; runs fail until they are fixed (Settings, then Resume):"),
      h("ul", errs.map((e) => h("li", h("code", e.field), ": ", e.message))))] : []));
  }

  async function act(action) {
    if (state.gone) return;
    if (action === "delete") {
      const yes = await confirmDialog({ title: `Delete ${name}?`,
        body: "Its sessions, events, runs, memory and schedules are deleted too; its usage history stays. This cannot be undone.",
        confirm: "Delete agent" });
      if (!yes) return;
      try {
        await del(path`/v1/agents/${name}`);
        toast(`Deleted ${name}`, "ok");
        ctx.navigate("#/");
      } catch (e) {
        failed(e, "Could not delete");
      }
      return;
    }
    if (action === "stop") {
      const yes = await confirmDialog({ title: `Stop ${name}?`,
        body: "Its queued and active runs are cancelled and it refuses messages until resumed.", confirm: "Stop" });
      if (!yes) return;
    }
    try {
      state.agent = await post(path`/v1/agents/${name}/${action}`);
      drawHead();
      toast(`${name}: ${state.agent.state}`, "ok");
    } catch (e) {
      failed(e, `Could not ${action}`);
    }
  }

  function failed(e, what) {
    if (e instanceof ApiError && e.status === 404) { gone(); return; }
    if (e instanceof ApiError && e.status === 401) return;
    toast(`${what}: ${e.message}`, "error");
  }

  // The agent is gone: say so, keep everything the user typed, stop asking.
  function gone() {
    if (state.gone) return;
    state.gone = true;
    poll.stop();
    feed.close();
    ctx.connection("");
    section.classList.add("is-gone");
    banner(`The agent ${name} was deleted. Nothing on this page can be saved any more.`, "error");
    goneBox.replaceChildren(h("div.gone-box", { role: "alert" },
      h("strong", `${name} no longer exists`), " — another client deleted it. ",
      "Anything you typed below is still here to copy. ",
      h("a", { href: "#/" }, "Back to the overview")));
    drawHead();
    if (state.tabView && state.tabView.onGone) state.tabView.onGone();
  }

  // -- tabs -------------------------------------------------------------------------------------
  const tabList = h("div.tabs", { role: "tablist", "aria-label": `${name}'s pages` });
  const panel = h("div.tab-panel", { role: "tabpanel", tabindex: "-1" });
  const tabButtons = TABS.map(([key, label]) => h("button", { type: "button", role: "tab", id: `tab-${key}`,
    "aria-controls": "agent-tab-panel", "aria-selected": "false", tabindex: "-1", dataset: { tab: key },
    onclick: () => showTab(key, true) }, label));
  panel.id = "agent-tab-panel";
  tabList.append(...tabButtons);
  tabList.addEventListener("keydown", (e) => {
    const i = TABS.findIndex(([k]) => k === state.tab);
    const to = e.key === "ArrowRight" ? i + 1 : e.key === "ArrowLeft" ? i - 1 : e.key === "Home" ? 0
      : e.key === "End" ? TABS.length - 1 : null;
    if (to === null) return;
    e.preventDefault();
    const key = TABS[(to + TABS.length) % TABS.length][0];
    showTab(key, true);
    tabButtons.find((b) => b.dataset.tab === key).focus();
  });
  section.append(tabList, panel);

  const tabContext = {
    name, ctx,
    agent: () => state.agent,
    isGone: () => state.gone,
    setAgent(a) { state.agent = a; drawHead(); },
    gone,
  };

  function showTab(key, user) {
    if (!TABS.some(([k]) => k === key)) key = "settings";
    if (state.tab === key) return;
    if (state.tabView && state.tabView.cleanup) state.tabView.cleanup();
    state.tab = key;
    for (const b of tabButtons) {
      const on = b.dataset.tab === key;
      b.setAttribute("aria-selected", String(on));
      b.tabIndex = on ? 0 : -1;
    }
    panel.setAttribute("aria-labelledby", `tab-${key}`);
    panel.replaceChildren();
    const make = TABS.find(([k]) => k === key)[2];
    state.tabView = make(panel, tabContext) || {};
    // A tab is part of the address (shareable, back-button free): replaceState does not
    // re-route the page.
    if (user) history.replaceState(null, "", `${ctx.agentHref(name)}${key === "settings" ? "" : `?tab=${key}`}`);
  }

  // -- live ---------------------------------------------------------------------------------------
  async function refreshAgent() {
    if (state.gone) return;
    try {
      const a = await get(path`/v1/agents/${name}`);
      const changed = a.updated_at !== state.agent.updated_at || a.state !== state.agent.state;
      state.agent = a;
      if (changed) {
        drawHead();
        if (state.tabView && state.tabView.onAgent) state.tabView.onAgent(a);
      }
      state.pollOk = true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) { gone(); return; }
      if (e instanceof ApiError && e.status === 401) return;
      state.pollOk = false;
    }
    showConnection();
  }
  function showConnection(detail) {
    if (state.gone) return;
    if (state.feed === "live" && state.pollOk) ctx.connection("live");
    else if (state.feed === "connecting" && state.pollOk) ctx.connection("");
    else ctx.connection("reconnecting", detail);
  }
  const poll = every(POLL_MS, refreshAgent);
  let pending = null;
  const feed = follow(`/v1/events?agent=${encodeURIComponent(name)}`, {
    onEvent(frame, data) {
      const own = data && typeof data === "object" && data.agent === name;
      if (frame.event === "agent.deleted") { if (own) gone(); return; }
      if (AGENT_CHANGES.has(frame.event)) {
        // (not a session's event: the tabs are not told) Re-read the agent now.
        if (own) poll.now();
        return;
      }
      if (state.tabView && state.tabView.onEvent) state.tabView.onEvent(frame, data);
      if (!pending) pending = setTimeout(() => { pending = null; poll.now(); }, 500);
    },
    onState(s, detail) {
      if (s === "refused" && detail && detail.status === 404) { gone(); return; }
      // Back after a break: a change made meanwhile was not heard; read it now.
      if (s === "reconnecting") state.feedWasDown = true;
      if (s === "live" && state.feedWasDown) { state.feedWasDown = false; poll.now(); }
      state.feed = s === "refused" ? "offline" : s;
      showConnection(typeof detail === "string" ? detail : "");
    },
  });

  drawHead();
  showTab(wantedTab || "settings", false);
  return () => {
    poll.stop();
    feed.close();
    clearTimeout(pending);
    if (state.tabView && state.tabView.cleanup) state.tabView.cleanup();
  };
}
