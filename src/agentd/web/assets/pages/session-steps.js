// The run timeline's rows: one per event of the session's log, saying what happened
// at that step (a model call with its usage and queue wait, a tool call with its
// arguments and policy verdict, its result, approvals, retries and fallbacks, snapshots,
// checkpoints, restores). Everything from the log is model- or tool-written and is set
// as text only.

import { fmtCost, fmtInt, fmtMs, fmtTokens, h, pill, timeEl, visible, visibleJson } from "../ui.js";
import { partsView } from "./session-parts.js";

const LONG = 1200;

// Pretty JSON as text (arguments, outputs), invisible and bidi characters as JSON
// escapes; strings are shown as they are (h() makes those characters visible).
export function jsonText(value) {
  if (typeof value === "string") return value;
  return visibleJson(value, 2);
}

// Arguments or an output: short ones inline (compact JSON), long ones as a block.
export function valueText(value, cls = "") {
  let compact;
  compact = typeof value === "string" ? value : visibleJson(value);
  compact = String(compact ?? "");
  if (compact.length <= 90 && !compact.includes("\n")) return h("code.inline-value", { class: cls }, compact);
  return longText(jsonText(value), cls);
}

// A <pre> with the text, cut to LONG characters with a button for the rest.
export function longText(text, cls = "") {
  const s = String(text ?? "");
  const pre = h("pre", { class: cls }, s.length > LONG ? s.slice(0, LONG) + "…" : s);
  if (s.length <= LONG) return pre;
  const more = h("button.ghost.small", { type: "button" }, `Show all ${fmtInt(s.length)} characters`);
  more.addEventListener("click", () => { pre.textContent = visible(s); more.remove(); });
  return h("div", pre, more);
}

function kv(label, value) {
  if (value === null || value === undefined || value === "") return null;
  return h("span.kv", h("span.k", label), " ", h("span.v", value));
}

export function usageText(u) {
  if (!u) return null;
  const parts = [`${fmtTokens(u.input_tokens || 0)} in`, `${fmtTokens(u.output_tokens || 0)} out`];
  if (u.cached_tokens) parts.push(`${fmtTokens(u.cached_tokens)} cached`);
  if (u.cache_write_tokens) parts.push(`${fmtTokens(u.cache_write_tokens)} cache write`);
  if (u.cost_usd !== undefined && u.cost_usd !== null) parts.push(fmtCost(u.cost_usd));
  return parts.join(" · ");
}

function verdict(policy) {
  if (!policy) return null;
  return h("div.verdict",
    pill(policy.action || "policy", `policy: ${policy.action || "?"}`),
    policy.rule ? h("code", policy.rule) : null,
    policy.reason ? h("span.muted", " ", policy.reason) : null,
    policy.categories && policy.categories.length ? h("span.muted", ` [${policy.categories.join(", ")}]`) : null,
    policy.tainted ? h("span.pill.pill-taint", `tainted: ${policy.tainted}`) : null);
}

function details(summary, ...body) {
  const content = body.flat().filter(Boolean);
  if (!content.length) return null;
  return h("details.step-more", h("summary", summary), ...content);
}

function title(icon, text, ...rest) {
  return h("div.step-title", h("span.step-icon", { "aria-hidden": "true" }, icon), h("strong", text), ...rest);
}

function toolCall(call) {
  return h("div.call",
    h("div.call-head", h("code.tool", call.name || "?"), call.id ? h("span.muted.mono", ` ${call.id}`) : null),
    valueText(call.arguments ?? {}, "args"));
}

// Actions a row can offer: ctx.restore(seq|checkpoint), ctx.fork(...), ctx.decide(...).
function modelCall(e, ctx) {
  const d = e.data || {};
  const q = d.queue;
  const attempts = d.attempts || [];
  const calls = d.tool_calls || [];
  return [
    title("◆", `Model call ${d.step ? "· step " + d.step : ""}`,
      h("code.model", d.model || "model"),
      d.fallback ? pill("warn", "fallback") : null,
      attempts.length ? pill("retry", `${attempts.length} retr${attempts.length === 1 ? "y" : "ies"}`) : null,
      d.stream_resets ? pill("warn", `${d.stream_resets} reset${d.stream_resets === 1 ? "" : "s"}`) : null),
    h("div.step-facts",
      kv("usage", usageText(d.usage) || "–"),
      q ? kv("queue", `${fmtMs(q.wait_ms)} wait · ${q.class || "?"} · lane ${q.lane || "?"}${q.position ? " · " + q.position + " ahead" : ""}`) : null,
      d.finish_reason ? kv("finish", d.finish_reason) : null,
      d.outage_s ? kv("parked", fmtMs(d.outage_s * 1000)) : null,
      d.context_trimmed ? kv("trimmed", `${d.context_trimmed.dropped_messages} messages`) : null,
      d.compaction ? kv("compaction", d.compaction.status) : null,
      d.recalled ? kv("recalled", `${(d.recalled.entries || []).length} memories`) : null),
    calls.length ? h("div.calls", calls.map(toolCall)) : null,
    details(attempts.length ? "Failed attempts" : "", attempts.map((a) =>
      h("div.attempt", h("code", a.model || "?"), " ", pill("failed", a.code || "error"), " ",
        a.status ? h("span.muted", `HTTP ${a.status} `) : null, a.message || "",
        a.retry_in_s ? h("span.muted", ` (retry in ${a.retry_in_s}s)`) : null))),
    d.text ? details("Reply text", longText(d.text)) : null,
    d.thinking && d.thinking.length ? details("Reasoning", d.thinking.map((t) => longText(t.redacted ? "(redacted)" : t.text))) : null,
  ];
}

