// A run's trace (#/runs/{id}/trace): a waterfall of its spans from GET /v1/runs/{id}/trace
// (OTLP/JSON, built from the session's log): one row per span, nested under its parent,
// its bar placed by its start and end within the run's root span; error spans marked.
// A row opens to its attributes. Span names and attributes carry model and tool text:
// everything is set as text (h()), never as HTML.

import { get, path } from "../api.js";
import { errorBox, fmtMs, h, timeEl } from "../ui.js";

export const title = "Trace";

// OTLP's attribute value ({stringValue} | {intValue} | ... | {arrayValue: {values}}) as text.
function valueText(v) {
  if (!v || typeof v !== "object") return "";
  if ("stringValue" in v) return String(v.stringValue);
  if ("intValue" in v) return String(v.intValue);
  if ("doubleValue" in v) return String(v.doubleValue);
  if ("boolValue" in v) return String(v.boolValue);
  if ("arrayValue" in v) return ((v.arrayValue && v.arrayValue.values) || []).map(valueText).join(", ");
  return JSON.stringify(v);
}

// Nanoseconds as a Number (ms precision is all a bar needs; BigInt keeps the digits).
const nanos = (s) => { try { return Number(BigInt(s || "0")); } catch { return 0; } };

// The spans in display order: depth-first from the roots, children by start time.
export function ordered(spans) {
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    if (s.parentSpanId && ids.has(s.parentSpanId) && s.parentSpanId !== s.spanId) {
      if (!children.has(s.parentSpanId)) children.set(s.parentSpanId, []);
      children.get(s.parentSpanId).push(s);
    } else {
      roots.push(s);
    }
  }
  const byStart = (a, b) => nanos(a.startTimeUnixNano) - nanos(b.startTimeUnixNano);
  const out = [];
  const seen = new Set();
  const walk = (s, depth) => {
    if (seen.has(s.spanId)) return;
    seen.add(s.spanId);
    out.push({ span: s, depth });
    for (const c of (children.get(s.spanId) || []).sort(byStart)) walk(c, depth + 1);
  };
  for (const r of roots.sort(byStart)) walk(r, 0);
  return out;
}

function spanRow(span, depth, t0, total) {
  const start = nanos(span.startTimeUnixNano);
  const end = Math.max(nanos(span.endTimeUnixNano) || start, start);
  const ms = (end - start) / 1e6;
  const failed = span.status && span.status.code === 2;
  const left = total > 0 ? ((start - t0) / total) * 100 : 0;
  const width = total > 0 ? Math.max(((end - start) / total) * 100, 0.4) : 100;
  const bar = h("span.trace-bar", { title: `${span.name}: ${fmtMs(ms)}` });
  // Style properties, not a style attribute: the console's policy refuses inline styles.
  bar.style.left = `${Math.min(left, 99.6)}%`;
  bar.style.width = `${Math.min(width, 100 - Math.min(left, 99.6))}%`;
  const label = h("span.trace-label",
    h("span.trace-name", span.name || "(unnamed)"),
    failed ? h("span.trace-error", { title: (span.status && span.status.message) || "error" }, "error") : null,
    h("span.trace-dur", fmtMs(ms)));
  label.style.paddingLeft = `${depth * 1.1}rem`;
  const attrs = (span.attributes || []).map((a) => [h("dt", a.key), h("dd", valueText(a.value))]);
  if (failed && span.status.message) attrs.unshift([h("dt", "status"), h("dd", span.status.message)]);
  return h("details.trace-span", {
    class: failed ? "failed" : "",
    dataset: { spanId: span.spanId || "", depth: String(depth) },
  },
    h("summary.trace-row", label, h("span.trace-track", bar)),
    attrs.length ? h("dl.trace-attrs", attrs) : h("p.hint.trace-attrs", "No attributes."));
}

export async function render(root, params, ctx) {
  const head = h("div.page-head", h("h1", "Trace"));
  const body = h("div#trace");
  root.append(h("section.page.trace-page", head,
    h("p.hint.page-intro", "The run's spans, built from its session's log: ",
      h("code", "invoke_agent"), " for the run, ", h("code", "chat"), " per model call, ",
      h("code", "execute_tool"), " per tool call. Open a row for its attributes."),
    body));
  let run;
  let doc;
  try {
    [run, doc] = await Promise.all([get(path`/v1/runs/${params.run}`), get(path`/v1/runs/${params.run}/trace`)]);
  } catch (e) {
    body.append(errorBox(e, "the trace"));
    return;
  }
  ctx.setTitle(`Trace ${run.id}`);
  head.append(h("p.trace-run",
    h("span.mono", run.id), " · ",
    h("a", { href: ctx.sessionHref(run.agent, run.session) }, `${run.agent} / ${run.session}`),
    " · ", run.status, " · ", timeEl(run.created_at)));
  const spans = (doc.resourceSpans || []).flatMap((r) => (r.scopeSpans || []).flatMap((s) => s.spans || []));
  if (!spans.length) {
    body.append(h("p.empty", "No spans yet: the run has not started."));
    return;
  }
  const rows = ordered(spans);
  const starts = spans.map((s) => nanos(s.startTimeUnixNano));
  const ends = spans.map((s) => Math.max(nanos(s.endTimeUnixNano), nanos(s.startTimeUnixNano)));
  // Relative to the root span (the run's invoke_agent): its start is 0, its end the right edge.
  const root0 = rows[0].span;
  const t0 = Math.min(nanos(root0.startTimeUnixNano), ...starts);
  const t1 = Math.max(nanos(root0.endTimeUnixNano), ...ends);
  const total = t1 - t0;
  const failed = spans.filter((s) => s.status && s.status.code === 2).length;
  body.append(
    h("p.trace-summary", `${spans.length} span${spans.length === 1 ? "" : "s"} · ${fmtMs(total / 1e6)}`,
      failed ? h("span.trace-error", ` · ${failed} failed`) : null),
    h("div.trace-scale", h("span", "0"), h("span", fmtMs(total / 2e6)), h("span", fmtMs(total / 1e6))),
    h("div.trace-waterfall", { role: "list", "aria-label": "spans" },
      rows.map(({ span, depth }) => spanRow(span, depth, t0, total))));
}
