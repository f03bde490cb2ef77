// The agent's Settings tab: model, instructions, tools, the settings most people change as
// fields, policy / budget / sandbox as JSON, and every other setting as one JSON object.
// Saving is one PATCH; a 422 puts each of its details.errors beside the field it names
// (body.settings.max_steps by "Max steps", body.settings.budget.dya in the budget editor's
// list) and the form keeps what the user typed.

import { ApiError, patch, path } from "../api.js";
import { h, toast } from "../ui.js";
import { FieldErrors, errorList, jsonEditor, when } from "./agent-shared.js";
import { toolPicker } from "./agent-new.js";

// Settings shown as their own fields: [key, label, kind, hint].
const FIELDS = [
  ["max_steps", "Max steps per run", "int", "Model calls per run (default: the daemon's)."],
  ["priority", "Priority", ["", "interactive", "background", "batch"], "The scheduler class of runs nobody waits on."],
  ["tenant", "Tenant", "text", "Fair share and budgets are per tenant."],
  ["temperature", "Temperature", "number", "0 to 2; unset: the provider's."],
  ["max_tokens", "Max output tokens", "int", "Per model call; unset: the provider's."],
];
const EDITORS = [
  ["policy", "Policy", "{\"rules\": [{\"tool\": \"shell\", \"action\": \"ask\"}], \"network\": false}"],
  ["budget", "Budgets", "{\"run\": {\"tokens\": 200000}, \"day\": {\"cost_usd\": 5}}"],
  ["sandbox", "Sandbox", "{\"backend\": \"bubblewrap\", \"limits\": {\"wall_s\": 30}}"],
];
const OWN = new Set([...FIELDS.map((f) => f[0]), ...EDITORS.map((e) => e[0])]);