function toolStarted(e) {
  const d = e.data || {};
  return [
    title("▶", "Tool call", h("code.tool", d.name || "?"), d.retry ? pill("warn", "re-run after crash") : null),
    verdict(d.policy),
    valueText(d.arguments ?? {}, "args"),
  ];
}

function toolFinished(e, ctx) {
  const d = e.data || {};
  const state = d.denied ? "denied" : d.skipped ? "skipped" : d.is_error ? "error" : "ok";
  return [
    title("■", "Tool result", h("code.tool", d.name || "?"),
      pill(state === "ok" ? "succeeded" : state === "skipped" ? "pending" : "failed", state),
      d.duration_ms !== undefined ? h("span.muted", ` ${fmtMs(d.duration_ms)}`) : null,
      d.tainted ? h("span.pill.pill-taint", `tainted: ${d.tainted}`) : null),
    d.denied ? verdict(d.policy) : null,
    valueText(d.output ?? "", d.is_error ? "output bad" : "output"),
    partsView(d.parts, ctx.blobUrl),
  ];
}

function approvalRequested(e, ctx) {
  const d = e.data || {};
  const open = ctx.pendingApproval(d.approval_id);
  return [
    title("?", d.kind === "unknown_outcome" ? "Unknown outcome: a decision is needed" : "Approval requested",
      h("code.tool", d.name || "?"), open ? pill("waiting", "waiting") : null),
    d.reason ? h("p.step-text", d.reason) : null,
    verdict(d.policy),
    longText(jsonText(d.arguments ?? {}), "args"),
    open ? h("div.step-actions",
      (d.options || []).includes("approve") ? h("button.small.primary", { type: "button", onclick: () => ctx.decide(d.approval_id, "approve") }, "Approve") : null,
      (d.options || []).includes("deny") ? h("button.small.danger", { type: "button", onclick: () => ctx.decide(d.approval_id, "deny") }, "Deny") : null,
      h("a.small", { href: "#/approvals" }, "Open the inbox (edit, remember)")) : null,
  ];
}

function approvalDecided(e) {
  const d = e.data || {};
  return [
    title("✓", "Decision", pill(d.action === "approve" || d.action === "retry" ? "approved" : "denied", d.action || "?"),
      d.by ? h("span.muted", ` by ${d.by}`) : null),
    d.reason ? h("p.step-text", "Reason: ", d.reason) : null,
    d.arguments ? details("Edited arguments", longText(jsonText(d.arguments), "args")) : null,
    d.output ? details("Output given", longText(d.output)) : null,
  ];
}

// The files a snapshot changed, read when first opened (GET .../snapshots/{ref}
// against the session's snapshot before it).
function changedFiles(e, ctx) {
  const box = h("div.files-box", h("p.muted.small", "Reading…"));
  const more = h("details.step-more.files-more", h("summary", "Files changed"), box);
  let read = false;
  more.addEventListener("toggle", async () => {
    if (!more.open || read) return;
    read = true;
    try {
      const found = await ctx.snapshotChanges(e.data.ref, e.seq);
      const c = found.counts || {};
      box.replaceChildren(
        h("p.muted.small", `${c.added || 0} added · ${c.modified || 0} modified · ${c.removed || 0} removed`,
          found.against ? "" : " (the session's first snapshot: every file)"),
        found.changes.length ? h("ul.files", found.changes.map((f) => h("li", { class: `change-${f.change}` },
          h("span.change", { "aria-label": f.change }, { added: "+", removed: "−", modified: "~" }[f.change] || "?"),
          " ", h("code", f.path), f.type !== "file" ? h("span.muted", ` ${f.type}`) : null,
          f.size !== undefined && f.change !== "removed" ? h("span.muted", ` ${fmtInt(f.size)} B`) : null))) : null,
        found.truncated ? h("p.muted.small", "Only the first 1,000 are listed.") : null);
    } catch (err) {
      read = false;
      box.replaceChildren(h("p.field-error", `The changes could not be read: ${err.message}`));
    }
  });
  return more;
}

