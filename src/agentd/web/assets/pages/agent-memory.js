// The agent page's Memory tab: core memory blocks (read, edit, add) and long-term memory
// entries (newest first, a page at a time). What the agent wrote is shown as text.

import { ApiError, get, patch, path, put } from "../api.js";
import { errorBox, fmtInt, h, pill, toast } from "../ui.js";
import { FieldErrors, errorList, when } from "./agent-shared.js";

const ENTRY_CLIP = 600;

function refused(e, tc) {
  if (e instanceof ApiError && e.status === 404 && e.code === "agent_not_found") { tc.gone(); return true; }
  return e instanceof ApiError && e.status === 401;
}

export function memoryTab(panel, tc) {
  const blocksBox = h("div.blocks");
  const addToggle = h("button", { type: "button", "aria-expanded": "false" }, "New block");
  const addSlot = h("div", { hidden: true });
  const entriesBox = h("div.entries");
  const more = h("button", { type: "button", hidden: true }, "Older entries");
  const entryCount = h("span.list-count");
  panel.append(
    h("section.panel", { "aria-labelledby": "blocks-title" },
      h("div.list-toolbar", h("h2#blocks-title", "Memory blocks"), h("div.actions", addToggle)),
      h("p.hint", "Rendered into every run's instructions; the agent edits them with its memory tools."),
      addSlot, blocksBox),
    h("section.panel", { "aria-labelledby": "entries-title" },
      h("div.list-toolbar", h("h2#entries-title", "Memory entries"), entryCount),
      h("p.hint", "Long-term memory, newest first; searched by words and meaning when the agent recalls."),
      entriesBox, more));

  // -- blocks ---------------------------------------------------------------------------------
  function blockCard(b) {
    const value = h("pre.block-value", b.value || h("span.muted", "(empty)"));
    const edit = h("button", { type: "button", disabled: tc.isGone() }, "Edit");
    const card = h("article.block", { dataset: { block: b.label } },
      h("header.block-head",
        h("code.block-label", b.label),
        b.read_only ? pill("paused", "read-only for the agent") : null,
        h("span.muted", `${fmtInt(b.chars)} / ${fmtInt(b.limit)} chars · v${b.version} · `, when(b.updated_at)),
        h("div.actions", edit)),
      b.description ? h("p.hint", b.description) : null,
      value);
    edit.addEventListener("click", () => editBlock(card, b));
    return card;
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
        card.replaceWith(blockCard(changed));
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
  function showAdd(open) {
    addSlot.hidden = !open;
    addToggle.setAttribute("aria-expanded", String(open));
    if (open) {
      const f = addForm();
      addSlot.replaceChildren(f.el);
      f.focus();
    } else {
      addSlot.replaceChildren();
    }
  }
  addToggle.addEventListener("click", () => showAdd(addSlot.hidden));

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

  // -- entries --------------------------------------------------------------------------------
  let before = null;
  let shown = 0;
  function entryItem(e) {
    const long = e.content.length > ENTRY_CLIP;
    const text = h("p.entry-content", long ? e.content.slice(0, ENTRY_CLIP) + "…" : e.content);
    const toggle = long ? h("button.linkish", { type: "button", "aria-expanded": "false" }, "Show all") : null;
    if (toggle) {
      toggle.addEventListener("click", () => {
        const open = toggle.getAttribute("aria-expanded") !== "true";
        text.textContent = open ? e.content : e.content.slice(0, ENTRY_CLIP) + "…";
        toggle.setAttribute("aria-expanded", String(open));
        toggle.textContent = open ? "Show less" : "Show all";
      });
    }
    return h("li.entry", { dataset: { entry: e.id } },
      text, toggle,
      h("div.entry-meta",
        e.namespace ? h("span.pill", `namespace ${e.namespace}`) : null,
        (e.tags || []).map((t) => h("span.pill.tag", t)),
        e.tainted ? h("span.pill.pill-ask", { title: e.tainted_reason || "" }, "tainted") : null,
        h("span.muted", when(e.created_at)),
        e.source && e.source.session ? h("span.muted", " · from ",
          h("a", { href: tc.ctx.sessionHref(tc.name, e.source.session) }, e.source.session)) : null));
  }
  async function loadEntries(next) {
    try {
      const body = await get(path`/v1/agents/${tc.name}/memory/entries`, { query: { limit: 50, before: next || undefined } });
      const items = body.entries.map(entryItem);
      if (!next) {
        shown = 0;
        entriesBox.replaceChildren(items.length ? h("ul.entry-list", items)
          : h("p.empty", "No memory entries yet: the agent writes them with its remember tool, or consolidation does."));
      } else {
        entriesBox.querySelector("ul.entry-list").append(...items);
      }
      shown += items.length;
      entryCount.textContent = shown ? `${fmtInt(shown)} shown` : "";
      before = body.next_before;
      more.hidden = !before;
    } catch (e) {
      if (!refused(e, tc)) entriesBox.replaceChildren(errorBox(e, "Could not read the memory entries"));
    }
  }
  more.addEventListener("click", () => loadEntries(before));

  loadBlocks();
  loadEntries(null);
  return {};
}
