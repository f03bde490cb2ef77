// Evaluations (#/evals): the suites of the agents the token may use; a suite
// (#/evals/<suite id>): its cases and eval runs; an eval run's report
// (#/evals/runs/<id>): the aggregate against the recorded baseline and the suite's last
// run, the gate's verdict, and a line per case (its result, the baseline's under the
// same graders, the last run's, each grade, the answer). An eval run under way is read
// again every few seconds until it ends. Answers and grades are a model's words: text.

import { ApiError, get, path } from "../api.js";
import { errorBox, fmtInt, fmtTokens, h, pill, table, timeEl } from "../ui.js";
import { every } from "./agent-shared.js";

export const title = "Evals";

const POLL_MS = 2000;
const ENDED = new Set(["completed", "cancelled"]);
const RESULT = { passed: "succeeded", failed: "failed", errored: "error", cancelled: "cancelled",
                 queued: "queued", running: "running" };

const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`);
const short = (s, n = 120) => { const t = String(s ?? ""); return t.length > n ? `${t.slice(0, n - 1)}…` : t; };
// A result's error: {code, message} (a string from an earlier version).
const errorText = (e) => (e && typeof e === "object" ? `${e.code || "error"}: ${e.message || ""}` : e ?? "");
const tokens = (u) => (u ? `${fmtTokens((u.input_tokens || 0) + (u.output_tokens || 0))}` : "–");

function resultPill(status) {
  return status ? pill(RESULT[status] || status, status) : h("span.muted", "–");
}

function card(key, label, value, sub, kind) {
  return h("div.card", { "data-stat": key, class: kind ? `card-${kind}` : null },
    h("div.label", label), h("div.value", value), sub ? h("div.sub", sub) : null);
}

export async function render(root, params, ctx) {
  if (params.run) return runPage(root, params.run, ctx);
  if (params.suite) return suitePage(root, params.suite, ctx);
  return listPage(root, ctx);
}

async function listPage(root, ctx) {
  const box = h("div#eval-suites");
  root.append(h("section.page.evals-page",
    h("div.page-head", h("h1", "Evals")),
    h("p.hint.page-intro", "Suites of cases picked from real runs. An eval run forks every case onto a candidate "
      + "(a model, instructions, settings) and grades it; ", h("code", "agentd eval run SUITE"),
      " runs one and exits 1 when its gate fails."),
    box));
  let suites;
  try {
    ({ suites } = await get("/v1/evals/suites"));
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) box.append(errorBox(e, "Could not read the suites"));
    return;
  }
  const latest = await Promise.all(suites.map((s) => get(path`/v1/evals/suites/${s.id}/runs`,
    { query: { limit: 1 } }).then((r) => r.runs[0] || null).catch(() => null)));
  box.append(table([
    { label: "Suite", get: (r) => h("a", { href: `#/evals/${encodeURIComponent(r.s.id)}` }, r.s.name) },
    { label: "Agent", get: (r) => h("a", { href: ctx.agentHref(r.s.agent) }, r.s.agent) },
    { label: "Cases", get: (r) => fmtInt(r.s.cases), class: "num" },
    { label: "Last run", get: (r) => (r.run ? h("a", { href: `#/evals/runs/${encodeURIComponent(r.run.id)}` },
      `#${r.run.n} `, resultPill(r.run.status)) : h("span.muted", "never run")) },
    { label: "Passed", get: (r) => (r.run && r.run.summary ? `${r.run.summary.passed}/${r.run.summary.total} (${pct(r.run.summary.pass_rate)})` : "–") },
    { label: "Gate", get: (r) => gatePill(r.run) },
  ], suites.map((s, i) => ({ s, run: latest[i] })), {
    empty: "No suites yet: agentd eval add SUITE --from-run RUN makes one.",
    rowAttrs: (r) => ({ "data-suite": r.s.name }),
  }));
}

