// The overview (#/): the daemon at a glance (GET /v1/overview) and the agents, a page
// at a time by name (GET /v1/agents?limit&after&q&state), so ten thousand agents cost
// what a hundred do. Live: the activity feed (GET /v1/events) asks for a refresh, at
// most once a second, on every frame: sessions' events and agents created, changed,
// paused, resumed, stopped or deleted by any client on any node (agent.* frames). A
// slow poll (30 s) is the backstop; while the feed is down (nothing to hear from) the
// page asks every 5 s instead, and at once when it drops, so an unreachable daemon is
// said so and the page comes back by itself.

import { ApiError, get } from "../api.js";
import { follow } from "../live.js";
import { debounce, errorBox, fmtBytes, fmtCost, fmtInt, fmtTokens, h } from "../ui.js";
import { STATES, every, statePills, when } from "./agent-shared.js";
import { newAgentForm } from "./agent-new.js";

export const title = "Overview";

const PAGE = 100;
const POLL_MS = 30000;
const DOWN_POLL_MS = 5000;
const KEEP = "agentd.overview.filter";

export async function render(root, params, ctx) {
  const kept = readKept();
  const view = { q: kept.q, state: kept.state, cursors: [null], page: 0, rows: [], next: null,
    summary: null, listSeq: 0, listKey: "", feed: "connecting", pollOk: true, gone: false };

  // -- the page's frame ----------------------------------------------------------------
  const toggle = h("button.primary#new-agent-toggle", { type: "button", "aria-expanded": "false",
    "aria-controls": "new-agent" }, "New agent");
  const updated = h("span.updated", { "aria-live": "off" });
  const cards = h("div.cards.summary-cards#summary", { role: "region", "aria-label": "Summary" });
  const formSlot = h("div#new-agent", { hidden: true });
  const search = h("input#agent-search", { type: "search", placeholder: "Search agents by name  ( / )",
    "aria-label": "Search agents by name", dataset: { search: "" }, autocomplete: "off",
    spellcheck: "false", value: view.q, maxlength: "64" });
  const stateSelect = h("select#agent-state", { "aria-label": "Only agents in this state" },
    h("option", { value: "" }, "Every state"),
    STATES.map((s) => h("option", { value: s, selected: s === view.state }, s)));
  const count = h("span.list-count#agent-count", { role: "status", "aria-live": "polite" });
  const listError = h("div.list-error");
  const list = h("div.agent-list#agent-list");
  const prev = h("button#agents-prev", { type: "button", disabled: true }, "← Previous");
  const next = h("button#agents-next", { type: "button", disabled: true }, "Next →");
  const pageLabel = h("span.page-label");

  root.append(h("section.page.overview",
    h("div.page-head", h("h1", "Overview"), updated, h("div.actions", toggle)),
    formSlot,
    cards,
    h("section.panel.agents-panel", { "aria-labelledby": "agents-title" },
      h("div.list-toolbar",
        h("h2#agents-title", "Agents"),
        h("div.list-filters", search, stateSelect),
        count),
      listError,
      list,
      h("div.pager", prev, pageLabel, next))));

  // -- the new agent form ----------------------------------------------------------------
  let form = null;
  function openForm(open) {
    formSlot.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open) {
      if (!form) {
        form = newAgentForm({ onCancel: () => openForm(false), onCreated: (agent) => ctx.navigate(ctx.agentHref(agent.name)) });
        formSlot.append(form.el);
      }
      form.focus();
    } else {
      toggle.focus();
    }
  }
  toggle.addEventListener("click", () => openForm(formSlot.hidden));

  // -- the summary -------------------------------------------------------------------------
  async function loadSummary() {
    const s = await get("/v1/overview");
    view.summary = s;
    // The disk is measured off the request: ask again soon for the first figures.
    if (s.sandbox.measured_at === null && !view.gone) setTimeout(() => { if (!view.gone) poll.now(); }, 1200);
    drawCards(cards, s, (state) => { stateSelect.value = state; filtersChanged(); });
    updated.textContent = "";
    updated.append("Updated ", when(s.at));
    drawCount();
  }

  // -- the agent list -------------------------------------------------------------------------
  async function loadList() {
    const mine = ++view.listSeq;
    const after = view.cursors[view.page];
    list.setAttribute("aria-busy", "true");
    try {
      const body = await get("/v1/agents", { query: { limit: PAGE, after, q: view.q || undefined,
        state: view.state || undefined } });
      if (mine !== view.listSeq) return;
      listError.replaceChildren();
      view.rows = body.agents;
      view.next = body.next_after;
      drawList();
    } catch (e) {
      if (mine !== view.listSeq) return;
      if (e instanceof ApiError && e.status === 401) return;
      listError.replaceChildren(errorBox(e, "Could not list the agents"));
      throw e;
    } finally {
      if (mine === view.listSeq) list.removeAttribute("aria-busy");
    }
  }

  function drawList() {
    // Redrawn only when something shown changed: a poll keeps focus and scroll as they are.
    const key = JSON.stringify(view.rows.map((a) => [a.name, a.state, a.awake, a.model, a.tools.length,
      a.updated_at, (a.settings || {}).tenant])) + view.page + view.next;
    drawCount();
    prev.disabled = view.page === 0;
    next.disabled = !view.next;
    pageLabel.textContent = `Page ${view.page + 1}`;
    if (key === view.listKey) return;
    view.listKey = key;
    const focused = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.agentLink : undefined;
    if (!view.rows.length) {
      const filtered = view.q || view.state;
      list.replaceChildren(h("p.empty", filtered ? "No agent matches." : "No agents yet. ",
        filtered ? null : h("button.linkish", { type: "button", onclick: () => openForm(true) }, "Create the first one"),
        filtered ? null : h("span", " or run ", h("code", "agentd create NAME"), ".")));
      return;
    }
    list.replaceChildren(agentTable(view.rows, ctx));
    if (focused !== undefined) {
      const again = list.querySelector(`[data-agent-link="${CSS.escape(focused)}"]`);
      if (again) again.focus({ preventScroll: true });
    }
  }

  function drawCount() {
    const s = view.summary;
    const first = view.page * PAGE + 1;
    const last = view.page * PAGE + view.rows.length;
    let total = null;
    if (s && !view.q) total = view.state ? s.agents.by_state[view.state] : s.agents.total;
    count.textContent = !view.rows.length ? "" : total !== null && total !== undefined
      ? `${fmtInt(first)}–${fmtInt(last)} of ${fmtInt(total)}`
      : `${fmtInt(first)}–${fmtInt(last)}${view.next ? " of more" : ""}`;
  }

  function filtersChanged() {
    view.q = search.value.trim();
    view.state = stateSelect.value;
    sessionStorage.setItem(KEEP, JSON.stringify({ q: view.q, state: view.state }));
    view.cursors = [null];
    view.page = 0;
    refreshList();
  }
  search.addEventListener("input", debounce(filtersChanged, 200));
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); filtersChanged(); } });
  stateSelect.addEventListener("change", filtersChanged);
  prev.addEventListener("click", () => { if (view.page > 0) { view.page -= 1; refreshList(); } });
  next.addEventListener("click", () => {
    if (!view.next) return;
    view.cursors[view.page + 1] = view.next;
    view.page += 1;
    refreshList();
  });
  const refreshList = () => loadList().catch(() => {});

  // -- live ----------------------------------------------------------------------------------
  function showConnection(detail) {
    if (view.gone) return;
    if (view.feed === "live" && view.pollOk) ctx.connection("live");
    else if (view.feed === "connecting" && view.pollOk) ctx.connection("");
    else ctx.connection("reconnecting", detail);
  }
  async function refresh() {
    try {
      await Promise.all([loadSummary(), loadList()]);
      view.pollOk = true;
      cards.classList.remove("stale");
      showConnection();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      view.pollOk = false;
      cards.classList.add("stale");
      showConnection(e.message);
    }
  }
  const poll = every(POLL_MS, refresh);
  const soon = throttle(() => poll.now(), 1000);
  let downPoll = null;
  function feedDown(down) {
    if (down && !downPoll && !view.gone) {
      soon();
      downPoll = setInterval(() => poll.now(), DOWN_POLL_MS);
    } else if (!down && downPoll) {
      clearInterval(downPoll);
      downPoll = null;
    }
  }
  const feed = follow("/v1/events", {
    onEvent() { soon(); },
    onState(state, detail) {
      view.feed = state;
      if (state === "reconnecting" || state === "refused") feedDown(true);
      else if (state === "live") feedDown(false);
      if (state === "refused") {
        view.feed = "offline";
        showConnection(detail && detail.status ? `the feed answered ${detail.status}` : "");
        return;
      }
      // Back after a break: what changed meanwhile was not on the feed. (Not on the
      // first connection: the page has just loaded everything.)
      if (state === "live" && view.feedWasDown) soon();
      if (state === "reconnecting") view.feedWasDown = true;
      showConnection(typeof detail === "string" ? detail : "");
    },
  });

  await refresh();
  // Nothing came back at all: say what the page waits for. (Either half may have been drawn
  // before the daemon went away: the list can arrive before the summary fails.)
  if (!view.summary && !view.pollOk && view.listKey === "") {
    list.replaceChildren(h("p.empty", "Waiting for the daemon…"));
  }
  return () => {
    view.gone = true;
    feedDown(false);
    poll.stop();
    feed.close();
  };
}

