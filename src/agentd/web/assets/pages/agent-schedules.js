// The agent page's Schedules tab: the list (Pause / Resume, Edit, Delete) and the one
// form that both creates a schedule (POST /v1/agents/NAME/schedules) and edits one
// (PATCH /v1/schedules/ID). make(panel, tc) as the other tabs (see agent.js).

import { ApiError, del, get, patch, path, post } from "../api.js";
import { errorBox, fmtInt, h, pill, toast } from "../ui.js";
import { FieldErrors, confirmDialog, disclosure, errorList, when } from "./agent-shared.js";
import { refused } from "./agent-tabs.js";

function trigger(s) {
  if (s.cron) return [h("code", s.cron), s.timezone && s.timezone !== "UTC" ? ` ${s.timezone}` : ""];
  if (s.every_s) return `every ${everyText(s.every_s)}`;
  if (s.at) return ["once ", when(s.at)];
  return "–";
}
function everyText(seconds) {
  const s = Number(seconds);
  if (s % 86400 === 0) return `${s / 86400}d`;
  if (s % 3600 === 0) return `${s / 3600}h`;
  if (s % 60 === 0) return `${s / 60}m`;
  return `${s}s`;
}

// An instant (ISO 8601) as the wall-clock time a datetime-local input holds, in the IANA
// zone the schedule reads its times in (the API sends `at` and `ends_at` back in UTC).
function wallClock(iso, zone) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const options = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", hourCycle: "h23" };
  let parts;
  try {
    parts = new Intl.DateTimeFormat("en-CA", { ...options, timeZone: zone || "UTC" }).formatToParts(date);
  } catch {
    parts = new Intl.DateTimeFormat("en-CA", { ...options, timeZone: "UTC" }).formatToParts(date);
  }
  const p = Object.fromEntries(parts.map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}:${p.second}`;
}

// The schedule form. Without `schedule`: New schedule, every field empty or at its
// default, and only what was filled in is posted (the daemon's defaults apply to the
// rest). With `schedule`: Edit, filled with its values, and only the fields changed are
// patched (PATCH takes every field, the trigger kind too: sending another trigger clears
// the old one). Either way the API's refusals go beside the field they name and nothing
// typed is lost.
const TRIGGERS = [["cron", "Cron expression"], ["every_s", "Every N seconds"], ["at", "Once, at a time"]];

function scheduleForm(tc, { schedule = null, onSaved, onCancel }) {
  const editing = Boolean(schedule);
  const s = schedule || {};
  const pre = editing ? "edit-schedule" : "new-schedule";
  const errors = new FieldErrors(pre);
  const kind = h(`select#${pre}-trigger`, TRIGGERS.map(([v, l]) => h("option", { value: v }, l)));
  const cron = h(`input#${pre}-cron`, { placeholder: "0 9 * * 1-5", autocomplete: "off", spellcheck: "false",
    maxlength: "200", "aria-describedby": `${pre}-cron-hint` });
  const timezone = h(`input#${pre}-timezone`, { value: "UTC", autocomplete: "off", spellcheck: "false",
    maxlength: "64", "aria-describedby": `${pre}-timezone-hint` });
  const everyS = h(`input#${pre}-every_s`, { type: "number", min: "1", step: "any", placeholder: "3600",
    autocomplete: "off" });
  const at = h(`input#${pre}-at`, { type: "datetime-local", step: "1" });
  const perFire = h(`input#${pre}-per-fire`, { type: "checkbox" });
  const session = h(`input#${pre}-session`, { maxlength: "256", autocomplete: "off", spellcheck: "false",
    placeholder: "schedule:news" });
  const content = h(`textarea#${pre}-content`, { rows: "3" });
  // Editing, overlap and missed hold the schedule's own values: PATCH cannot set one
  // back to "the agent's default" (null there means "unchanged").
  const choice = (id, values) => h(`select#${id}`, editing ? null : h("option", { value: "" }, "agent default"),
    values.map((v) => h("option", { value: v }, v)));
  const overlap = choice(`${pre}-overlap`, ["skip", "enqueue", "interrupt"]);
  const missed = choice(`${pre}-missed`, ["skip", "once", "all"]);
  const seconds = (id, placeholder) => h(`input#${id}`, { type: "number", min: "0", step: "any", placeholder,
    autocomplete: "off", "aria-describedby": `${id}-hint` });
  const jitter = seconds(`${pre}-jitter_s`, "0");
  const catchup = seconds(`${pre}-catchup_s`, editing ? "" : "agent default");
  const endsAt = h(`input#${pre}-ends_at`, { type: "datetime-local", step: "1", "aria-describedby": `${pre}-ends_at-hint` });
  const paused = h(`input#${pre}-paused`, { type: "checkbox" });
  const formError = h("div.form-error", { role: "alert" });
  const save = h("button.primary", { type: "submit", disabled: tc.isGone() }, editing ? "Save schedule" : "Add schedule");
  const cancel = h("button", { type: "button" }, "Cancel");

  const field = (id, label, control, key, hint) => h("div.field", h("label", { for: id }, label), control,
    hint ? h("p.hint", { id: `${id}-hint` }, hint) : null, errors.slot(key, control));
  const cronField = field(`${pre}-cron`, "Cron expression", cron, "cron", "minute hour day-of-month month day-of-week");
  const tzField = field(`${pre}-timezone`, "Time zone", timezone, "timezone",
    "An IANA name (Europe/Berlin); cron, At and Ends at are read in it.");
  const everyField = field(`${pre}-every_s`, "Every (seconds)", everyS, "every_s",
    editing ? "A change counts the next fire from now." : "The first fire one interval from now.");
  const atField = field(`${pre}-at`, "At", at, "at", "A time in the time zone given.");
  const sessionField = field(`${pre}-session`, "Session key", session, "session", null);

  if (editing) {
    kind.value = s.cron ? "cron" : s.every_s ? "every_s" : "at";
    cron.value = s.cron || "";
    timezone.value = s.timezone || "UTC";
    everyS.value = s.every_s === null || s.every_s === undefined ? "" : String(s.every_s);
    at.value = wallClock(s.at, s.timezone);
    perFire.checked = s.session === null;
    session.value = s.session || "";
    content.value = s.content || "";
    overlap.value = s.overlap;
    missed.value = s.missed;
    jitter.value = String(s.jitter_s ?? 0);
    catchup.value = String(s.catchup_s ?? 0);
    endsAt.value = wallClock(s.ends_at, s.timezone);
    paused.checked = !s.enabled;
  }

  function shown() {
    const k = kind.value;
    cronField.hidden = k !== "cron";
    everyField.hidden = k !== "every_s";
    atField.hidden = k !== "at";
    // An interval needs no time zone, unless an end time is to be read in it.
    tzField.hidden = k === "every_s" && !endsAt.value;
    session.disabled = perFire.checked;
  }
  kind.addEventListener("change", shown);
  perFire.addEventListener("change", shown);
  endsAt.addEventListener("input", shown);
  shown();

  const pausedHint = editing
    ? (s.paused_reason ? `Paused now: ${s.paused_reason}. Unticking resumes it.` : "Ticking pauses it; unticking resumes it.")
    : "Added paused: it fires once resumed.";
  const form = h(`form.panel.inner.${pre}`, { novalidate: true,
    "aria-label": editing ? "Edit schedule" : "New schedule", dataset: editing ? { editing: s.id } : {} },
    h("div.form-grid",
      h("div.field", h("label", { for: `${pre}-trigger` }, "Trigger"), kind),
      cronField, everyField, atField, tzField),
    h("div.form-grid",
      sessionField,
      h("div.field", h("label.check", perFire, " A new session per fire"),
        h("p.hint", "Each fire gets its own session (schedule:ID:TIME)."))),
    h("div.field", h("label", { for: `${pre}-content` }, "Message"), content, errors.slot("content", content)),
    h("div.form-grid",
      field(`${pre}-overlap`, "Overlap", overlap, "overlap", "When the previous fire's run is still going."),
      field(`${pre}-missed`, "Missed", missed, "missed", "Fire times missed while no daemon ran."),
      field(`${pre}-catchup_s`, "Catch-up (seconds)", catchup, "catchup_s",
        "Missed fire times older than this are never fired."),
      field(`${pre}-jitter_s`, "Jitter (seconds)", jitter, "jitter_s",
        "Delay each fire by up to this much, below the interval (0-3600)."),
      field(`${pre}-ends_at`, "Ends at", endsAt, "ends_at", "No fire after this time (in the time zone); empty: never.")),
    h("div.field", h("label.check", paused, editing ? " Paused" : " Create paused"),
      h("p.hint", pausedHint), errors.slot("enabled", paused)),
    formError,
    h("div.row.form-actions", save, cancel));
  cancel.addEventListener("click", onCancel);
  form.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !e.defaultPrevented) { e.preventDefault(); onCancel(); }
  });

  const CONTROLS = { cron, every_s: everyS, at };
  // The form as the API's fields (a trigger's value under its own key). Numbers that do
  // not parse are told here: a number input holds "" for them.
  function read() {
    const k = kind.value;
    const num = (control) => (control.value.trim() === "" ? null : Number(control.value));
    return {
      kind: k, trigger: k === "every_s" ? num(everyS) : CONTROLS[k].value.trim(),
      timezone: timezone.value.trim() || "UTC",
      session: perFire.checked ? null : session.value.trim(),
      content: content.value, overlap: overlap.value || null, missed: missed.value || null,
      jitter_s: num(jitter), catchup_s: num(catchup), ends_at: endsAt.value || null, enabled: !paused.checked,
    };
  }
  const initial = editing ? read() : null;

  function problems(v) {
    const raw = CONTROLS[v.kind].value.trim();
    const needs = [
      [!raw && !CONTROLS[v.kind].validity.badInput, v.kind, { cron: "Give a cron expression.",
        every_s: "Give the seconds between fires.", at: "Give the date and time." }[v.kind]],
      [!perFire.checked && !v.session, "session", "Give a session key, or tick a new session per fire."],
      [!v.content.trim(), "content", "Give the message each fire sends."],
    ];
    for (const [key, control] of [["every_s", everyS], ["jitter_s", jitter], ["catchup_s", catchup]]) {
      if (key === "every_s" && v.kind !== "every_s") continue;
      needs.push([control.validity.badInput, key, "Give a number of seconds."]);
    }
    if (editing) {
      // PATCH takes null as "unchanged": an emptied number would silently keep the old one.
      needs.push([v.jitter_s === null && !jitter.validity.badInput, "jitter_s", "Give a number of seconds (0: none)."]);
      needs.push([v.catchup_s === null && !catchup.validity.badInput, "catchup_s", "Give a number of seconds (0: none)."]);
    }
    return needs.filter(([bad]) => bad);
  }

  // Create: what was filled in. Edit: what differs from the schedule; a new time zone
  // also sends the times read in it (as shown, now meant in the new zone).
  function bodyOf(v) {
    if (!editing) {
      const body = { content: v.content, session: v.session };
      body[v.kind] = v.trigger;
      if (v.kind !== "every_s" || v.ends_at) body.timezone = v.timezone;
      for (const key of ["overlap", "missed", "jitter_s", "catchup_s", "ends_at"]) if (v[key] !== null) body[key] = v[key];
      if (!v.enabled) body.enabled = false;
      return body;
    }
    const body = {};
    const zoneChanged = v.timezone !== initial.timezone;
    if (v.kind !== initial.kind || v.trigger !== initial.trigger || (zoneChanged && v.kind === "at")) body[v.kind] = v.trigger;
    if (zoneChanged) body.timezone = v.timezone;
    for (const key of ["session", "content", "overlap", "missed", "jitter_s", "catchup_s", "ends_at", "enabled"]) {
      if (v[key] !== initial[key]) body[key] = v[key];
    }
    if (zoneChanged && v.ends_at) body.ends_at = v.ends_at;
    return body;
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    errors.clear();
    formError.replaceChildren();
    const v = read();
    const needs = problems(v);
    if (needs.length) {
      for (const [, key, message] of needs) errors.set(key, [message]);
      errors.slots.get(needs[0][1]).control.focus();
      return;
    }
    const body = bodyOf(v);
    if (editing && !Object.keys(body).length) { onCancel(); return; }
    save.disabled = true;
    try {
      const saved = editing ? await patch(path`/v1/schedules/${s.id}`, body)
        : await post(path`/v1/agents/${tc.name}/schedules`, body);
      toast(editing ? "Schedule saved" : "Schedule added", "ok");
      onSaved(saved);
    } catch (err) {
      save.disabled = tc.isGone();
      if (refused(err, tc)) return;
      const rest = errors.show(errorList(err), (f) => {
        const m = /^body\.([a-z_]+)/.exec(f);
        return m ? m[1] : null;
      });
      if (rest.length) {
        formError.replaceChildren(h("div.error-box", h("strong", editing ? "Not saved: " : "Not added: "),
          h("ul", rest.map((m) => h("li", m)))));
      }
    }
  });
  return { el: form, focus: () => kind.focus(), gone: () => { save.disabled = true; } };
}

