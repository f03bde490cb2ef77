// The agent page's Sessions and Heartbeat tabs (Schedules: agent-schedules.js; Skills:
// agent-skills.js). Each is
// make(panel, tc) -> {cleanup?, onEvent?, onAgent?, onGone?} (see agent.js).

import { ApiError, get, patch, path } from "../api.js";
import { debounce, errorBox, fmtInt, h, pill, toast, virtualList } from "../ui.js";
import { FieldErrors, errorList, when } from "./agent-shared.js";

export function refused(e, tc, what) {
  if (e instanceof ApiError && e.status === 404 && e.code === "agent_not_found") { tc.gone(); return true; }
  if (e instanceof ApiError && e.status === 401) return true;
  if (what) toast(`${what}: ${e.message}`, "error");
  return false;
}

// -- Sessions -----------------------------------------------------------------------------------

const ROW_PX = 46;
const SESSION_PAGE = 100;

export function sessionsTab(panel, tc) {
  const stamp = new Date().toISOString().slice(0, 16).replace(/[-:]/g, "").replace("T", "-");
  const key = h("input#new-session-key", { value: `console:${stamp}`, maxlength: "256", autocomplete: "off",
    spellcheck: "false", "aria-describedby": "new-session-hint" });
  const keyError = h("p.field-error", { role: "alert", hidden: true });
  const open = h("button.primary", { type: "submit" }, "Open");
  const newForm = h("form.row.new-session", { novalidate: true, "aria-label": "New session" },
    h("label", { for: "new-session-key" }, "New session"), key, open);
  const filter = h("input#session-filter", { type: "search", placeholder: "Filter sessions by key",
    "aria-label": "Filter sessions by key", autocomplete: "off" });
  const count = h("span.list-count", { role: "status" });
  const box = h("div.session-list");
  panel.append(
    h("div.panel",
      newForm,
      h("p.hint#new-session-hint", "Any key (", h("code", "user:42"), ", ", h("code", "ticket-9"),
        "): its first message creates the session."),
      keyError),
    h("div.panel",
      h("div.list-toolbar", h("h2", "Sessions"), h("div.list-filters", filter), count),
      box));

  newForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const k = key.value.trim();
    const bad = !k ? "Give the session a key." : /[\u0000-\u001f\u007f]/.test(k) ? "No control characters."
      : k === "." || k === ".." ? "Not . or .." : null;
    keyError.hidden = !bad;
    keyError.textContent = bad || "";
    if (bad) { key.setAttribute("aria-invalid", "true"); key.focus(); return; }
    tc.ctx.navigate(tc.ctx.sessionHref(tc.name, k));
  });

  // Pages of SESSION_PAGE, most recent activity first (GET ...sessions?limit&after&q): an
  // agent with a hundred thousand sessions costs what one with a hundred does. The
  // filter asks the daemon; "Load more" (or scrolling to the end) asks for the next page.
  const more = h("button#sessions-more", { type: "button", hidden: true }, "Load more");
  let rows = [];
  let next = null;
  let q = "";
  let seq = 0; // the answer to an older question (filter, reload) is dropped
  let loading = false;
  let list = null;
  function draw() {
    count.textContent = !rows.length ? "" : next ? `${fmtInt(rows.length)} shown, more`
      : `${fmtInt(rows.length)} session${rows.length === 1 ? "" : "s"}`;
    more.hidden = !next;
    if (!rows.length) {
      list = null;
      box.replaceChildren(h("p.empty", q ? "No session matches." : "No sessions yet: open a new one above."));
      return;
    }
    // The height as a style property (CSP allows it; a style attribute it does not).
    const height = `${Math.min(rows.length * ROW_PX + 2, 520)}px`;
    if (!list) {
      list = virtualList({ count: rows.length, rowHeight: ROW_PX, label: "Sessions", render: row });
      list.el.style.height = height;
      list.el.addEventListener("scroll", nearEnd);
      box.replaceChildren(h("div.vhead.session-row", h("span.s-key", "Key"), h("span.s-when", "Last activity"),
        h("span.s-num", "Events"), h("span.s-num.hide-narrow", "Checkpoint")), list.el, more);
    } else {
      list.el.style.height = height;
      list.update(rows.length);
    }
  }
  function row(i) {
    const s = rows[i];
    if (!s) return h("div");
    return h("div.session-row", { dataset: { session: s.key } },
      h("a.s-key", { href: tc.ctx.sessionHref(tc.name, s.key), title: s.key }, s.key),
      h("span.s-when", when(s.updated_at)),
      h("span.s-num", fmtInt(s.last_seq)),
      h("span.s-num.hide-narrow", s.checkpoint_seq ? `#${fmtInt(s.checkpoint_seq)}` : "–"));
  }
  function page(after) {
    return get(path`/v1/agents/${tc.name}/sessions`, { query: { limit: SESSION_PAGE, after, q } });
  }
  // The first page, again: on a new filter (from scratch), or live (merged: the pages
  // loaded beyond it stay, less the sessions that moved up into it; the filter stays).
  async function loadFirst({ fresh = false } = {}) {
    const mine = ++seq;
    if (fresh) loading = false;
    try {
      const body = await page(undefined);
      if (mine !== seq) return;
      if (fresh || rows.length <= SESSION_PAGE) {
        rows = body.sessions;
        next = body.next_after;
      } else {
        // Whatever is not in the new first page is older than all of it: the rows
        // loaded before follow in their order, and the cursor still goes on from them.
        const top = new Set(body.sessions.map((s) => s.key));
        rows = body.sessions.concat(rows.filter((s) => !top.has(s.key)));
      }
      draw();
    } catch (e) {
      if (mine === seq && !refused(e, tc)) box.replaceChildren(errorBox(e, "Could not list the sessions"));
    }
  }
  async function loadMore() {
    if (!next || loading) return;
    const mine = seq;
    loading = true;
    more.disabled = true;
    try {
      const body = await page(next);
      if (mine !== seq) return;
      const have = new Set(rows.map((s) => s.key));
      rows = rows.concat(body.sessions.filter((s) => !have.has(s.key)));
      next = body.next_after;
      draw();
    } catch (e) {
      if (mine === seq) refused(e, tc, "Could not load more sessions");
    } finally {
      if (mine === seq) loading = false;
      more.disabled = false;
    }
  }
  function nearEnd() {
    const el = list && list.el;
    if (el && next && el.scrollTop + el.clientHeight >= el.scrollHeight - 4 * ROW_PX) loadMore();
  }
  more.addEventListener("click", loadMore);
  const filtered = debounce(() => {
    const wanted = filter.value.trim();
    if (wanted === q) return;
    q = wanted;
    loadFirst({ fresh: true });
  }, 200);
  filter.addEventListener("input", filtered);
  filter.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); filtered(); } });
  const reload = debounce(() => loadFirst(), 800);
  loadFirst({ fresh: true });
  return { onEvent: () => reload() };
}

