// Bar charts as inline SVG, drawn here (no library). Colours are classes (series-0 …
// series-7) that sessions.css maps to variables, so light and dark both work; every
// label is set as text.

import { h } from "../ui.js";

const NS = "http://www.w3.org/2000/svg";
export const SERIES = 8;

function s(tag, attrs = {}, text = null) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  if (text !== null) el.textContent = String(text);
  return el;
}

// Round numbers for the axis: 0, step, 2·step, … covering max.
function ticks(max, count = 4) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((m) => m >= raw) || raw;
  const out = [];
  for (let v = 0; v <= max + step * 0.999; v += step) out.push(v);
  return out;
}

// stackedBars({columns: [label], series: [{name, values: [number per column]}],
//              format(v) -> text, label}) -> Element (the chart and its legend).
export function stackedBars({ columns, series, format, label, shortLabel = (c) => c, width = 860 }) {
  // Drawn at the width it is shown at, so text keeps its size on any screen.
  const W = Math.max(320, Math.round(width));
  const H = W < 600 ? 220 : 260;
  const m = { top: 14, right: 10, bottom: 30, left: 64 };
  const iw = W - m.left - m.right;
  const ih = H - m.top - m.bottom;
  const totals = columns.map((_, i) => series.reduce((sum, se) => sum + (se.values[i] || 0), 0));
  const axis = ticks(Math.max(0, ...totals));
  const top = axis[axis.length - 1] || 1;
  const y = (v) => m.top + ih - (v / top) * ih;
  const band = iw / Math.max(1, columns.length);
  const bar = Math.max(2, Math.min(48, band * 0.7));

  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, preserveAspectRatio: "xMidYMid meet" });
  svg.append(s("title", {}, label));
  for (const v of axis) {
    svg.append(s("line", { class: "grid", x1: m.left, x2: W - m.right, y1: y(v), y2: y(v) }));
    svg.append(s("text", { class: "tick", x: m.left - 8, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  svg.append(s("line", { class: "axis", x1: m.left, x2: W - m.right, y1: y(0), y2: y(0) }));
  const every = Math.max(1, Math.ceil(columns.length / Math.max(3, Math.floor(W / 70))));
  columns.forEach((col, i) => {
    const x = m.left + band * i + (band - bar) / 2;
    let base = 0;
    const g = s("g", { class: "col" });
    series.forEach((se, k) => {
      const v = se.values[i] || 0;
      if (v <= 0) return;
      const rect = s("rect", { class: `bar series-${k % SERIES}`, x, width: bar, y: y(base + v), height: Math.max(1, y(base) - y(base + v)), rx: 2 });
      rect.append(s("title", {}, `${col} · ${se.name}: ${format(v)}`));
      g.append(rect);
      base += v;
    });
    if (totals[i] > 0) g.append(s("title", {}, `${col}: ${format(totals[i])}`));
    svg.append(g);
    if (i % every === 0) {
      svg.append(s("text", { class: "tick", x: m.left + band * i + band / 2, y: H - 10, "text-anchor": "middle" }, shortLabel(col)));
    }
  });
  const legend = h("ul.legend", { "aria-label": "Legend" },
    series.map((se, k) => h("li", h("span.swatch", { class: `series-${k % SERIES}`, "aria-hidden": "true" }), se.name)));
  return h("figure.chart", svg, legend);
}