function gatePill(run) {
  const gate = run && run.summary && run.summary.gate;
  if (!gate) return h("span.muted", "–");
  return gate.passed ? pill("succeeded", "passed") : pill("failed", "failed");
}

async function suitePage(root, suiteId, ctx) {
  let suite;
  let cases;
  let runs;
  try {
    [suite, { cases }, { runs }] = await Promise.all([
      get(path`/v1/evals/suites/${suiteId}`),
      get(path`/v1/evals/suites/${suiteId}/cases`, { query: { limit: 1000 } }),
      get(path`/v1/evals/suites/${suiteId}/runs`)]);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) root.append(errorBox(e, "Could not read the suite"));
    return;
  }
  ctx.setTitle(`${suite.name} · Evals`);
  root.append(h("section.page.eval-suite-page",
    h("div.page-head", h("h1", suite.name), h("span.muted", " of ", h("a", { href: ctx.agentHref(suite.agent) }, suite.agent))),
    suite.description ? h("p", suite.description) : null,
    h("p.hint", `Gate: at least ${pct(suite.gate.min_pass_rate ?? 1)} of the cases pass`,
      suite.gate.max_regressions !== undefined ? `, at most ${suite.gate.max_regressions} regression(s)` : "", "."),
    h("section.panel", h("h2", "Eval runs"), table([
      { label: "#", get: (r) => h("a", { href: `#/evals/runs/${encodeURIComponent(r.id)}` }, `#${r.n}`) },
      { label: "Status", get: (r) => resultPill(r.status) },
      { label: "Model", get: (r) => r.candidate.model || "(the agent's)" },
      { label: "Tools", get: (r) => r.candidate.tools },
      { label: "Passed", get: (r) => `${r.counts.passed}/${r.cases}` },
      { label: "Gate", get: (r) => gatePill(r) },
      { label: "Started", get: (r) => timeEl(r.created_at) },
    ], runs, { empty: "Not run yet.", rowAttrs: (r) => ({ "data-run": r.id }) })),
    h("section.panel", h("h2", `Cases (${fmtInt(suite.cases)})`), table([
      { label: "#", get: (c) => String(c.n), class: "num" },
      { label: "Case", get: (c) => short(c.name, 60) },
      { label: "From run", get: (c) => (c.source.run ? h("code", c.source.run) : h("span.muted", "imported")) },
      { label: "Step", get: (c) => String(c.from_step), class: "num" },
      { label: "Graders", get: (c) => c.graders.map((g) => g.name || g.kind).join(", ") },
      { label: "Baseline answer", get: (c) => short(c.baseline && c.baseline.output, 80) },
    ], cases, { empty: "No cases.", rowAttrs: (c) => ({ "data-case": c.id }) }))));
}

