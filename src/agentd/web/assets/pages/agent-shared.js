// Pieces the overview, agent and kernel pages share: state pills, field errors from a
// 422, a confirm dialog, JSON editors, future times. Everything is set as text.

import { h, pill, visibleJson } from "../ui.js";

export const STATES = ["created", "running", "paused", "stopped", "error"];

// An agent's state as people read it: paused / stopped / error, else awake or asleep
// (held in memory on this node or not) when the listing says so.
export function statePills(agent) {
  const out = [pill(agent.state)];
  if ((agent.state === "created" || agent.state === "running") && typeof agent.awake === "boolean") {
    out.push(agent.awake ? pill("awake") : pill("asleep"));
  }
  return h("span.state-pills", out);
}

// "in 5m", "3h ago": relative to now, both ways.
export function whenText(iso) {
  if (!iso) return "–";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return String(iso);
  const s = Math.round((t - Date.now()) / 1000);
  const a = Math.abs(s);
  const span = a < 5 ? null : a < 60 ? a + "s" : a < 3600 ? Math.floor(a / 60) + "m"
    : a < 86400 ? Math.floor(a / 3600) + "h" : Math.floor(a / 86400) + "d";
  if (!span) return "now";
  return s > 0 ? "in " + span : span + " ago";
}
export function when(iso) {
  return h("time", { datetime: iso || "", title: iso || "" }, whenText(iso));
}
export function epochIso(seconds) {
  return seconds === null || seconds === undefined ? null : new Date(seconds * 1000).toISOString();
}

// A form's field errors: slot(key, control) gives the element under a control that shows
// its error; show(apiError, route) puts each of a 422's details.errors beside the field
// route(field) names, and returns the messages no field took (for the form's own box).
export class FieldErrors {
  constructor(prefix) {
    this.prefix = prefix;
    this.slots = new Map();
  }
  slot(key, control) {
    const id = `${this.prefix}-${key.replace(/[^A-Za-z0-9_-]/g, "_")}-error`;
    const el = h("ul.field-error.field-errors", { id, role: "alert", hidden: true, dataset: { errorFor: key } });
    if (control) {
      const described = (control.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
      control.setAttribute("aria-describedby", [...described, id].join(" "));
    }
    this.slots.set(key, { el, control });
    return el;
  }
  clear() {
    for (const { el, control } of this.slots.values()) {
      el.hidden = true;
      el.replaceChildren();
      if (control) control.removeAttribute("aria-invalid");
    }
  }
  set(key, messages) {
    const found = this.slots.get(key);
    if (!found) return false;
    found.el.replaceChildren(...messages.map((m) => h("li", m)));
    found.el.hidden = false;
    if (found.control) found.control.setAttribute("aria-invalid", "true");
    return true;
  }
  // errors: [{field, message}] -> messages that found no slot.
  show(errors, route) {
    const byKey = new Map();
    const rest = [];
    for (const e of errors) {
      const key = route(e.field || "");
      const text = labelled(e);
      if (key && this.slots.has(key)) {
        if (!byKey.has(key)) byKey.set(key, []);
        byKey.get(key).push(text);
      } else {
        rest.push(e.field ? `${e.field}: ${e.message}` : e.message);
      }
    }
    for (const [key, messages] of byKey) this.set(key, messages);
    const first = [...byKey.keys()][0];
    const control = first && this.slots.get(first).control;
    if (control && typeof control.focus === "function") control.focus();
    return rest;
  }
}

// "body.settings.budget.dya: unknown setting" -> "budget.dya: unknown setting" (the part
// under the editor's own key says where inside it).
function labelled(e) {
  const field = String(e.field || "");
  const m = /^body\.(?:settings\.)?(.*)$/.exec(field);
  const where = m ? m[1] : field;
  return where && /[.[]/.test(where) ? `${where}: ${e.message}` : e.message;
}

// The API error's field list, or one entry with its message.
export function errorList(error) {
  const list = (error && error.details && Array.isArray(error.details.errors)) ? error.details.errors : [];
  return list.length ? list : [{ field: "", message: error && error.message ? error.message : String(error) }];
}

// A JSON editor: a textarea holding an object; value() -> {ok, value|error}.
export function jsonEditor({ id, value, rows = 6, label }) {
  const area = h("textarea.json", { id, rows: String(rows), spellcheck: "false", autocomplete: "off",
    "aria-label": label || null });
  // As JSON with invisible and bidi characters escaped: seen, and parsed back as they were.
  area.value = value === undefined || value === null ? "" : visibleJson(value, 2);
  return {
    el: area,
    value() {
      const text = area.value.trim();
      if (!text) return { ok: true, value: undefined };
      try {
        const parsed = JSON.parse(text);
        if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
          return { ok: false, error: "must be a JSON object ({...})" };
        }
        return { ok: true, value: parsed };
      } catch (e) {
        return { ok: false, error: "not valid JSON: " + e.message };
      }
    },
    set(v) { area.value = v === undefined || v === null ? "" : visibleJson(v, 2); },
  };
}

// A modal confirm: resolves true (confirmed) or false (cancelled, Esc).
export function confirmDialog({ title, body, confirm = "Delete", danger = true }) {
  return new Promise((resolve) => {
    const ok = h("button", { type: "submit", class: danger ? "danger" : "primary", value: "ok" }, confirm);
    const cancel = h("button", { type: "button", value: "cancel" }, "Cancel");
    const dialog = h("dialog.confirm", { "aria-labelledby": "confirm-title" },
      h("form", { method: "dialog" },
        h("h2#confirm-title", title),
        body ? h("p", body) : null,
        h("div.row.dialog-actions", cancel, ok)));
    let answered = false;
    const done = (value) => {
      if (answered) return;
      answered = true;
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    dialog.addEventListener("submit", (e) => { e.preventDefault(); done(true); });
    dialog.addEventListener("cancel", (e) => { e.preventDefault(); done(false); });
    cancel.addEventListener("click", () => done(false));
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

// Repeats fn every ms while the page is open (and at once when the tab is shown again);
// stop() ends it. fn may be async: a slow answer never overlaps the next.
// A button that opens and closes a form in a slot under it: make() -> {el, focus} builds
// the form each time it opens. Returns show(open), for the form's own Save and Cancel.
export function disclosure(toggle, slot, make) {
  function show(open) {
    slot.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open) {
      const form = make();
      slot.replaceChildren(form.el);
      form.focus();
    } else {
      slot.replaceChildren();
    }
  }
  toggle.addEventListener("click", () => show(slot.hidden));
  return show;
}

export function every(ms, fn) {
  let timer = null;
  let stopped = false;
  let running = false;
  let again = false;
  async function tick() {
    if (stopped) return;
    if (running) { again = true; return; }
    running = true;
    clearTimeout(timer);
    try { await fn(); } catch (e) { console.error(e); } finally { running = false; }
    if (stopped) return;
    if (again) { again = false; tick(); return; }
    timer = setTimeout(tick, ms);
  }
  const visible = () => {
    if (document.visibilityState === "visible" && !stopped) { clearTimeout(timer); tick(); }
  };
  document.addEventListener("visibilitychange", visible);
  timer = setTimeout(tick, ms);
  return {
    now() { clearTimeout(timer); return tick(); },
    stop() { stopped = true; clearTimeout(timer); document.removeEventListener("visibilitychange", visible); },
  };
}
