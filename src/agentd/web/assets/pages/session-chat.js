// The chat: the conversation as bubbles (the user's, the agent's, what the agent
// posted), with notes where something interrupted it (a restore, a failure, a
// decision waited for), and the reply being streamed. Text is text, always; a
// message's images are thumbnails and its files chips (session-parts.js).

import { h, pill, timeEl, visible } from "../ui.js";
import { chatKind } from "./session-log.js";
import { partsView } from "./session-parts.js";
import { usageText } from "./session-steps.js";

function meta(e, ...extra) {
  return h("div.msg-meta", timeEl(e.at), h("span.seq", ` · #${e.seq}`), ...extra);
}

function note(e, ctx) {
  const d = e.data || {};
  switch (e.kind) {
    case "session.restored":
      return h("div.chat-note.note-restore", { role: "note" },
        `Restored to #${d.to_seq}`,
        d.archived ? ` · #${d.archived.from_seq}–#${d.archived.to_seq} archived` : "");
    case "session.forked":
      return h("div.chat-note", { role: "note" }, `Forked from ${d.session || "?"} at #${d.seq ?? "?"}`);
    case "session.compacted":
      return h("div.chat-note", { role: "note" }, `Earlier turns compacted (#${d.from_seq}–#${d.to_seq})`);
    case "run.failed":
      return h("div.chat-note.note-bad", { role: "note" }, "The run failed: ",
        (d.error && d.error.message) || "", d.error && d.error.code ? h("code", d.error.code) : null);
    case "run.cancelled": case "run.interrupted":
      return h("div.chat-note", { role: "note" }, e.kind === "run.cancelled" ? "Run cancelled" : "Run interrupted",
        d.reason ? `: ${d.reason}` : "");
    case "approval.requested":
      return h("div.chat-note.note-wait", { role: "note" },
        d.kind === "unknown_outcome" ? "A tool call's outcome is unknown: " : "Waiting for approval to run ",
        h("code", d.name || "?"), " · ",
        h("a", { href: "#/approvals" }, "decide in the inbox"));
    case "approval.decided":
      return h("div.chat-note", { role: "note" }, `Decision: ${d.action || "?"}`, d.by ? ` by ${d.by}` : "",
        d.reason ? ` (${d.reason})` : "");
    default:
      return h("div.chat-note", e.kind);
  }
}

// One chat row for an event (chatKind(e) not null).
export function chatRow(e, ctx) {
  const d = e.data || {};
  const kind = chatKind(e);
  const archived = ctx.isArchived(e.seq);
  let el;
  if (kind === "user") {
    el = h("div.msg.msg-user", h("div.msg-text", d.content ?? ""), partsView(d.parts, ctx.blobUrl),
      meta(e, d.steer ? pill("info", "steer") : null, e.kind === "message.added" ? pill("info", "added") : null,
        d.schedule_id ? pill("info", "schedule") : null,
        d.heartbeat ? pill("info", "heartbeat") : null, d.tainted ? h("span.pill.pill-taint", "tainted") : null));
  } else if (kind === "assistant") {
    const calls = d.tool_calls || [];
    el = h("div.msg.msg-assistant", h("div.msg-text", d.text ?? ""),
      calls.length ? h("div.msg-calls", calls.map((c) => h("code.tool", c.name))) : null,
      meta(e, d.model ? h("span", ` · ${d.model}`) : null, d.usage ? h("span", ` · ${usageText(d.usage)}`) : null));
  } else if (kind === "tools") {
    // The same tool called many times in one step: named once, with a count.
    const counts = new Map();
    for (const c of d.tool_calls || []) counts.set(c.name || "?", (counts.get(c.name || "?") || 0) + 1);
    el = h("div.chat-tools", { role: "note" }, "Calling ",
      [...counts].map(([name, n], i) => [i ? ", " : "", h("code.tool", name), n > 1 ? ` ×${n}` : ""]));
  } else if (kind === "added") {
    // An assistant message a client added without a run (LangGraph's update_state).
    el = h("div.msg.msg-assistant", h("div.msg-text", d.content ?? ""), meta(e, pill("info", "added")));
  } else if (kind === "proactive") {
    el = h("div.msg.msg-assistant.msg-proactive", h("div.msg-text", d.content ?? ""),
      meta(e, h("span", ` · posted from ${d.from_session || "?"}`)));
  } else {
    el = note(e, ctx);
  }
  el.classList.add("chat-row");
  if (archived) {
    el.classList.add("archived");
    el.title = "Archived by a restore: no longer part of the conversation";
  }
  el.dataset.seq = String(e.seq);
  return el;
}

// The reply being streamed: one bubble whose text grows with each token frame.
export function streamingBubble(runId) {
  let raw = "";
  const text = h("div.msg-text");
  const el = h("div.msg.msg-assistant.streaming.chat-row", { dataset: { run: runId }, "aria-busy": "true" },
    text, h("div.msg-meta", h("span.typing", { "aria-label": "streaming" }, "streaming…")));
  return {
    el,
    runId,
    // The text as sent is kept; what is shown has its invisible characters made
    // visible (over the whole text: a \r\n or a selector may straddle two pieces).
    add(piece) { raw += piece; text.textContent = visible(raw); },
    set(all) { raw = all; text.textContent = visible(raw); },
    get text() { return raw; },
  };
}