export function schedulesTab(panel, tc) {
  const box = h("div");
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const addToggle = h("button", { type: "button", "aria-expanded": "false", disabled: tc.isGone() }, "New schedule");
  const addSlot = h("div", { hidden: true });
  panel.append(h("div.panel",
    h("div.list-toolbar", h("h2", "Schedules"), h("div.actions", addToggle)),
    addSlot, box, more));
  let rows = [];
  let after = null;
  let adding = null;
  // The schedule being edited: its form lives in a row under the schedule's own, kept
  // (with whatever is typed in it) across the list's redraws.
  let editing = null; // {id, form}

  const showAdd = disclosure(addToggle, addSlot, () => (adding = scheduleForm(tc, {
    onSaved: (created) => {
      rows = [...rows.filter((r) => r.id !== created.id), created];
      showAdd(false);
      draw();
      addToggle.focus();
    },
    onCancel: () => { showAdd(false); addToggle.focus(); },
  })));

  function editButton(id) {
    const found = box.querySelector(`tr[data-schedule="${CSS.escape(id)}"] button.edit`);
    if (found) found.focus();
  }
  function startEdit(s) {
    const id = s.id;
    const close = () => { editing = null; draw(); editButton(id); };
    editing = { id, form: scheduleForm(tc, {
      schedule: s,
      onSaved: (saved) => { rows = rows.map((r) => (r.id === saved.id ? saved : r)); close(); },
      onCancel: close,
    }) };
    draw();
    editing.form.focus();
  }

  function draw() {
    addToggle.disabled = tc.isGone();
    // Moving the form into the new table blurs it: the field being typed in gets its
    // focus and caret back (a fire's events redraw the list at any moment).
    const active = editing && editing.form.el.contains(document.activeElement) ? document.activeElement : null;
    let caret = null;
    try { caret = active ? [active.selectionStart, active.selectionEnd] : null; } catch { caret = null; }
    if (!rows.length && !editing) {
      box.replaceChildren(h("p.empty", "No schedules. Add one with New schedule above, ",
        h("code", `agentd schedule add ${tc.name} --every 3600 --content "..."`), " or POST ",
        h("code", `/v1/agents/${tc.name}/schedules`), "."));
      return;
    }
    const editRow = () => h("tr.edit-row", { dataset: { editFor: editing.id } },
      h("td", { colspan: "8" }, editing.form.el));
    const body = [];
    for (const s of rows) {
      body.push(row(s));
      if (editing && editing.id === s.id) body.push(editRow());
    }
    // Deleted by another client while being edited: the form stays (its Save says so).
    if (editing && !rows.some((r) => r.id === editing.id)) body.push(editRow());
    box.replaceChildren(h("div.table-wrap", h("table.schedules",
      h("thead", h("tr", ["Trigger", "Session", "Message", "Next fire", "Last fire", "Fires", "State", ""].map(
        (l) => h("th", { scope: "col" }, l)))),
      h("tbody", body))));
    if (active && document.activeElement !== active) {
      active.focus({ preventScroll: true });
      try { if (caret && caret[0] !== null) active.setSelectionRange(caret[0], caret[1]); } catch { /* not a text field */ }
    }
  }
  function row(s) {
    const open = Boolean(editing && editing.id === s.id);
    return h("tr", { dataset: { schedule: s.id } },
      h("td", trigger(s)),
      h("td", s.session ? h("a", { href: tc.ctx.sessionHref(tc.name, s.session) }, s.session) : h("span.muted", "new each fire")),
      h("td.clip", { title: s.content }, s.content.length > 80 ? s.content.slice(0, 80) + "…" : s.content),
      h("td", s.next_fire_at ? when(s.next_fire_at) : "–"),
      h("td", s.last_fire_at ? when(s.last_fire_at) : "never"),
      h("td.num", fmtInt(s.fires), s.failures ? h("span.pill.pill-failed", { title: "consecutive failures" }, `${s.failures} failed`) : null),
      h("td", s.enabled ? pill("running", "active") : pill("paused", "paused"),
        s.paused_reason ? h("div.hint", s.paused_reason) : null),
      h("td", h("div.row",
        h("button", { type: "button", disabled: tc.isGone(), onclick: () => toggle(s) },
          s.enabled ? "Pause" : "Resume"),
        // One edit at a time: the open form keeps what is typed in it until saved or cancelled.
        h("button.edit", { type: "button", disabled: tc.isGone() || Boolean(editing), "aria-expanded": String(open),
          onclick: () => startEdit(s) }, "Edit"),
        h("button.danger", { type: "button", disabled: tc.isGone(), onclick: () => remove(s) }, "Delete…"))));
  }
  async function toggle(s) {
    try {
      const changed = await patch(path`/v1/schedules/${s.id}`, { enabled: !s.enabled });
      rows = rows.map((r) => (r.id === s.id ? changed : r));
      draw();
      toast(changed.enabled ? "Schedule resumed" : "Schedule paused", "ok");
    } catch (e) {
      refused(e, tc, "Could not change the schedule");
    }
  }
  async function remove(s) {
    const yes = await confirmDialog({ title: "Delete this schedule?",
      body: `"${s.content.length > 80 ? s.content.slice(0, 80) + "…" : s.content}" stops firing. Runs it started stay. This cannot be undone.`,
      confirm: "Delete schedule" });
    if (!yes) return;
    try {
      await del(path`/v1/schedules/${s.id}`);
      toast("Schedule deleted", "ok");
    } catch (e) {
      // Deleted meanwhile (by another client): gone all the same.
      if (!(e instanceof ApiError && e.code === "schedule_not_found")) {
        refused(e, tc, "Could not delete the schedule");
        return;
      }
    }
    rows = rows.filter((r) => r.id !== s.id);
    if (editing && editing.id === s.id) editing = null;
    draw();
  }
  async function load(next) {
    try {
      const body = await get(path`/v1/agents/${tc.name}/schedules`, { query: { limit: 100, after: next || undefined } });
      if (next) {
        const fresh = new Set(body.schedules.map((s) => s.id));
        rows = [...rows.filter((r) => !fresh.has(r.id)), ...body.schedules];
      } else {
        rows = body.schedules;
      }
      after = body.next_after;
      more.hidden = !after;
      draw();
    } catch (e) {
      if (!refused(e, tc)) box.replaceChildren(errorBox(e, "Could not list the schedules"));
    }
  }
  more.addEventListener("click", () => load(after));
  load(null);
  // A fire's message (its data names the schedule) reads the list again, at most once in
  // 800 ms. Not a debounce of every event: a busy agent's steady stream of events would
  // put the reload off for ever, and the last event of a fire does not name it.
  let reload = null;
  return {
    onEvent(frame, data) {
      if (!(data && data.data && data.data.schedule_id) || reload) return;
      reload = setTimeout(() => { reload = null; load(null); }, 800);
    },
    cleanup: () => clearTimeout(reload),
    onGone: () => { draw(); if (!addSlot.hidden && adding) adding.gone(); if (editing) editing.form.gone(); },
  };
}
