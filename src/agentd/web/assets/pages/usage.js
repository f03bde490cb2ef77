// Usage: tokens, calls and cost from the usage ledger, by day as a stacked bar chart
// (by model, agent or tenant), with totals and a table per group. A range of UTC days
// and the grouping are chosen on the page; the API's own checks (422) are shown beside
// the fields. Live: a run that ends reloads the figures.

import { ApiError, get } from "../api.js";
import { feedState, onFeed, onFeedState } from "../nav.js";
import { clear, debounce, errorBox, fmtCost, fmtInt, fmtTokens, h } from "../ui.js";
import { SERIES, stackedBars } from "./usage-chart.js";

export const title = "Usage";

const GROUPS = [["model", "Model"], ["agent", "Agent"], ["tenant", "Tenant"]];
const METRICS = {
  tokens: { label: "Tokens", get: (r) => (r.input_tokens || 0) + (r.output_tokens || 0), fmt: fmtTokens },
  cost: { label: "Cost (USD)", get: (r) => r.cost_usd || 0, fmt: fmtCost },
  calls: { label: "Model calls", get: (r) => r.calls || 0, fmt: fmtInt },
};
const ENDED = new Set(["run.completed", "run.failed", "run.cancelled", "run.interrupted"]);

function isoDay(date) { return date.toISOString().slice(0, 10); }
function addDays(day, n) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return isoDay(d);
}
function daysBetween(since, until) {
  const out = [];
  for (let d = since; d <= until && out.length < 1000; d = addDays(d, 1)) out.push(d);
  return out;
}
const nameOf = (v) => (v === null || v === undefined || v === "" ? "(none)" : String(v));

