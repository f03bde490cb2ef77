// DOM helpers. Everything from the daemon is set as text (textContent, attributes),
// never as HTML: a model's reply or a tool's output is attacker-controlled.

// h("div.card#x", {onclick, class, dataset, ...}, child, "text", [children]) -> Element
export function h(spec, attrs, ...children) {
  const m = /^([a-z0-9-]+)?((?:[.#][A-Za-z0-9_-]+)*)$/.exec(spec);
  if (!m) throw new Error("bad element spec " + spec);
  const el = document.createElement(m[1] || "div");
  for (const part of m[2].match(/[.#][A-Za-z0-9_-]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      for (const c of String(value).split(/\s+/).filter(Boolean)) el.classList.add(c);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key === "value") {
      el.value = value;
    } else if (key === "checked" || key === "disabled" || key === "hidden" || key === "selected") {
      el[key] = Boolean(value);
    } else if (key === "html") {
      throw new Error("the console never sets HTML");
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) { el.replaceChildren(); return el; }

// Numbers, money, times.
export function fmtInt(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }
export function fmtTokens(n) {
  if (n === null || n === undefined) return "–";
  if (n >= 1e9) return (n / 1e9).toFixed(2) + "B";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return fmtInt(n);
}
export function fmtCost(usd) {
  if (usd === null || usd === undefined) return "–";
  if (usd === 0) return "$0";
  if (usd < 0.01) return "$" + usd.toFixed(4);
  return "$" + usd.toFixed(2);
}
export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}
export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(2) + " s";
}
export function relTime(iso) {
  if (!iso) return "–";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return String(iso);
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h ago";
  return Math.floor(s / 86400) + "d ago";
}
export function timeEl(iso) {
  return h("time", { datetime: iso || "", title: iso || "" }, relTime(iso));
}
export function today() { return new Date().toISOString().slice(0, 10); }

// A status pill: state names become a class (pill-running, pill-paused, ...).
export function pill(state, label) {
  return h("span.pill", { class: "pill-" + String(state).replace(/[^a-z_]/g, "") }, label || state);
}

// Short-lived notices: toast("Saved"), toast(error, "error").
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const el = h("div.toast", { class: "toast-" + kind, role: kind === "error" ? "alert" : "status" },
    message instanceof Error ? message.message : String(message));
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 3500);
}

// The page-wide notice under the header (a lost connection, a deleted agent, ...).
export function banner(message, kind = "warn") {
  const el = document.getElementById("banner");
  if (!message) { el.hidden = true; el.textContent = ""; return; }
  el.hidden = false;
  el.className = "banner banner-" + kind;
  el.textContent = message;
}

// An error as a block on the page: what failed, in words.
export function errorBox(error, what) {
  return h("div.error-box", { role: "alert" },
    h("strong", what ? `${what}: ` : "Error: "), error && error.message ? error.message : String(error),
    error && error.code ? h("code.code", error.code) : null);
}

// A table from rows: columns [{label, get(row) -> node|text, class}].
export function table(columns, rows, { empty = "Nothing here yet.", rowAttrs } = {}) {
  if (!rows.length) return h("p.empty", empty);
  return h("div.table-wrap",
    h("table",
      h("thead", h("tr", columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)))),
      h("tbody", rows.map((row) => h("tr", rowAttrs ? rowAttrs(row) : null,
        columns.map((c) => h("td", { class: c.class }, c.get(row))))))));
}

// A virtualised list: only the rows in view exist in the DOM, so 10,000 rows scroll
// like 30. rowHeight is fixed (px); render(i) returns the row's element.
export function virtualList({ count, rowHeight, render, height = "60vh", label = "list" }) {
  const viewport = h("div.vlist", { role: "list", "aria-label": label, tabindex: "0" });
  // A style property, not a style attribute: the console's policy refuses inline styles.
  viewport.style.height = height;
  const spacer = h("div.vlist-spacer");
  const rows = h("div.vlist-rows");
  viewport.append(spacer, rows);
  let total = count;
  let drawn = "";
  function draw(force = false) {
    const top = viewport.scrollTop;
    const view = viewport.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / rowHeight) - 10);
    const last = Math.min(total, Math.ceil((top + view) / rowHeight) + 10);
    const key = `${first}:${last}:${total}`;
    if (!force && key === drawn) return;
    drawn = key;
    spacer.style.height = total * rowHeight + "px";
    rows.style.transform = `translateY(${first * rowHeight}px)`;
    const els = [];
    for (let i = first; i < last; i++) {
      const el = render(i);
      el.style.height = rowHeight + "px";
      el.setAttribute("role", "listitem");
      els.push(el);
    }
    rows.replaceChildren(...els);
  }
  viewport.addEventListener("scroll", () => requestAnimationFrame(() => draw()));
  requestAnimationFrame(() => draw(true));
  return {
    el: viewport,
    update(newCount) { total = newCount; draw(true); },
    redraw() { draw(true); },
    scrollToEnd() { viewport.scrollTop = total * rowHeight; draw(true); },
  };
}

// Wait helper for debounced inputs.
export function debounce(fn, ms = 200) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}
