// The agent page's Memory tab: core memory blocks (read, edit, add, delete; each one's
// versions with Restore) and long-term memory entries (agent-memory-entries.js). What the
// agent wrote is shown as text. A read-only block binds the agent's tools only: the
// operator edits, restores and deletes it here like any other.

import { ApiError, del, get, patch, path, post, put } from "../api.js";
import { errorBox, fmtInt, h, pill, toast } from "../ui.js";
import { FieldErrors, confirmDialog, disclosure, errorList, when } from "./agent-shared.js";
import { entriesSection } from "./agent-memory-entries.js";

function refused(e, tc) {
  if (e instanceof ApiError && e.status === 404 && e.code === "agent_not_found") { tc.gone(); return true; }
  return e instanceof ApiError && e.status === 401;
}

export function memoryTab(panel, tc) {
  const blocksBox = h("div.blocks");
  const addToggle = h("button", { type: "button", "aria-expanded": "false" }, "New block");
  const addSlot = h("div", { hidden: true });
  const entries = entriesSection(tc, refused);
  panel.append(
    h("section.panel", { "aria-labelledby": "blocks-title" },
      h("div.list-toolbar", h("h2#blocks-title", "Memory blocks"), h("div.actions", addToggle)),
      h("p.hint", "Rendered into every run's instructions; the agent edits them with its memory tools."),
      addSlot, blocksBox),
    entries.el);

  // -- blocks ---------------------------------------------------------------------------------
  function blockCard(b) {
    const value = h("pre.block-value", b.value || h("span.muted", "(empty)"));
    const edit = h("button", { type: "button", disabled: tc.isGone() }, "Edit");
    const historySlot = h("div.block-history", { id: `block-${b.label}-history`.replace(/[^A-Za-z0-9_-]/g, "_"), hidden: true });
    const history = h("button", { type: "button", "aria-expanded": "false", "aria-controls": historySlot.id }, "History");
    const remove = h("button.danger", { type: "button", disabled: tc.isGone() }, "Delete");
    const card = h("article.block", { dataset: { block: b.label } },
      h("header.block-head",
        h("code.block-label", b.label),
        b.read_only ? pill("paused", "read-only for the agent") : null,
        h("span.muted", `${fmtInt(b.chars)} / ${fmtInt(b.limit)} chars · v${b.version} · `, when(b.updated_at)),
        h("div.actions", edit, " ", history, " ", remove)),
      b.description ? h("p.hint", b.description) : null,
      value, historySlot);
    edit.addEventListener("click", () => editBlock(card, b));
    history.addEventListener("click", () => {
      const open = history.getAttribute("aria-expanded") !== "true";
      history.setAttribute("aria-expanded", String(open));
      historySlot.hidden = !open;
      if (open) showHistory(card, b, historySlot);
      else historySlot.replaceChildren();
    });
    remove.addEventListener("click", () => deleteBlock(card, b, remove));
    return card;
  }
  function replaceBlock(card, changed) {
    blocks = blocks.map((x) => (x.label === changed.label ? changed : x));
    const fresh = blockCard(changed);
    card.replaceWith(fresh);
    return fresh;
  }
  // Its versions, newest first: who wrote each (api:<token>, run:<id>, import) and when,
  // with its value; Restore makes an older one current again (as a new version).
  async function showHistory(card, b, slot) {
    slot.replaceChildren(h("p.muted", "Reading the history…"));
    let versions;
    try {
      versions = (await get(path`/v1/agents/${tc.name}/memory/blocks/${b.label}/history`)).versions;
    } catch (e) {
      if (!refused(e, tc)) slot.replaceChildren(errorBox(e, "Could not read the history"));
      return;
    }
    versions = [...versions].sort((x, y) => y.version - x.version);
    const items = versions.map((v) => {
      const current = v.version === b.version;
      const restore = current ? null
        : h("button", { type: "button", disabled: tc.isGone(), "aria-label": `Restore version ${v.version} of ${b.label}` },
          "Restore");
      const li = h("li.block-version", { dataset: { version: String(v.version) } },
        h("div.entry-meta",
          h("strong", `v${v.version}`),
          current ? h("span.pill", "current") : null,
          h("span.muted", when(v.at)),
          v.changed_by ? h("span.muted", " · by ", h("code", v.changed_by)) : null,
          v.read_only ? h("span.pill", "read-only") : null,
          h("span.muted", ` · ${fmtInt((v.value || "").length)} / ${fmtInt(v.limit)} chars`),
          restore ? h("span.actions", restore) : null),
        h("pre.block-value", v.value || h("span.muted", "(empty)")));
      if (restore) restore.addEventListener("click", () => restoreVersion(card, b, v, restore));
      return li;
    });
    slot.replaceChildren(h("h3", `History of ${b.label}`),
      items.length ? h("ol.entry-list", { "aria-label": `Versions of ${b.label}` }, items) : h("p.empty", "No versions."));
  }
  async function restoreVersion(card, b, v, button) {
    const yes = await confirmDialog({ title: `Restore ${b.label} to v${v.version}?`,
      body: `Its value becomes that version's again (${fmtInt((v.value || "").length)} chars), saved as a new version; `
        + `the current value (v${b.version}) stays in the history.`,
      confirm: "Restore", danger: false });
    if (!yes) { button.focus(); return; }
    button.disabled = true;
    try {
      const restored = await post(path`/v1/agents/${tc.name}/memory/blocks/${b.label}/restore`, { version: v.version });
      const fresh = replaceBlock(card, restored);
      toast(`Restored ${b.label} to v${v.version} (now v${restored.version})`, "ok");
      const again = fresh.querySelector("button[aria-controls]");
      if (again) again.focus();
    } catch (e) {
      button.disabled = false;
      if (!refused(e, tc)) toast(`Could not restore ${b.label}: ${e.message}`, "error");
    }
  }
  async function deleteBlock(card, b, button) {
    const yes = await confirmDialog({ title: `Delete the block ${b.label}?`,
      body: "It leaves this agent's instructions. Its history goes with it unless another agent shares the block. "
        + "This cannot be undone.",
      confirm: "Delete block" });
    if (!yes) { button.focus(); return; }
    try {
      await del(path`/v1/agents/${tc.name}/memory/blocks/${b.label}`);
      toast(`Deleted ${b.label}`, "ok");
    } catch (e) {
      // Deleted meanwhile (by another client, the agent): gone all the same.
      if (!(e instanceof ApiError && e.code === "block_not_found")) {
        if (!refused(e, tc)) toast(`Could not delete ${b.label}: ${e.message}`, "error");
        return;
      }
    }
    await loadBlocks();
    addToggle.focus();
  }
  function editBlock(card, b) {
    const errors = new FieldErrors(`block-${b.label}`);
    const area = h("textarea.block-edit", { rows: String(Math.min(20, Math.max(4, (b.value || "").split("\n").length + 1))),
      "aria-label": `Value of ${b.label}` });
    area.value = b.value || "";
    const counter = h("span.hint");
    const count = () => {
      counter.textContent = `${fmtInt(area.value.length)} / ${fmtInt(b.limit)}`;
      counter.classList.toggle("over", area.value.length > b.limit);
    };
    area.addEventListener("input", count);
    count();
    const save = h("button.primary", { type: "submit" }, "Save block");
    const cancel = h("button", { type: "button" }, "Cancel");
    const form = h("form.block-form", { novalidate: true }, area, errors.slot("value", area),
      h("div.row.form-actions", save, cancel, counter));
    const pre = card.querySelector("pre.block-value");
    pre.replaceWith(form);
    area.focus();
    cancel.addEventListener("click", () => card.replaceWith(blockCard(b)));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      errors.clear();
      save.disabled = true;
      try {
        const changed = await patch(path`/v1/agents/${tc.name}/memory/blocks/${b.label}`, { value: area.value });
        replaceBlock(card, changed);
        toast(`Saved ${b.label}`, "ok");
      } catch (err) {
        save.disabled = false;
        if (refused(err, tc)) return;
        const list = errorList(err).map((x) => (err.code === "block_over_limit"
          ? { message: `${err.message} (limit ${fmtInt(err.details.limit)}, ${fmtInt(err.details.size)} given)` } : x));
        errors.set("value", list.map((x) => x.message));
      }
    });
  }
  function addForm() {
    const errors = new FieldErrors("new-block");
    const label = h("input#new-block-label", { maxlength: "64", autocomplete: "off", spellcheck: "false", placeholder: "persona" });
    const description = h("input#new-block-description", { autocomplete: "off", placeholder: "What it holds" });
    const value = h("textarea#new-block-value", { rows: "4" });
    const save = h("button.primary", { type: "submit" }, "Add block");
    const formError = h("div.form-error", { role: "alert" });
    const form = h("form.panel.inner.new-block", { novalidate: true, "aria-label": "New memory block" },
      h("div.form-grid",
        h("div.field", h("label", { for: "new-block-label" }, "Label"), label, errors.slot("label", label)),
        h("div.field", h("label", { for: "new-block-description" }, "Description"), description,
          errors.slot("description", description))),
      h("div.field", h("label", { for: "new-block-value" }, "Value"), value, errors.slot("value", value)),
      formError, h("div.row.form-actions", save));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      errors.clear();
      formError.replaceChildren();
      const l = label.value.trim();
      if (!l) { errors.set("label", ["Give the block a label."]); label.focus(); return; }
      if (blocks.some((b) => b.label === l)) { errors.set("label", ["The agent has a block of that label: edit it below."]); label.focus(); return; }
      save.disabled = true;
      try {
        await put(path`/v1/agents/${tc.name}/memory/blocks/${l}`, { value: value.value, description: description.value });
        toast(`Added ${l}`, "ok");
        showAdd(false);
        await loadBlocks();
      } catch (err) {
        save.disabled = false;
        if (refused(err, tc)) return;
        const rest = errors.show(errorList(err), (f) => (/^body\.value/.test(f) ? "value"
          : /^body\.description/.test(f) ? "description" : /^path\.label|label/.test(f) ? "label" : null));
        if (rest.length) formError.replaceChildren(h("div.error-box", rest.join("; ")));
      }
    });
    return { el: form, focus: () => label.focus() };
  }
  const showAdd = disclosure(addToggle, addSlot, addForm);

  let blocks = [];
  async function loadBlocks() {
    try {
      blocks = (await get(path`/v1/agents/${tc.name}/memory/blocks`)).blocks;
      blocksBox.replaceChildren(...(blocks.length ? blocks.map(blockCard)
        : [h("p.empty", "No memory blocks. Add one (", h("code", "persona"), ", ", h("code", "human"), ", …) above.")]));
    } catch (e) {
      if (!refused(e, tc)) blocksBox.replaceChildren(errorBox(e, "Could not read the memory blocks"));
    }
  }

  loadBlocks();
  entries.load();
  return {};
}
