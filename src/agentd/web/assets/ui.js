// DOM helpers. Everything from the daemon is set as text (textContent, attributes),
// never as HTML: a model's reply or a tool's output is attacker-controlled.

// Characters that show nothing, or change how the text around them reads, made
// visible as escapes, the CLI's way (\x1b, \u202e, \U000e0041): a bidi override can
// make an approval of `rm -rf /\u202e...` read as something else, a zero-width space
// make two different paths look the same. The controls but newline and tab; Unicode's
// format characters (Cf: bidi marks, overrides, isolates, zero-width space and
// joiners, word joiner, BOM, soft hyphen, tag characters), line and paragraph
// separators; the invisible fillers; the variation selectors but U+FE0E/U+FE0F right
// after a character with a text and an emoji form (a warning sign stays one). The same
// set as agentd/cli/_safe.py's INVISIBLE: tests/web/test_console_invisible.py holds
// the two to every code point. h() and append() show every text this way.
const VARIATION = "\\ufe00-\\ufe0f\\u{e0100}-\\u{e01ef}";
const INVISIBLE_SOURCE =
  "[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f" +
  "\\u00ad\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890\\u0891\\u08e2\\u180e" +
  "\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u206f\\ufeff\\ufff9-\\ufffb" +
  "\\u{110bd}\\u{110cd}\\u{13430}-\\u{1343f}\\u{1bca0}-\\u{1bca3}" +
  "\\u{1d173}-\\u{1d17a}\\u{e0001}\\u{e0020}-\\u{e007f}" +
  "\\u034f\\u115f\\u1160\\u17b4\\u17b5\\u3164\\uffa0" +
  "\\u180b-\\u180d\\u180f\\ufe00-\\ufe0d\\u{e0100}-\\u{e01ef}]" +
  `|(?:^|(?<=[${VARIATION}\\x00-\\x22\\x24-\\x29\\x2b-\\x2f\\x3a-\\x7f]))[\\ufe0e\\ufe0f]`;
const INVISIBLE_ANY = new RegExp(INVISIBLE_SOURCE, "u");
const INVISIBLE = new RegExp(INVISIBLE_SOURCE, "gu");
const hex = (n, width) => n.toString(16).padStart(width, "0");

// `text` with every such character as a visible escape (\r\n kept as a line end).
export function visible(text) {
  const s = String(text);
  if (!INVISIBLE_ANY.test(s)) return s;
  return s.replace(/\r\n/g, "\n").replace(INVISIBLE, (ch) => {
    const code = ch.codePointAt(0);
    return code < 0x100 ? "\\x" + hex(code, 2) : code < 0x10000 ? "\\u" + hex(code, 4) : "\\U" + hex(code, 8);
  });
}

// JSON text of `value` (indented by `indent`) with those characters written as JSON
// escapes (\u202e; past the BMP a surrogate pair): what it shows is what JSON.parse
// gives back, so an editor of it round-trips the exact value.
export function visibleJson(value, indent) {
  let json;
  try { json = JSON.stringify(value, null, indent); } catch { return visible(String(value)); }
  if (json === undefined) return String(value);
  if (!INVISIBLE_ANY.test(json)) return json;
  return json.replace(INVISIBLE, (ch) => [...Array(ch.length).keys()]
    .map((i) => "\\u" + hex(ch.charCodeAt(i), 4)).join(""));
}

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
      el.textContent = visible(value);
    } else if (key === "title") {
      el.setAttribute("title", visible(value));
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
    el.append(child instanceof Node ? child : document.createTextNode(visible(child)));
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
  el.textContent = visible(message);
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
