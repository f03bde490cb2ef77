// A session: the live chat (the reply streams token by token), the run timeline, the
// checkpoints, and the controls of the run under way. The page holds a window of the
// session's log: the tail first, older pages on scroll (GET .../events?before=), and
// the live stream from the last seq it holds, so a reconnect or a daemon restart
// continues where it left off with no gap and no duplicate.

import { ApiError, get, path, post } from "../api.js";
import { follow } from "../live.js";
import { onFeed } from "../nav.js";
import { append, banner, clear, errorBox, h, pill, toast } from "../ui.js";
import { chatRow, streamingBubble } from "./session-chat.js";
import { checkpointsPanel } from "./session-checkpoints.js";
import { chatKind, createLog, TERMINAL } from "./session-log.js";
import { jsonText, stepRow } from "./session-steps.js";
import { windowList } from "./session-window.js";

export const title = "Session";

const FIRST_PAGE = 400;
const OLDER_PAGE = 500;
const ACTIVE = "queued,running,waiting_approval";
const MODES = [
  ["enqueue", "Queue after the current run"],
  ["steer", "Steer the running run"],
  ["interrupt", "Interrupt the running run"],
  ["reject", "Refuse if busy"],
];

export async function render(root, { agent, key }, ctx) {
  ctx.setTitle(`${key} · ${agent}`);
  const base = path`/v1/agents/${agent}/sessions/${key}`;
  const log = createLog();
  let stream = null;
  let closed = false;
  let exists = false;
  let pending = null; // the streaming bubble
  let wasLive = false;
  let olderLoad = null;

  const rowCtx = {
    isArchived: (seq) => log.isArchived(seq),
    pendingApproval: (id) => log.activeRuns().some((r) => r.approval && r.approval.id === id),
    sessionHref: ctx.sessionHref,
    blobUrl: (sha) => `${base}/blobs/${sha}`,
    restore, fork, decide,
    snapshotChanges: (ref, seq) => get(path`/v1/agents/${agent}/snapshots/${ref}`, { query: { session: key, seq } }),
  };

  // -- layout --------------------------------------------------------------------
  const statusPill = h("span.s-status");
  const notice = h("div.s-notice", { hidden: true });
  const runbar = h("div.runbar", { hidden: true, "aria-live": "polite" });

  const chat = windowList({
    label: "Chat", empty: "No messages yet.",
    keyOf: (item) => item.bubble ? "p" : item.seq,
    render: (item) => item.bubble ? item.bubble.el : chatRow(item, rowCtx),
    loadOlder, max: 240, step: 80,
  });
  const timeline = windowList({
    label: "Run timeline", empty: "No events yet.",
    keyOf: (e) => e.seq,
    render: (e) => stepRow(e, rowCtx),
    loadOlder, max: 240, step: 80,
  });
  const checkpoints = checkpointsPanel({ agent, key, restore, fork });

  const textarea = h("textarea#composer", { name: "content", rows: "2", placeholder: "Message the agent  (Enter sends, Shift+Enter for a new line)",
    "aria-label": "Message", "aria-describedby": "composer-error" });
  const mode = h("select#mode", { name: "mode", "aria-label": "When a run is under way" },
    MODES.map(([value, label]) => h("option", { value }, label)));
  const sendButton = h("button.primary#send", { type: "submit" }, "Send");
  const composerError = h("p.field-error#composer-error", { role: "alert", hidden: true });
  const composer = h("form.composer", { novalidate: true },
    textarea, h("div.composer-bar", h("label.inline", { for: "mode" }, "If busy"), mode, sendButton), composerError);

  // A restore archives later messages: hidden from the chat unless asked for.
  const archivedToggle = h("button#show-archived", { type: "button", "aria-pressed": "false",
    title: "Show the messages a restore archived" }, "Show archived");
  archivedToggle.addEventListener("click", () => {
    const on = archivedToggle.getAttribute("aria-pressed") !== "true";
    archivedToggle.setAttribute("aria-pressed", String(on));
    archivedToggle.textContent = on ? "Hide archived" : "Show archived";
    document.getElementById("pane-chat").classList.toggle("show-archived", on);
    chat.followIfAtBottom();
  });
  const wide = matchMedia("(min-width: 1000px)");
  let tab = "chat";
  let right = "timeline";
  const tabButtons = {};
  const tabs = h("div.tabs.s-tabs", { role: "tablist", "aria-label": "Session views" },
    ["chat", "timeline", "checkpoints"].map((name) => {
      const b = h("button", { type: "button", role: "tab", id: `tab-${name}`, "aria-controls": `pane-${name}`,
        dataset: { tab: name }, onclick: () => select(name) }, name[0].toUpperCase() + name.slice(1));
      tabButtons[name] = b;
      return b;
    }));
  const page = h("section.page.session-page",
    h("div.crumbs", h("a", { href: "#/" }, "Overview"), " › ", h("a", { href: ctx.agentHref(agent) }, agent), " › sessions"),
    h("div.page-head", h("h1.s-key", key), statusPill,
      h("div.actions", archivedToggle, h("a.button", { href: ctx.agentHref(agent) }, "Agent"))),
    notice,
    tabs,
    h("div.s-grid",
      h("div.s-pane.s-chat#pane-chat", { role: "tabpanel", "aria-labelledby": "tab-chat" }, chat.el, runbar, composer),
      h("div.s-pane.s-timeline#pane-timeline", { role: "tabpanel", "aria-labelledby": "tab-timeline" }, timeline.el),
      h("div.s-pane.s-cps#pane-checkpoints", { role: "tabpanel", "aria-labelledby": "tab-checkpoints" }, checkpoints.el)));
  root.append(page);

  function select(name) {
    tab = name;
    if (name !== "chat") right = name;
    page.dataset.tab = tab;
    page.dataset.right = right;
    for (const [n, b] of Object.entries(tabButtons)) {
      b.setAttribute("aria-selected", String(wide.matches ? n === right : n === tab));
    }
  }
  const onWide = () => select(tab);
  wide.addEventListener("change", onWide);
  select("chat");

  // -- the log -------------------------------------------------------------------
  function chatItems(events) { return events.filter((e) => chatKind(e)); }

  function loadOlder() {
    if (!olderLoad) {
      olderLoad = (async () => {
        const first = log.first;
        if (!first || first <= 1) return false;
        try {
          const page = await get(`${base}/events`, { query: { before: first, limit: OLDER_PAGE } });
          const older = log.prepend(page.events);
          chat.prepend(chatItems(older));
          timeline.prepend(older);
          const more = (log.first || 1) > 1;
          chat.setMore(more);
          timeline.setMore(more);
          return more;
        } catch (e) {
          if (!closed) toast(`Older events could not be read: ${e.message}`, "error");
          return true;
        } finally {
          olderLoad = null;
        }
      })();
    }
    return olderLoad;
  }

  function dropBubble() {
    if (pending) { chat.remove("p"); pending = null; }
  }

  function onToken(data) {
    if (!data || typeof data.text !== "string" || !data.run_id) return;
    if (!pending || pending.runId !== data.run_id) {
      dropBubble();
      pending = streamingBubble(data.run_id);
      // After a reconnect mid-reply the tokens sent meanwhile are gone: the bubble
      // says it shows the rest only (the committed message replaces it whole).
      if (wasLive === "again") pending.el.classList.add("torn");
      chat.append([{ bubble: pending }]);
    }
    if (data.reset || pending.resetOnNext) {
      pending.resetOnNext = false;
      pending.set(data.text);
    } else {
      pending.add(data.text);
    }
    chat.followIfAtBottom();
  }

  function onEvents(list) {
    const { added, restored } = log.append(list);
    if (!added.length) return;
    for (const e of added) {
      if (pending && e.run_id === pending.runId) {
        if (e.kind === "message.assistant" || TERMINAL[e.kind]) dropBubble();
        else if (e.kind === "message.user" && e.data && e.data.steer) pending.resetOnNext = true;
      }
      if (e.kind === "checkpoint") checkpoints.reload();
    }
    chat.append(chatItems(added));
    timeline.append(added);
    if (restored) { chat.refresh(); timeline.refresh(); }
    // A request decided (or its run ended) no longer offers its buttons.
    for (const e of added) {
      if (e.kind === "approval.decided" || TERMINAL[e.kind]) redrawRequests(e.run_id);
    }
    showRuns();
  }

  function redrawRequests(runId) {
    if (!runId) return;
    for (let i = log.events.length - 1; i >= 0; i--) {
      const e = log.events[i];
      if (e.run_id !== runId) continue;
      if (e.kind === "approval.requested") timeline.replace(e.seq, e);
      if (e.kind === "run.queued") break;
    }
  }

  function onState(state, detail) {
    if (closed) return;
    if (state === "live") {
      ctx.connection("live");
      if (wasLive) { dropBubble(); wasLive = "again"; } else wasLive = true;
    } else if (state === "reconnecting") {
      ctx.connection("reconnecting", detail);
    } else if (state === "refused") {
      ctx.connection("offline", `HTTP ${detail.status}`);
      const code = detail.body && detail.body.error && detail.body.error.code;
      gone(code, detail.body && detail.body.error && detail.body.error.message);
    }
  }

  function gone(code, message) {
    if (stream) { stream.close(); stream = null; }
    exists = false;
    dropBubble();
    checkpoints.setExists(false);
    ctx.connection("");
    if (code === "agent_not_found") {
      banner(`The agent ${agent} was deleted: this session is gone with it. What the page shows stays until you leave.`, "error");
      say(`The agent “${agent}” no longer exists.`, "error");
      sendButton.disabled = true;
    } else if (code === "session_not_found") {
      banner("This session was deleted. What the page shows stays until you leave; a message sent now starts a new session with this key.", "error");
      say("This session was deleted. Sending a message starts a new one with the same key.", "error");
    } else if (code === "wrong_session") {
      banner("This session was deleted and started again: the page shows the old one.", "error");
      say("This session was replaced by a new one with the same key. ", "error",
        h("button.small", { type: "button", onclick: () => restart() }, "Show the new session"));
    } else {
      say(`The session's stream was refused: ${message || code || "unknown error"}`, "error");
    }
    showRuns();
  }

  function say(text, kind = "info", ...extra) {
    clear(notice);
    if (!text) { notice.hidden = true; return; }
    notice.hidden = false;
    notice.className = `s-notice notice-${kind}`;
    append(notice, [text, ...extra]);
  }

  // -- runs ----------------------------------------------------------------------
  function showRuns() {
    const runs = log.activeRuns();
    const current = runs.find((r) => r.status !== "queued") || runs[0];
    clear(statusPill);
    statusPill.append(!exists ? pill("created", "new") : !current ? pill("closed", "idle")
      : pill(current.status === "waiting_approval" ? "waiting" : current.status, current.status.replace("_", " ")));
    clear(runbar);
    if (!current || !exists) { runbar.hidden = true; return; }
    runbar.hidden = false;
    const queued = runs.filter((r) => r !== current && r.status === "queued").length;
    append(runbar, [
      pill(current.status === "waiting_approval" ? "waiting" : current.status, current.status.replace("_", " ")),
      h("a.mono.run-id", { href: `#/runs/${encodeURIComponent(current.id)}/trace`, title: `Trace of run ${current.id}` }, current.id),
      current.step ? h("span.muted", ` step ${current.step}`) : null,
      current.waiting && current.status === "running" ? h("span.muted", ` · waiting: ${current.waiting}`) : null,
      queued ? h("span.muted", ` · ${queued} queued`) : null]);
    if (current.status === "waiting_approval") {
      const a = current.approval;
      append(runbar, [h("span.runbar-wait", " needs a decision",
        a ? [" to run ", h("code.tool", a.name || "?"), " ", h("span.mono.args", jsonText(a.arguments ?? {}).slice(0, 120))] : null)]);
      if (a && (a.options || []).includes("approve")) {
        runbar.append(h("button.small.primary", { type: "button", onclick: () => decide(a.id, "approve") }, "Approve"),
          h("button.small.danger", { type: "button", onclick: () => decide(a.id, "deny") }, "Deny"));
      }
      runbar.append(h("a.small", { href: "#/approvals" }, "Inbox"));
    }
    runbar.append(h("button.small.danger.runbar-cancel", { type: "button", onclick: () => cancel(current.id) }, "Cancel run"));
  }

  async function cancel(runId) {
    try {
      await post(path`/v1/runs/${runId}/cancel`, {});
      toast("Cancel asked: the run stops at its next step.");
    } catch (e) {
      toast(`Cancel failed: ${e.message}`, "error");
    }
  }

  async function decide(id, action) {
    try {
      await post(path`/v1/approvals/${id}`, { action });
      toast(action === "approve" ? "Approved." : "Denied.", "ok");
    } catch (e) {
      toast(`The decision was refused: ${e.message}`, "error");
    }
  }

  async function restore(target, label) {
    try {
      await post(`${base}/restore`, target);
      toast(`Restored to ${label}: later events are archived in the log.`, "ok");
    } catch (e) {
      if (e instanceof ApiError && e.code === "session_busy") {
        toast("A run is queued or under way: cancel it or wait, then restore.", "error");
      } else if (e instanceof ApiError && e.status === 404) {
        gone(e.code, e.message);
      } else {
        toast(`Restore failed: ${e.message}`, "error");
      }
    }
  }

  async function fork(target) {
    try {
      const s = await post(`${base}/fork`, target);
      toast(`Forked into ${s.key}.`, "ok");
      ctx.navigate(ctx.sessionHref(agent, s.key));
    } catch (e) {
      toast(`Fork failed: ${e.message}`, "error");
    }
  }

  // -- the composer --------------------------------------------------------------
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  composer.addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = textarea.value;
    composerError.hidden = true;
    textarea.removeAttribute("aria-invalid");
    if (!content.trim()) {
      composerError.hidden = false;
      composerError.textContent = "Write a message first.";
      textarea.focus();
      return;
    }
    sendButton.disabled = true;
    try {
      // A person is waiting on the answer, though the page follows it on the live
      // feed rather than in this request: interactive, ahead of batch work (without
      // wait it was the agent's default, background).
      await post(`${base}/messages`, { content, mode: mode.value, wait: false, priority: "interactive" });
      textarea.value = "";
      if (!exists && !closed) await restart();
    } catch (e) {
      // The text stays in the box: nothing typed is lost.
      composerError.hidden = false;
      composerError.textContent = e instanceof ApiError && e.code === "session_busy"
        ? "A run is under way and “Refuse if busy” is chosen: nothing was sent."
        : `Not sent: ${e.message}`;
      textarea.setAttribute("aria-invalid", "true");
    } finally {
      sendButton.disabled = false;
    }
  });

  // -- start ---------------------------------------------------------------------
  async function start() {
    let session;
    try {
      session = await get(base);
    } catch (e) {
      if (e instanceof ApiError && e.code === "session_not_found") {
        exists = false;
        checkpoints.setExists(false);
        chat.reset([], { hasOlder: false });
        timeline.reset([], { hasOlder: false });
        say("A new session: your first message creates it.");
        showRuns();
        checkpoints.reload();
        textarea.focus();
        return;
      }
      if (e instanceof ApiError && e.code === "agent_not_found") {
        clear(page).append(h("h1", key), errorBox(e, `No agent “${agent}”`),
          h("p", h("a", { href: "#/" }, "Back to the overview")));
        return;
      }
      throw e;
    }
    exists = true;
    say(null);
    checkpoints.setExists(true);
    sendButton.disabled = false;
    const [runs, approvals] = await Promise.all([
      get("/v1/runs", { query: { agent, session: key, status: ACTIVE, limit: 100 } }).catch(() => ({ runs: [] })),
      get("/v1/approvals", { query: { agent } }).catch(() => ({ approvals: [] })),
    ]);
    const page1 = await get(`${base}/events`, { query: { before: session.last_seq + 1, limit: FIRST_PAGE } });
    if (closed) return;
    log.clear();
    log.seedRuns([...runs.runs].reverse());
    for (const a of approvals.approvals) {
      const run = log.activeRuns().find((r) => r.id === a.run_id);
      if (run) { run.status = "waiting_approval"; run.approval = { id: a.approval_id, name: a.name, arguments: a.arguments, options: a.options, kind: a.kind }; }
    }
    dropBubble();
    log.append(page1.events);
    const more = (log.first || 1) > 1;
    chat.reset(chatItems(log.events), { hasOlder: more });
    timeline.reset([...log.events], { hasOlder: more });
    showRuns();
    checkpoints.reload();
    wasLive = false;
    stream = follow(`${base}/events`, {
      lastEventId: String(log.last),
      onState,
      onEvent(frame, data) {
        if (closed) return;
        if (frame.event === "token") onToken(data);
        else if (data && typeof data === "object" && typeof data.seq === "number") onEvents([data]);
      },
    });
  }

  let starting = null;
  function restart() {
    if (!starting) {
      if (stream) { stream.close(); stream = null; }
      banner(null);
      starting = start().finally(() => { starting = null; });
    }
    return starting;
  }

  // A session that does not exist (yet, or any more) starts being followed as soon as
  // the activity feed shows an event of it: a message sent from elsewhere created it.
  const offFeed = onFeed((frame, data) => {
    if (!closed && !exists && !stream && data && data.agent === agent && data.session === key) {
      restart().catch((e) => say(`The session could not be read: ${e.message}`, "error"));
    }
  });

  await restart();

  return () => {
    closed = true;
    offFeed();
    wide.removeEventListener("change", onWide);
    if (stream) stream.close();
  };
}