export async function render(root, _params, ctx) {
  const today = isoDay(new Date());
  const since = h("input#usage-since", { type: "date", name: "since", value: addDays(today, -13), "aria-describedby": "usage-since-error" });
  const until = h("input#usage-until", { type: "date", name: "until", value: today, "aria-describedby": "usage-until-error" });
  const by = h("select#usage-by", { name: "by" }, GROUPS.map(([v, l]) => h("option", { value: v }, l)));
  const metric = h("select#usage-metric", { name: "metric" },
    Object.entries(METRICS).map(([v, m]) => h("option", { value: v }, m.label)));
  const sinceError = h("p.field-error#usage-since-error", { role: "alert", hidden: true });
  const untilError = h("p.field-error#usage-until-error", { role: "alert", hidden: true });
  const formError = h("div.usage-error", { hidden: true });
  const form = h("form.usage-form", { novalidate: true },
    h("div.field", h("label", { for: "usage-since" }, "From (UTC day)"), since, sinceError),
    h("div.field", h("label", { for: "usage-until" }, "To (UTC day)"), until, untilError),
    h("div.field", h("label", { for: "usage-by" }, "Group by"), by),
    h("div.field", h("label", { for: "usage-metric" }, "Chart"), metric),
    h("div.field.field-button", h("button.primary", { type: "submit" }, "Show")));
  const cards = h("div.cards.usage-cards");
  const chartBox = h("div.panel.usage-chart");
  const tableBox = h("div.panel.usage-table");
  const dayBox = h("details.panel.usage-days", h("summary", "By day"));
  const page = h("section.page.usage-page",
    h("div.page-head", h("h1", "Usage")),
    form, formError, cards, chartBox, tableBox, dayBox);
  root.append(page);

  let closed = false;
  let seq = 0;
  let last = null;

  function fieldError(el, input, text) {
    el.hidden = !text;
    el.textContent = text || "";
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  async function load() {
    const mine = ++seq;
    fieldError(sinceError, since, null);
    fieldError(untilError, until, null);
    formError.hidden = true;
    const query = { since: since.value, until: until.value };
    const group = by.value;
    let perDay;
    let perGroup;
    try {
      [perDay, perGroup] = await Promise.all([
        get("/v1/usage", { query: { ...query, by: `day,${group}` } }),
        get("/v1/usage", { query: { ...query, by: group } }),
      ]);
    } catch (e) {
      if (closed || mine !== seq) return;
      if (e instanceof ApiError && e.status === 422) {
        // The API's own words, beside the field it names.
        const fields = e.fieldErrors();
        fieldError(sinceError, since, fields["query.since"]);
        fieldError(untilError, until, fields["query.until"]);
        if (!fields["query.since"] && !fields["query.until"]) {
          formError.hidden = false;
          clear(formError).append(errorBox(e, "The range was refused"));
        }
      } else {
        formError.hidden = false;
        clear(formError).append(errorBox(e, "Usage could not be read"));
      }
      return;
    }
    if (closed || mine !== seq) return;
    last = { perDay, perGroup, group };
    draw();
  }

  function draw() {
    if (!last) return;
    const { perDay, perGroup, group } = last;
    const m = METRICS[metric.value];
    const t = perGroup.totals;
    clear(cards).append(
      card("Tokens", fmtTokens((t.input_tokens || 0) + (t.output_tokens || 0)),
        `${fmtTokens(t.input_tokens)} in · ${fmtTokens(t.output_tokens)} out`),
      card("Cost", fmtCost(t.cost_usd), "list price, USD"),
      card("Model calls", fmtInt(t.calls), `${perGroup.usage.length} ${group}${perGroup.usage.length === 1 ? "" : "s"}`),
      card("Cached", fmtTokens(t.cached_tokens),
        `input tokens from cache · ${fmtTokens(t.cache_write_tokens || 0)} written to it`));

    // Series: the groups by their share of the metric, the smallest folded into "other".
    const groups = [...perGroup.usage].sort((a, b) => m.get(b) - m.get(a));
    const shown = groups.slice(0, SERIES - 1).map((r) => nameOf(r[group]));
    const folded = groups.length > SERIES - 1;
    const days = daysBetween(perDay.since || since.value, perDay.until || until.value);
    const index = new Map(days.map((d, i) => [d, i]));
    const series = shown.map((name) => ({ name, values: new Array(days.length).fill(0) }));
    if (folded) series.push({ name: "other", values: new Array(days.length).fill(0) });
    for (const r of perDay.usage) {
      const i = index.get(r.day);
      if (i === undefined) continue;
      let k = shown.indexOf(nameOf(r[group]));
      if (k < 0) k = series.length - 1;
      series[k].values[i] += m.get(r);
    }
    clear(chartBox).append(
      h("h2", `${m.label} per day, by ${group}`),
      perDay.usage.length
        ? stackedBars({ columns: days, series, format: m.fmt, label: `${m.label} per day by ${group}`,
          shortLabel: (d) => d.slice(5), width: chartBox.clientWidth - 34 })
        : h("p.empty", "No model calls in this range."));

    const total = groups.reduce((sum, r) => sum + m.get(r), 0) || 1;
    const groupLabel = GROUPS.find(([v]) => v === group)[1];
    clear(tableBox).append(h("h2", `By ${group}`), table([
      { label: groupLabel, get: (r, i) => h("span.usage-name", h("span.swatch", { class: `series-${Math.min(i, SERIES - 1)}`, "aria-hidden": "true" }), nameOf(r[group])) },
      { label: "Calls", cls: "num", get: (r) => fmtInt(r.calls) },
      { label: "Input", cls: "num", get: (r) => fmtInt(r.input_tokens) },
      { label: "Output", cls: "num", get: (r) => fmtInt(r.output_tokens) },
      { label: "Cached", cls: "num", get: (r) => fmtInt(r.cached_tokens) },
      { label: "Cache write", cls: "num", get: (r) => fmtInt(r.cache_write_tokens || 0) },
      { label: "Cost", cls: "num", get: (r) => fmtCost(r.cost_usd) },
      { label: "Share", get: (r) => share(m.get(r) / total) },
    ], groups, "No usage in this range."));

    const byDay = [...perDay.usage].sort((a, b) => (a.day < b.day ? 1 : a.day > b.day ? -1 : 0));
    const open = dayBox.open;
    clear(dayBox).append(h("summary", `By day and ${group} (${byDay.length} rows)`), table([
      { label: "Day", get: (r) => r.day },
      { label: groupLabel, get: (r) => nameOf(r[group]) },
      { label: "Calls", cls: "num", get: (r) => fmtInt(r.calls) },
      { label: "Tokens", cls: "num", get: (r) => fmtInt((r.input_tokens || 0) + (r.output_tokens || 0)) },
      { label: "Cost", cls: "num", get: (r) => fmtCost(r.cost_usd) },
    ], byDay, "No usage in this range."));
    dayBox.open = open;
  }

  function card(label, value, sub) {
    return h("div.card", h("div.label", label), h("div.value", value), h("div.sub", sub));
  }
  function share(f) {
    const bar = h("span.share-bar");
    bar.style.width = `${Math.round(Math.max(0, Math.min(1, f)) * 100)}%`;
    return h("span.share", h("span.share-track", bar), h("span.share-text", `${Math.round(f * 100)}%`));
  }
  function table(columns, rows, empty) {
    if (!rows.length) return h("p.empty", empty);
    return h("div.table-wrap", h("table",
      h("thead", h("tr", columns.map((c) => h("th", { scope: "col", class: c.cls }, c.label)))),
      h("tbody", rows.map((r, i) => h("tr", columns.map((c) => h("td", { class: c.cls }, c.get(r, i))))))));
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  for (const el of [since, until, by]) el.addEventListener("change", () => load());
  metric.addEventListener("change", draw);

  // A run that ends may have charged the ledger: read it again (at most once a second).
  const reload = debounce(() => { if (!closed && until.value >= isoDay(new Date())) load(); }, 1000);
  const offFeed = onFeed((frame) => { if (ENDED.has(frame.event)) reload(); });
  const offState = onFeedState((state) => {
    ctx.connection(state === "live" ? "live" : state === "reconnecting" ? "reconnecting" : "");
    if (state === "live") reload();
  });

  // Redrawn at the new width when the window changes size.
  let width = 0;
  const resized = new ResizeObserver(debounce(() => {
    if (Math.abs(chartBox.clientWidth - width) > 8) { width = chartBox.clientWidth; draw(); }
  }, 100));
  resized.observe(chartBox);

  if (feedState() === "live") ctx.connection("live");
  await load();
  width = chartBox.clientWidth;
  return () => { closed = true; offFeed(); offState(); resized.disconnect(); };
}