function snapshot(e, ctx) {
  const d = e.data || {};
  if (!d.ref) {
    return [title("▣", "Workspace snapshot failed", pill("failed", (d.error && d.error.code) || "error")),
      d.error && d.error.message ? h("p.step-text", d.error.message) : null];
  }
  return [
    title("▣", "Workspace snapshot", h("code.mono", { title: d.ref }, String(d.ref).slice(0, 12))),
    h("div.step-facts",
      kv("files", fmtInt(d.files)), kv("size", d.bytes !== undefined ? fmtInt(d.bytes) + " B" : null),
      kv("new", d.new_bytes !== undefined ? fmtInt(d.new_bytes) + " B" : null),
      d.ms !== undefined ? kv("took", fmtMs(d.ms)) : null,
      d.tainted ? h("span.pill.pill-taint", `tainted: ${d.tainted}`) : null,
      d.quota_exceeded ? pill("failed", "over quota") : null),
    changedFiles(e, ctx),
  ];
}

function checkpointRow(e, ctx) {
  const d = e.data || {};
  return [
    title("⚑", "Checkpoint", d.name ? h("strong.cp-name", d.name) : null, pill("info", d.kind || "manual")),
    h("div.step-actions",
      h("button.small", { type: "button", onclick: () => ctx.restore({ checkpoint: d.id }, d.name || `#${e.seq}`) }, "Restore"),
      h("button.small", { type: "button", onclick: () => ctx.fork({ checkpoint: d.id }) }, "Fork")),
  ];
}

const SIMPLE = {
  "run.queued": ["·", "Run queued"],
  "run.started": ["·", "Run started"],
  "run.parked": ["‖", "Run parked (daemon stopping)"],
  "run.resumed": ["↻", "Run resumed"],
  "model.recovered": ["↻", "Model recovered"],
  "tools.unavailable": ["!", "Tools unavailable"],
};