// -- Heartbeat ---------------------------------------------------------------------------------

const BEAT_FIELDS = [
  ["every_s", "Every (seconds)", "number", "60 to 604800."],
  ["session", "Session", "text", "The session key beats go to."],
  ["file", "File", "text", "A workspace file read at each beat."],
  ["ok_token", "OK token", "text", "A reply that is exactly this is logged, not delivered."],
];

export function heartbeatTab(panel, tc) {
  const box = h("div");
  const stateBox = h("div.beat-state");
  panel.append(h("div.panel", h("h2", "Heartbeat"),
    h("p.hint", "A periodic turn of the agent's own: it reads its heartbeat document and acts on it."),
    stateBox, box));
  const errors = new FieldErrors("beat");
  let current = null;

  function drawState(hb) {
    current = hb;
    const st = hb.state || {};
    stateBox.replaceChildren(h("dl.facts",
      h("dt", "State"), h("dd", hb.valid ? (hb.settings.enabled ? pill("running", "on") : pill("created", "off"))
        : pill("error", "settings refused")),
      h("dt", "Last beat"), h("dd", st.last_beat_at ? when(st.last_beat_at) : "never",
        st.last_outcome ? [" · ", pill(st.last_outcome)] : null),
      h("dt", "Next beat"), h("dd", st.next_beat_at ? when(st.next_beat_at) : "–"),
      st.last_skip_reason ? [h("dt", "Last skipped"), h("dd", when(st.last_skip_at), " · ", st.last_skip_reason)] : null));
  }
  function draw(hb) {
    drawState(hb);
    errors.slots.clear();
    const s = hb.settings || {};
    const enabled = h("input#beat-enabled", { type: "checkbox", checked: Boolean(s.enabled) });
    const inputs = {};
    const hours = s.active_hours || {};
    const start = h("input#beat-start", { placeholder: "09:00", value: hours.start || "", autocomplete: "off" });
    const end = h("input#beat-end", { placeholder: "18:00", value: hours.end || "", autocomplete: "off" });
    const tz = h("input#beat-tz", { placeholder: "UTC", value: hours.timezone || "", autocomplete: "off" });
    const documentArea = h("textarea#beat-document", { rows: "4", placeholder: "(read from the file)" });
    documentArea.value = s.document || "";
    const formError = h("div.form-error", { role: "alert" });
    const save = h("button.primary", { type: "submit", disabled: tc.isGone() }, "Save heartbeat");
    const form = h("form.beat-form", { novalidate: true, "aria-label": "Heartbeat settings" },
      h("label.check", enabled, " Beat"),
      errors.slot("enabled", enabled),
      h("div.form-grid", BEAT_FIELDS.map(([key, label, kind, hint]) => {
        const input = inputs[key] = h("input", { id: `beat-${key}`, type: kind, value: s[key] === null || s[key] === undefined ? "" : String(s[key]),
          autocomplete: "off" });
        return h("div.field", h("label", { for: `beat-${key}` }, label), input, h("p.hint", hint), errors.slot(key, input));
      })),
      h("fieldset.hours", h("legend", "Active hours (empty: all day)"),
        h("div.form-grid", h("div.field", h("label", { for: "beat-start" }, "From"), start),
          h("div.field", h("label", { for: "beat-end" }, "To"), end),
          h("div.field", h("label", { for: "beat-tz" }, "Time zone"), tz)),
        errors.slot("active_hours", start)),
      h("div.field", h("label", { for: "beat-document" }, "Document ", h("span.hint", "(wins over the file)")), documentArea,
        errors.slot("document", documentArea)),
      formError,
      h("div.row.form-actions", save));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      errors.clear();
      formError.replaceChildren();
      const body = { enabled: enabled.checked, document: documentArea.value.trim() ? documentArea.value : null };
      for (const [key, , kind] of BEAT_FIELDS) {
        const raw = inputs[key].value.trim();
        body[key] = raw === "" ? null : kind === "number" ? Number(raw) : raw;
      }
      body.active_hours = start.value.trim() || end.value.trim() || tz.value.trim()
        ? { start: start.value.trim() || null, end: end.value.trim() || null, timezone: tz.value.trim() || "UTC" } : null;
      save.disabled = true;
      try {
        draw(await patch(path`/v1/agents/${tc.name}/heartbeat`, body));
        toast("Heartbeat saved", "ok");
      } catch (err) {
        save.disabled = false;
        if (refused(err, tc)) return;
        const rest = errors.show(errorList(err), (field) => {
          const m = /^body\.([a-z_]+)/.exec(field);
          return m ? m[1] : null;
        });
        if (rest.length) formError.replaceChildren(h("div.error-box", h("strong", "Not saved: "), h("ul", rest.map((m) => h("li", m)))));
      }
    });
    box.replaceChildren(form);
  }
  async function load(form) {
    try {
      const hb = await get(path`/v1/agents/${tc.name}/heartbeat`);
      if (form) draw(hb); else drawState(hb);
    } catch (e) {
      if (!refused(e, tc) && form) box.replaceChildren(errorBox(e, "Could not read the heartbeat"));
    }
  }
  load(true);
  // A beat's events refresh the state only: the form keeps what is being typed.
  const beat = debounce(() => load(false), 1500);
  return {
    onEvent(frame, data) { if (data && current && current.settings && data.session === current.settings.session) beat(); },
  };
}
