// The "New agent" form (on the overview) and the tool picker it shares with the agent's
// settings. The API checks everything; its 422 names each field, shown beside it.

import { ApiError, get, post } from "../api.js";
import { h, toast } from "../ui.js";
import { FieldErrors, errorList } from "./agent-shared.js";

let toolsPromise = null;
// The daemon's tools (GET /v1/tools), asked once per page load.
export function daemonTools() {
  if (!toolsPromise) {
    toolsPromise = get("/v1/tools").then((b) => b.tools).catch((e) => { toolsPromise = null; throw e; });
  }
  return toolsPromise;
}

// Checkboxes for the daemon's tools, the selected ones ticked; a tool the agent names that
// the daemon does not have (any more) is listed too, so saving does not drop it silently.
export function toolPicker(selected, { id, label = "Tools" }) {
  const box = h("div.tool-grid", { role: "group", "aria-labelledby": `${id}-label` });
  const filter = h("input.tool-filter", { type: "search", placeholder: "Filter tools",
    "aria-label": "Filter the tools", autocomplete: "off" });
  const chosen = h("span.tool-chosen");
  const el = h("fieldset.tools", { id },
    h("legend", { id: `${id}-label` }, label, " ", chosen), filter, box);
  const wanted = new Set(selected);
  const count = () => { chosen.textContent = `(${wanted.size} chosen)`; };
  const changed = (event) => {
    if (event.target.checked) wanted.add(event.target.value);
    else wanted.delete(event.target.value);
    count();
  };
  // loaded: the daemon's list is in (before it, the agent's own tools are shown as they are).
  function draw(tools, loaded) {
    const names = new Set(tools.map((t) => t.name));
    const all = [...tools, ...[...wanted].filter((n) => !names.has(n)).map((n) => ({ name: n, missing: loaded }))];
    box.replaceChildren(...all.map((t) => h("label.tool", { title: t.missing ? "not a tool of this daemon" : t.description || "" },
      h("input", { type: "checkbox", name: "tool", value: t.name, checked: wanted.has(t.name), onchange: changed }),
      h("span.tool-name", t.name),
      t.missing ? h("span.pill.pill-error", "unknown") : null,
      t.needs_approval ? h("span.pill.pill-ask", "asks") : null)));
    count();
  }
  draw([], false);
  daemonTools().then((tools) => draw(tools, true)).catch((e) => box.append(h("p.field-error", `Could not list the tools: ${e.message}`)));
  filter.addEventListener("input", () => {
    const q = filter.value.trim().toLowerCase();
    for (const label of box.children) label.hidden = Boolean(q) && !label.textContent.toLowerCase().includes(q);
  });
  return {
    el,
    focusTarget: filter,
    value() { return [...wanted]; },
  };
}

// The form: name, model, instructions, tools. onCreated(agent) after a 201.
export function newAgentForm({ onCreated, onCancel }) {
  const errors = new FieldErrors("new-agent");
  const name = h("input#new-agent-name", { name: "name", required: true, maxlength: "64", autocomplete: "off",
    spellcheck: "false", placeholder: "support-bot", "aria-describedby": "new-agent-name-hint" });
  const model = h("input#new-agent-model", { name: "model", autocomplete: "off", spellcheck: "false",
    placeholder: "scripted (the daemon's default)", "aria-describedby": "new-agent-model-hint" });
  const instructions = h("textarea#new-agent-instructions", { name: "instructions", rows: "4",
    placeholder: "You are…" });
  const tools = toolPicker([], { id: "new-agent-tools" });
  const formError = h("div.form-error", { role: "alert" });
  const submit = h("button.primary", { type: "submit" }, "Create agent");
  const cancel = h("button", { type: "button", onclick: () => onCancel() }, "Cancel");
  const form = h("form.panel.new-agent-form", { novalidate: true, "aria-labelledby": "new-agent-title" },
    h("h2#new-agent-title", "New agent"),
    h("div.form-grid",
      h("div.field",
        h("label", { for: "new-agent-name" }, "Name"), name,
        h("p.hint#new-agent-name-hint", "Letters, digits, ", h("code", "_ - ."), "; used in URLs."),
        errors.slot("name", name)),
      h("div.field",
        h("label", { for: "new-agent-model" }, "Model"), model,
        h("p.hint#new-agent-model-hint", h("code", "provider:model"), ", e.g. ", h("code", "openai:gpt-4.1-mini")),
        errors.slot("model", model))),
    h("div.field",
      h("label", { for: "new-agent-instructions" }, "Instructions"), instructions,
      errors.slot("instructions", instructions)),
    h("div.field", tools.el, errors.slot("tools", tools.focusTarget)),
    formError,
    h("div.row.form-actions", submit, cancel));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    formError.replaceChildren();
    const body = { name: name.value.trim(), instructions: instructions.value, tools: tools.value() };
    if (model.value.trim()) body.model = model.value.trim();
    if (!body.name) { errors.set("name", ["Give the agent a name."]); name.focus(); return; }
    submit.disabled = true;
    try {
      const agent = await post("/v1/agents", body);
      toast(`Created ${agent.name}`, "ok");
      onCreated(agent);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      const list = e instanceof ApiError && e.status === 409 ? [{ field: "body.name", message: e.message }]
        : errorList(e);
      const rest = errors.show(list, (field) => {
        const m = /^body\.(name|model|instructions|tools)\b/.exec(field);
        if (m) return m[1];
        return /^body\.settings\b/.test(field) ? "model" : null;
      });
      if (rest.length) {
        formError.replaceChildren(h("div.error-box", h("strong", "The daemon refused the agent: "),
          h("ul", rest.map((m) => h("li", m)))));
      }
    } finally {
      submit.disabled = false;
    }
  });
  form.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.preventDefault(); onCancel(); } });
  return { el: form, focus() { name.focus(); } };
}