function body(e, ctx) {
  const d = e.data || {};
  switch (e.kind) {
    case "message.user":
      return [title("›", d.steer ? "Steer message" : "User message",
        d.schedule_id ? pill("info", "schedule") : null, d.heartbeat ? pill("info", "heartbeat") : null,
        d.subtask_id ? pill("info", "subtask") : null, d.tainted ? h("span.pill.pill-taint", "tainted") : null),
      longText(d.content), partsView(d.parts, ctx.blobUrl)];
    case "message.assistant": return modelCall(e, ctx);
    case "message.added":
      return [title("›", d.role === "user" ? "User message added" : "Assistant message added",
        pill("info", "no run"), d.by ? h("span.muted", `by ${d.by}`) : null), longText(d.content)];
    case "message.proactive":
      return [title("›", "Posted by the agent", h("span.muted", `from ${d.from_session || "?"}`)), longText(d.content)];
    case "tool.started": return toolStarted(e);
    case "tool.finished": return toolFinished(e, ctx);
    case "approval.requested": return approvalRequested(e, ctx);
    case "approval.decided": return approvalDecided(e);
    case "run.waiting":
      return [title("…", "Waiting", pill("waiting", d.reason || "?"), d.model ? h("code.model", d.model) : null),
        d.cause ? h("p.step-text", d.cause) : null,
        d.retry_in_s ? h("p.step-text.muted", `next try in ${d.retry_in_s}s`) : null];
    case "run.completed":
      return [title("✓", "Run completed", pill("succeeded", `${d.steps ?? "?"} steps`)),
        h("div.step-facts", kv("usage", usageText(d.usage)))];
    case "run.failed":
      return [title("✕", "Run failed", pill("failed", (d.error && d.error.code) || "error")),
        h("p.step-text", (d.error && d.error.message) || "")];
    case "run.cancelled": case "run.interrupted":
      return [title("✕", e.kind === "run.cancelled" ? "Run cancelled" : "Run interrupted", pill("cancelled", e.kind.slice(4))),
        d.reason ? h("p.step-text", d.reason) : null];
    case "workspace.snapshot": return snapshot(e, ctx);
    case "workspace.restored":
      return [title("▣", "Workspace restored", d.error ? pill("failed", "failed") : null),
        h("div.step-facts", kv("written", d.written), kv("removed", d.removed), kv("unchanged", d.unchanged)),
        d.note ? h("p.step-text.muted", d.note) : null,
        d.error ? h("p.step-text", (d.error && d.error.message) || String(d.error)) : null];
    case "checkpoint": return checkpointRow(e, ctx);
    case "session.restored":
      return [title("↺", `Restored to #${d.to_seq}`),
        d.archived ? h("p.step-text.muted", `Events #${d.archived.from_seq}–#${d.archived.to_seq} archived`) : null];
    case "session.forked":
      return [title("⑂", "Forked", h("span.muted", ` from ${d.session || "?"} at #${d.seq ?? "?"}`))];
    case "session.compacted":
      return [title("≡", "Compacted", pill("info", d.strategy || "?")),
        h("p.step-text.muted", `#${d.from_seq}–#${d.to_seq}: ${d.messages ?? 0} messages`),
        d.summary ? details("Summary", longText(d.summary)) : null];
    case "model.outage":
      return [title("!", "Model outage", pill("failed", "outage")),
        h("p.step-text", ((d.models || []).join(", ")) + (d.retry_in_s ? ` · retry in ${d.retry_in_s}s` : ""))];
    case "budget.warning":
      return [title("!", "Budget warning", pill("warn", d.scope || "?")),
        h("p.step-text", `${d.metric}: ${d.used} of ${d.limit} (${d.period})`)];
    case "output.invalid":
      return [title("!", "Answer did not match the output schema",
        pill(d.repair ? "warn" : "failed", d.repair ? `asked again ${d.repair}/${d.max_repairs}` : "output_invalid")),
        h("p.step-text", `${d.path || "$"}: ${d.message || ""}`)];
    case "loop.detected":
      return [title("!", "Loop detected", pill("warn", d.action || "warn")),
        h("p.step-text", `${d.repeats} repeats of ${(d.tools || []).join(", ")}`)];
    case "hook.verdict": {
      const state = d.verdict === "deny" ? "deny"
        : d.verdict === "allow" || d.verdict === "pass" ? "allow" : "warn";
      return [title("⊘", d.guardrail ? "Guardrail" : "Check", h("code.tool", d.check || "?"),
        pill(state, d.verdict || "?"), d.failed ? pill("warn", "check failed") : null),
        h("p.step-text", [d.point, d.name, d.reason].filter(Boolean).join(" · ")),
        d.failed ? h("p.step-text.muted", d.failed) : null,
        d.arguments ? details("Arguments", longText(jsonText(d.arguments))) : null];
    }
    case "subtask.started": case "subtask.finished":
      return [title("⇢", e.kind === "subtask.started" ? "Subtask started" : "Subtask finished",
        d.status ? pill(d.status) : null),
        h("p.step-text", h("a", { href: ctx.sessionHref(d.agent || "", d.session || "") }, `${d.agent}/${d.session}`),
          d.title ? ` · ${d.title}` : "")];
    case "memory.consolidated":
      return [title("≡", "Memory consolidated"), h("p.step-text.muted", `${(d.entries || []).length} entries`)];
    default: {
      const simple = SIMPLE[e.kind];
      if (simple) return [title(simple[0], simple[1], d.reason ? h("span.muted", ` ${d.reason}`) : null)];
      return [title("·", e.kind), details("Data", longText(jsonText(d)))];
    }
  }
}

// One timeline row. ctx: {restore, fork, decide, pendingApproval(id), sessionHref,
// isArchived(seq), snapshotChanges(ref, seq)}.
export function stepRow(e, ctx) {
  const minor = e.kind === "run.queued" || e.kind === "run.started";
  return h("article.step", {
    class: `step-${e.kind.replace(/[^a-z]/g, "-")}${minor ? " minor" : ""}${ctx.isArchived(e.seq) ? " archived" : ""}`,
    dataset: { seq: String(e.seq), kind: e.kind },
  },
    h("div.step-meta", h("span.seq", `#${e.seq}`), e.run_id ? h("a.run.mono", { href: `#/runs/${encodeURIComponent(e.run_id)}/trace`, title: `Trace of run ${e.run_id}` }, e.run_id.slice(0, 10)) : null, timeEl(e.at)),
    h("div.step-body", body(e, ctx)),
    minor ? null : h("div.step-tools",
      h("button.ghost.tiny", { type: "button", title: `Restore the session to #${e.seq}`, onclick: () => ctx.restore({ seq: e.seq }, `#${e.seq}`) }, "Restore here"),
      h("button.ghost.tiny", { type: "button", title: `Fork a new session from #${e.seq}`, onclick: () => ctx.fork({ seq: e.seq }) }, "Fork here")));
}