function readKept() {
  try {
    const kept = JSON.parse(sessionStorage.getItem(KEEP) || "{}");
    return { q: typeof kept.q === "string" ? kept.q : "",
      state: STATES.includes(kept.state) ? kept.state : "" };
  } catch {
    return { q: "", state: "" };
  }
}

// fn at most once per ms: at once, and once more at the end of a burst.
function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  return () => {
    const wait = last + ms - Date.now();
    if (wait <= 0) {
      last = Date.now();
      fn();
    } else if (!timer) {
      timer = setTimeout(() => { timer = null; last = Date.now(); fn(); }, wait);
    }
  };
}

function card(key, label, value, sub, { tone, action } = {}) {
  return h("div.card", { dataset: { card: key }, class: tone ? "card-" + tone : null },
    h("div.label", label),
    h("div.value", value),
    h("div.sub", sub),
    action || null);
}

function drawCards(box, s, filterTo) {
  const a = s.agents;
  const usage = s.usage_today;
  const disk = s.sandbox;
  const diskTotal = disk.workspaces_bytes === null ? null : disk.workspaces_bytes + (disk.snapshots_bytes || 0);
  const byState = (state) => h("button.linkish", { type: "button", onclick: () => filterTo(state),
    title: `Show the ${state} agents` }, `${fmtInt(a.by_state[state])} ${state}`);
  box.replaceChildren(
    card("agents", "Agents", fmtInt(a.total), [`${fmtInt(a.awake)} awake · ${fmtInt(a.asleep)} asleep`]),
    card("paused", "Paused · stopped", `${fmtInt(a.by_state.paused)} · ${fmtInt(a.by_state.stopped)}`,
      [byState("paused"), " · ", byState("stopped"), a.by_state.error ? [" · ", byState("error")] : null],
      { tone: a.by_state.error ? "bad" : null }),
    card("runs", "Runs active", fmtInt(s.runs.running),
      `${fmtInt(s.runs.queued)} queued · ${fmtInt(s.node.model_calls_queued)} model calls waiting`),
    card("approvals", "Approvals waiting", fmtInt(s.approvals_waiting),
      h("a", { href: "#/approvals" }, s.approvals_waiting ? "Open the inbox" : "Inbox"),
      { tone: s.approvals_waiting ? "warn" : null }),
    card("tokens", "Tokens today", fmtTokens(usage.input_tokens + usage.output_tokens),
      `${fmtCost(usage.cost_usd)} · ${fmtInt(usage.calls)} calls · ${usage.day} UTC`),
    card("sandbox", "Sandbox disk", diskTotal === null ? "…" : fmtBytes(diskTotal),
      disk.workspaces_bytes === null ? `${disk.backend} · measuring…`
        : `${disk.backend} · workspaces ${fmtBytes(disk.workspaces_bytes)} · snapshots ${fmtBytes(disk.snapshots_bytes)}`),
    card("store", "Store", fmtBytes(s.store.bytes), s.store.dialect),
  );
}

function agentTable(rows, ctx) {
  return h("div.table-wrap",
    h("table.agents", { "aria-describedby": "agent-count" },
      h("thead", h("tr",
        h("th", { scope: "col" }, "Name"),
        h("th", { scope: "col" }, "State"),
        h("th", { scope: "col" }, "Model"),
        h("th.num", { scope: "col" }, "Tools"),
        h("th.hide-narrow", { scope: "col" }, "Tenant"),
        h("th.hide-narrow", { scope: "col" }, "Changed"))),
      h("tbody", rows.map((a) => h("tr", { dataset: { agent: a.name } },
        h("td", h("a.agent-link", { href: ctx.agentHref(a.name), dataset: { agentLink: a.name } }, a.name),
          a.settings_errors && a.settings_errors.length
            ? h("span.pill.pill-error.settings-flag", { title: "Its stored settings need fixing" }, "settings") : null),
        h("td", statePills(a)),
        h("td", h("code.model", a.model)),
        h("td.num", { title: a.tools.join(", ") }, fmtInt(a.tools.length)),
        h("td.hide-narrow", String((a.settings || {}).tenant || "default")),
        h("td.hide-narrow", when(a.updated_at)))))));
}
