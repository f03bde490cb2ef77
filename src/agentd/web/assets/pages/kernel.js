// The kernel (#/kernel): the scheduler's lanes (limits, calls in flight, queued per
// priority class, waits), the providers' circuit breakers and the call counters, from
// GET /v1/kernel every few seconds. A failed poll says "daemon unreachable" and keeps the
// last figures; the next good one clears it.

import { ApiError, get } from "../api.js";
import { fmtInt, fmtMs, h, pill } from "../ui.js";
import { every } from "./agent-shared.js";

export const title = "Kernel";

const POLL_MS = 3000;
const CLASSES = ["interactive", "background", "batch"];
const CLASS_LABEL = { interactive: "inter.", background: "backgr.", batch: "batch" };
const COUNTERS = [
  ["calls", "Model calls"], ["failed_attempts", "Failed attempts"], ["retries", "Retries"],
  ["fallbacks", "Fallbacks"], ["rate_limited", "Rate limited"], ["stream_resets", "Stream resets"],
  ["outages", "Outages"],
];

export async function render(root, params, ctx) {
  const updated = h("span.updated", { role: "status" });
  const down = h("div.unreachable", { role: "alert", hidden: true });
  const totals = h("div.cards.kernel-cards#kernel-totals");
  const lanes = h("div#kernel-lanes");
  const breakers = h("div#kernel-breakers");
  const counters = h("div.cards.counter-cards#kernel-counters");
  root.append(h("section.page.kernel-page",
    h("div.page-head", h("h1", "Kernel"), updated),
    h("p.hint.page-intro", "Every model call goes through the kernel: a lane per provider with its limits, fair share "
      + "between priority classes, tenants and agents, retries and circuit breakers. This node only."),
    down,
    totals,
    h("section.panel", { "aria-labelledby": "lanes-title" }, h("h2#lanes-title", "Lanes"), lanes),
    h("section.panel", { "aria-labelledby": "breakers-title" }, h("h2#breakers-title", "Circuit breakers"), breakers),
    h("section.panel", { "aria-labelledby": "counters-title" },
      h("h2#counters-title", "Calls since the daemon started"), counters)));

  let lastAt = null;
  let failures = 0;
  async function poll() {
    try {
      const k = await get("/v1/kernel");
      lastAt = new Date();
      failures = 0;
      down.hidden = true;
      root.querySelector(".kernel-page").classList.remove("stale");
      draw(k);
      updated.textContent = `Updated ${lastAt.toLocaleTimeString()} · every ${POLL_MS / 1000} s`;
      ctx.connection("live");
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      failures += 1;
      down.hidden = false;
      root.querySelector(".kernel-page").classList.add("stale");
      down.replaceChildren(h("strong", "Daemon unreachable. "),
        e.status ? `It answered ${e.status}: ${e.message} ` : `${e.message} `,
        `Retrying every ${POLL_MS / 1000} s`,
        lastAt ? `; the figures below are from ${lastAt.toLocaleTimeString()}.` : ".");
      ctx.connection("reconnecting", e.message);
    }
  }

  function draw(k) {
    const t = k.scheduler.totals || {};
    totals.replaceChildren(
      stat("in_flight", "In flight", fmtInt(t.in_flight), "model calls under way"),
      stat("queued", "Queued", fmtInt(t.queued), "waiting for their lane"),
      stat("granted", "Granted", fmtInt(t.granted), "calls let through"),
      stat("waited", "Waited", fmtInt(t.waited), "had to queue first"));
    const names = Object.keys(k.scheduler.lanes || {});
    lanes.replaceChildren(names.length ? laneTable(k.scheduler.lanes, names)
      : h("p.empty", "No lanes yet: a provider's lane appears with its first model call."));
    const bs = Object.entries(k.breakers || {});
    breakers.replaceChildren(bs.length ? breakerTable(bs) : h("p.empty", "No provider called yet."));
    counters.replaceChildren(...COUNTERS.map(([key, label]) => stat(key, label, fmtInt((k.calls || {})[key] || 0), null,
      (key === "failed_attempts" || key === "outages" || key === "rate_limited") && (k.calls || {})[key] ? "warn" : null)));
  }

  const timer = every(POLL_MS, poll);
  await poll();
  return () => timer.stop();
}