export function settingsTab(panel, tc) {
  const errors = new FieldErrors("settings");
  const formError = h("div.form-error", { role: "alert" });
  const notice = h("div.changed-notice");
  const status = h("span.save-status", { role: "status" });
  const save = h("button.primary#settings-save", { type: "submit" }, "Save");
  const revert = h("button#settings-revert", { type: "button" }, "Revert");
  let base = tc.agent();
  let controls = null;
  const fields = h("div.settings-fields");
  const form = h("form.settings-form", { novalidate: true, "aria-label": "Settings" },
    fields, formError, h("div.row.form-actions.sticky-actions", save, revert, status, notice));
  panel.append(form);

  function fill(agent) {
    base = agent;
    errors.clear();
    errors.slots.clear();
    formError.replaceChildren();
    notice.replaceChildren();
    const settings = agent.settings || {};
    const model = h("input#set-model", { name: "model", value: agent.model, autocomplete: "off", spellcheck: "false" });
    const instructions = h("textarea#set-instructions", { name: "instructions", rows: "8" });
    instructions.value = agent.instructions;
    const tools = toolPicker(agent.tools, { id: "set-tools" });
    const simple = {};
    const simpleEls = FIELDS.map(([key, label, kind, hint]) => {
      const id = `set-${key}`;
      let input;
      if (Array.isArray(kind)) {
        input = h("select", { id, name: key }, kind.map((v) => h("option", { value: v, selected: settings[key] === v || (!v && settings[key] === undefined) },
          v || "default")));
        if (settings[key] !== undefined && !kind.includes(settings[key])) {
          input.append(h("option", { value: String(settings[key]), selected: true }, String(settings[key])));
        }
      } else {
        input = h("input", { id, name: key, type: kind === "text" ? "text" : "number", step: kind === "int" ? "1" : "any",
          inputmode: kind === "text" ? null : "decimal", autocomplete: "off",
          value: settings[key] === undefined ? "" : String(settings[key]) });
      }
      simple[key] = { input, kind };
      return h("div.field", { dataset: { field: key } }, h("label", { for: id }, label), input, h("p.hint", hint),
        errors.slot(key, input));
    });
    const editors = {};
    const editorEls = EDITORS.map(([key, label, example]) => {
      const ed = jsonEditor({ id: `set-${key}`, value: settings[key], rows: 5 });
      ed.el.placeholder = example;
      editors[key] = ed;
      return h("div.field.json-field", { dataset: { field: key } }, h("label", { for: `set-${key}` }, label, " ", h("span.hint", "JSON")),
        ed.el, errors.slot(key, ed.el));
    });
    const rest = Object.fromEntries(Object.entries(settings).filter(([k]) => !OWN.has(k)));
    const other = jsonEditor({ id: "set-other", value: Object.keys(rest).length ? rest : undefined, rows: 8 });
    other.el.placeholder = "{\"fallbacks\": [\"openai:gpt-4.1-mini\"], \"memory\": {\"auto_recall\": true}}";
    controls = { model, instructions, tools, simple, editors, other };
    fields.replaceChildren(
      h("div.form-grid",
        h("div.field", { dataset: { field: "model" } }, h("label", { for: "set-model" }, "Model"), model,
          h("p.hint", h("code", "provider:model"), "; checked when saved."), errors.slot("model", model)),
        ...simpleEls),
      h("div.field", { dataset: { field: "instructions" } }, h("label", { for: "set-instructions" }, "Instructions"),
        instructions, errors.slot("instructions", instructions)),
      h("div.field", { dataset: { field: "tools" } }, tools.el, errors.slot("tools", tools.focusTarget)),
      h("div.form-grid.editors", ...editorEls),
      h("div.field.json-field", { dataset: { field: "other" } },
        h("label", { for: "set-other" }, "Other settings ", h("span.hint", "JSON: every other key of the agent's settings (configuration.md)")),
        other.el, errors.slot("other", other.el)));
    markDirty();
  }

  // The PATCH body from the form, or null after showing what cannot be read.
  function collect() {
    const c = controls;
    const problems = [];
    const otherValue = c.other.value();
    if (!otherValue.ok) problems.push(["other", otherValue.error]);
    const settings = { ...(otherValue.ok && otherValue.value ? otherValue.value : {}) };
    const doubled = Object.keys(settings).filter((k) => OWN.has(k));
    if (doubled.length) problems.push(["other", `${doubled.join(", ")}: set above, in its own field`]);
    for (const [key, { input, kind }] of Object.entries(c.simple)) {
      const raw = input.value.trim();
      if (input.validity && input.validity.badInput) { problems.push([key, "not a number"]); continue; }
      if (!raw) continue;
      settings[key] = kind === "int" || kind === "number" ? Number(raw) : raw;
    }
    for (const [key, ed] of Object.entries(c.editors)) {
      const v = ed.value();
      if (!v.ok) problems.push([key, v.error]);
      else if (v.value !== undefined) settings[key] = v.value;
    }
    return { problems, body: { model: c.model.value.trim(), instructions: c.instructions.value,
      tools: c.tools.value(), settings } };
  }

  function markDirty() {
    const { body } = collect();
    const now = JSON.stringify({ ...body, tools: [...body.tools].sort() });
    const was = JSON.stringify({ model: base.model, instructions: base.instructions, tools: [...base.tools].sort(),
      settings: normalised(base.settings || {}) });
    const dirty = now !== was;
    form.classList.toggle("dirty", dirty);
    status.textContent = dirty ? "Unsaved changes" : "";
    save.disabled = !dirty || tc.isGone();
    revert.disabled = !dirty;
    return dirty;
  }
  form.addEventListener("input", () => markDirty());
  form.addEventListener("change", () => markDirty());
  revert.addEventListener("click", () => fill(base));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (tc.isGone()) return;
    errors.clear();
    formError.replaceChildren();
    const { problems, body } = collect();
    if (problems.length) {
      for (const [key, message] of problems) errors.set(key, [message]);
      errors.slots.get(problems[0][0]).control.focus();
      return;
    }
    save.disabled = true;
    status.textContent = "Saving…";
    try {
      const agent = await patch(path`/v1/agents/${tc.name}`, body);
      tc.setAgent(agent);
      fill(agent);
      toast("Settings saved", "ok");
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) { tc.gone(); return; }
      if (e instanceof ApiError && e.status === 401) return;
      const rest = errors.show(errorList(e), route);
      if (rest.length) {
        formError.replaceChildren(h("div.error-box", h("strong", "Not saved: "), h("ul", rest.map((m) => h("li", m)))));
      }
      status.textContent = "Not saved: the daemon refused it (see the marked fields)";
      save.disabled = false;
    }
  });

  fill(base);
  return {
    onAgent(agent) {
      // Changed by someone else: take it if nothing is being edited, else say so.
      if (!markDirty()) { fill(agent); return; }
      notice.replaceChildren(h("span.warn-text", "Changed elsewhere ", when(agent.updated_at), "; saving replaces that. "),
        h("button.linkish", { type: "button", onclick: () => fill(agent) }, "Load the new version"));
    },
    onGone() { save.disabled = true; },
  };
}

// What the form makes of stored settings (for the unsaved-changes check): the same keys
// with empty editors left out.
function normalised(settings) {
  const out = Object.fromEntries(Object.entries(settings).filter(([k]) => !OWN.has(k)));
  for (const [key] of FIELDS) if (settings[key] !== undefined && settings[key] !== "") out[key] = settings[key];
  for (const [key] of EDITORS) if (settings[key] !== undefined) out[key] = settings[key];
  return out;
}

// A 422's field -> the form's slot.
function route(field) {
  if (/^body\.model\b/.test(field)) return "model";
  if (/^body\.instructions\b/.test(field)) return "instructions";
  if (/^body\.tools\b/.test(field)) return "tools";
  const m = /^body\.settings\.([A-Za-z0-9_]+)/.exec(field);
  if (m) return OWN.has(m[1]) ? m[1] : "other";
  if (field === "body.settings") return "other";
  return null;
}