async function runPage(root, runId, ctx) {
  const head = h("div.page-head");
  const cards = h("div.cards.eval-cards#eval-cards");
  const gate = h("div#eval-gate");
  const compare = h("div#eval-compare");
  const cases = h("div#eval-cases");
  const error = h("div");
  root.append(h("section.page.eval-run-page", head, error, cards, gate, compare,
    h("section.panel", h("h2", "Cases"), cases)));
  let suite = null;
  let ended = false;

  async function load() {
    if (ended) return;
    let run;
    let results = [];
    try {
      run = await get(path`/v1/evals/runs/${runId}`);
      if (!suite) suite = await get(path`/v1/evals/suites/${run.suite_id}`);
      let after = 0;
      for (;;) {
        const page = await get(path`/v1/evals/runs/${runId}/results`, { query: { after, limit: 1000 } });
        results = results.concat(page.results);
        if (page.next_after === null || page.next_after === undefined) break;
        after = page.next_after;
      }
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) error.replaceChildren(errorBox(e, "Could not read the eval run"));
      return;
    }
    error.replaceChildren();
    ended = ENDED.has(run.status);
    ctx.setTitle(`#${run.n} of ${suite.name} · Evals`);
    head.replaceChildren(h("h1", `Eval run #${run.n} of `, h("a", { href: `#/evals/${encodeURIComponent(suite.id)}` }, suite.name)),
      resultPill(run.status),
      h("span.muted", ` on ${run.candidate.model || "the agent's model"}, tools ${run.candidate.tools}`));
    draw(run, results);
  }

  function draw(run, results) {
    const s = run.summary;
    const counts = run.counts;
    cards.replaceChildren(
      card("passed", "Passed", `${fmtInt(counts.passed)}/${fmtInt(run.cases)}`, s ? pct(s.pass_rate) : null, "ok"),
      card("failed", "Failed", fmtInt(counts.failed), null, counts.failed ? "bad" : null),
      card("errored", "Errored", fmtInt(counts.errored), null, counts.errored ? "bad" : null),
      card("open", "Queued / running", `${fmtInt(counts.queued)} / ${fmtInt(counts.running)}`),
      card("baseline", "Baseline", s ? `${s.baseline.passed}/${s.total}` : "–", s ? pct(s.baseline.pass_rate) : null),
      card("previous", "Last run", s && s.previous ? `${s.previous.passed} passed` : "–",
        s && s.previous ? pct(s.previous.pass_rate) : (s ? "the first run" : null)),
      card("tokens", "Tokens", s ? tokens(s.usage) : "–", s ? `baseline ${tokens(s.baseline.usage)}` : null));
    if (s) {
      gate.replaceChildren(h("p.eval-gate", { "data-gate": s.gate.passed ? "passed" : "failed" },
        s.gate.passed ? pill("succeeded", "gate passed") : pill("failed", "gate failed"),
        s.gate.reasons && s.gate.reasons.length ? ` ${s.gate.reasons.join("; ")}` : ""));
      const lines = [];
      if (s.previous && s.previous.regressions.length) lines.push(h("li#eval-regressions", `Regressions since #${s.previous.n}: `, s.previous.regressions.join(", ")));
      if (s.previous && s.previous.fixed.length) lines.push(h("li", `Fixed since #${s.previous.n}: `, s.previous.fixed.join(", ")));
      if (s.baseline.worse.length) lines.push(h("li", "Worse than the baseline: ", s.baseline.worse.join(", ")));
      if (s.baseline.better.length) lines.push(h("li", "Better than the baseline: ", s.baseline.better.join(", ")));
      compare.replaceChildren(lines.length ? h("ul.eval-compare", lines) : h("p.muted", "No case changed against the baseline or the last run."));
    } else {
      gate.replaceChildren(h("p.muted", "The gate is decided once every case has run."));
      compare.replaceChildren();
    }
    cases.replaceChildren(table([
      { label: "#", get: (r) => String(r.n), class: "num" },
      { label: "Case", get: (r) => short(r.case, 60) },
      { label: "Result", get: (r) => resultPill(r.status) },
      { label: "Baseline", get: (r) => resultPill(r.baseline && r.baseline.status) },
      { label: "Grades", get: (r) => grades(r) },
      { label: "Answer", get: (r) => short(r.output ?? errorText(r.error), 160) },
      { label: "Tokens", get: (r) => tokens(r.usage), class: "num" },
    ], results, { empty: "No case has run yet.", rowAttrs: (r) => ({ "data-case": r.case_id, "data-status": r.status }) }));
  }

  function grades(r) {
    if (!r.grades) return r.error ? h("span.bad", short(errorText(r.error), 100)) : "–";
    return h("span.grades", r.grades.map((g) => h("span.grade", {
      class: g.passed === true ? "grade-ok" : g.passed === false ? "grade-bad" : "grade-error",
      title: g.error || g.reason || "",
    }, `${g.name || g.kind}${g.passed === true ? " ✓" : g.passed === false ? " ✗" : " !"} `)));
  }

  await load();
  if (ended) return null;
  const timer = every(POLL_MS, async () => {
    await load();
    if (ended) timer.stop();
  });
  return () => timer.stop();
}