function stat(key, label, value, sub, tone) {
  return h("div.card", { dataset: { stat: key }, class: tone ? `card-${tone}` : null },
    h("div.label", label), h("div.value", value), sub ? h("div.sub", sub) : null);
}

function limitText(v, unit) {
  return v === null || v === undefined ? "∞" : `${fmtInt(v)}${unit || ""}`;
}

function meter(used, limit) {
  const el = h("span.meter", { role: "img", "aria-label": `${used} of ${limit === null ? "no limit" : limit}` });
  const bar = h("span.meter-bar");
  const share = limit ? Math.min(1, used / limit) : used ? 0.1 : 0;
  bar.style.width = `${Math.round(share * 100)}%`;
  if (limit && used >= limit) bar.classList.add("full");
  el.append(bar);
  return el;
}

function laneTable(lanes, names) {
  return h("div.table-wrap", h("table.lanes",
    h("thead", h("tr",
      h("th", { scope: "col" }, "Lane"),
      h("th", { scope: "col" }, "In flight"),
      h("th", { scope: "col" }, "Queued by class"),
      h("th", { scope: "col" }, "Rate limits"),
      h("th.num", { scope: "col" }, "Granted"),
      h("th.num", { scope: "col" }, "Waited"),
      h("th.num", { scope: "col" }, "Wait p50"),
      h("th.num", { scope: "col" }, "p99"),
      h("th.num", { scope: "col" }, "max"))),
    h("tbody", names.map((name) => {
      const l = lanes[name];
      const lim = l.limits || {};
      const q = l.queued_by_class || {};
      return h("tr", { dataset: { lane: name } },
        h("th", { scope: "row" }, h("code", name),
          l.paused_for_s > 0 ? h("div", pill("paused", `paused ${l.paused_for_s.toFixed(1)} s`)) : null),
        h("td", h("div.inflight", meter(l.in_flight, lim.concurrency),
          h("span", `${fmtInt(l.in_flight)} / ${limitText(lim.concurrency)}`))),
        h("td", h("span.queue-total", fmtInt(l.queued)), " ",
          h("span.by-class", CLASSES.map((c) => h("span.cls", { title: `${c}: ${q[c] || 0} queued` },
            `${CLASS_LABEL[c]} ${fmtInt(q[c] || 0)}`)))),
        h("td.limits", `${limitText(lim.rpm)} rpm · ${limitText(lim.tpm)} tpm`,
          lim.reserve ? ` · reserve ${fmtInt(lim.reserve)}` : ""),
        h("td.num", { dataset: { col: "granted" } }, fmtInt(l.granted)),
        h("td.num", { dataset: { col: "waited" } }, fmtInt(l.waited)),
        h("td.num", fmtMs(l.wait_ms && l.wait_ms.p50)),
        h("td.num", fmtMs(l.wait_ms && l.wait_ms.p99)),
        h("td.num", fmtMs(l.wait_ms && l.wait_ms.max)));
    }))));
}

function breakerTable(entries) {
  return h("div.table-wrap", h("table.breakers",
    h("thead", h("tr", ["Provider", "State", "Failures in a row", "Times opened", "Retry in"].map(
      (l, i) => h("th", { scope: "col", class: i >= 2 ? "num" : null }, l)))),
    h("tbody", entries.map(([name, b]) => h("tr", { dataset: { breaker: name } },
      h("th", { scope: "row" }, h("code", name)),
      h("td", pill(b.state, b.state.replace("_", " "))),
      h("td.num", fmtInt(b.consecutive_failures)),
      h("td.num", fmtInt(b.opened)),
      h("td.num", b.retry_in_s > 0 ? `${b.retry_in_s.toFixed(1)} s` : "–"))))));
}
