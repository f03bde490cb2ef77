// The Memory tab's long-term memory entries: newest first a page at a time, a search
// (POST .../memory/search, with each result's score), a form for a new entry, and Edit /
// Delete per entry. An edit is sent with the entry's version, so a change made elsewhere
// meanwhile is refused (409 entry_changed) rather than overwritten. What the agent wrote
// is shown as text.

import { ApiError, del, get, patch, path, post } from "../api.js";
import { errorBox, fmtInt, h, toast, visible } from "../ui.js";
import { FieldErrors, confirmDialog, disclosure, errorList, when } from "./agent-shared.js";

const ENTRY_CLIP = 600;
const SEARCH_LIMIT = 50;

// "a, b ,, c" -> ["a", "b", "c"]
function tagList(text) {
  return text.split(",").map((t) => t.trim()).filter(Boolean);
}

function clip(text, n) {
  return text.length > n ? text.slice(0, n) + "…" : text;
}

// A 422's field ("body.tags.2", "body.content") -> the form's slot key.
function routeField(f) {
  return /^body\.content/.test(f) ? "content" : /^body\.tags/.test(f) ? "tags"
    : /^body\.namespace/.test(f) ? "namespace" : null;
}

export function entriesSection(tc, refused) {
  const entriesBox = h("div.entries", { "aria-live": "polite" });
  const more = h("button", { type: "button", hidden: true }, "Older entries");
  const entryCount = h("span.list-count", { role: "status" });
  const addToggle = h("button", { type: "button", "aria-expanded": "false", "aria-controls": "new-entry-slot" },
    "New entry");
  const addSlot = h("div#new-entry-slot", { hidden: true });
  const query = h("input#entry-search", { type: "search", placeholder: "Search memory by words and meaning",
    "aria-label": "Search memory entries", autocomplete: "off", maxlength: "10000" });
  const searchBtn = h("button", { type: "submit" }, "Search");
  const back = h("button", { type: "button", hidden: true }, "Back to the list");
  const searchErrors = new FieldErrors("entry-search");
  const searchForm = h("form.list-filters.entry-search", { novalidate: true, role: "search",
    "aria-label": "Memory search" }, query, searchBtn, back);
  const section = h("section.panel", { "aria-labelledby": "entries-title" },
    h("div.list-toolbar", h("h2#entries-title", "Memory entries"), searchForm, entryCount,
      h("div.actions", addToggle)),
    searchErrors.slot("query", query),
    h("p.hint", "Long-term memory, newest first; searched by words and meaning when the agent recalls."),
    addSlot, entriesBox, more);

  const namespaces = () => {
    const a = tc.agent && tc.agent();
    const m = a && a.settings && a.settings.memory;
    return (m && Array.isArray(m.namespaces)) ? m.namespaces : [];
  };

  // -- one entry ------------------------------------------------------------------------------
  function entryItem(e, score) {
    const long = e.content.length > ENTRY_CLIP;
    const text = h("p.entry-content", long ? clip(e.content, ENTRY_CLIP) : e.content);
    const toggle = long ? h("button.linkish", { type: "button", "aria-expanded": "false" }, "Show all") : null;
    if (toggle) {
      toggle.addEventListener("click", () => {
        const open = toggle.getAttribute("aria-expanded") !== "true";
        text.textContent = visible(open ? e.content : clip(e.content, ENTRY_CLIP));
        toggle.setAttribute("aria-expanded", String(open));
        toggle.textContent = open ? "Show less" : "Show all";
      });
    }
    const edit = h("button.linkish", { type: "button", disabled: tc.isGone() }, "Edit");
    const remove = h("button.linkish", { type: "button", disabled: tc.isGone() }, "Delete");
    const item = h("li.entry", { dataset: { entry: e.id } },
      text, toggle,
      h("div.entry-meta",
        score === undefined ? null
          : h("span.pill.entry-score", { title: "Search score, 0 to 1" }, `score ${Number(score).toFixed(3)}`),
        e.namespace ? h("span.pill", `namespace ${e.namespace}`) : null,
        (e.tags || []).map((t) => h("span.pill.tag", t)),
        e.tainted ? h("span.pill.pill-ask", { title: e.tainted_reason || "" }, "tainted") : null,
        h("span.muted", when(e.created_at)),
        h("span.muted", ` · v${e.version}`),
        e.source && e.source.session ? h("span.muted", " · from ",
          h("a", { href: tc.ctx.sessionHref(tc.name, e.source.session) }, e.source.session)) : null,
        h("span.actions", edit, " · ", remove)));
    edit.addEventListener("click", () => editEntry(item, e, score));
    remove.addEventListener("click", () => deleteEntry(item, e, remove));
    return item;
  }

  function editEntry(item, e, score) {
    const prefix = `entry-${e.id}`.replace(/[^A-Za-z0-9_-]/g, "_");
    const errors = new FieldErrors(prefix);
    let base = e.version;
    const content = h("textarea.block-edit", { id: `${prefix}-content`,
      rows: String(Math.min(16, Math.max(3, e.content.split("\n").length + 1))) });
    content.value = e.content;
    const tags = h("input", { id: `${prefix}-tags`, autocomplete: "off", spellcheck: "false" });
    tags.value = (e.tags || []).join(", ");
    const formError = h("div.form-error", { role: "alert" });
    const save = h("button.primary", { type: "submit" }, "Save entry");
    const cancel = h("button", { type: "button" }, "Cancel");
    const form = h("form.entry-form", { novalidate: true, "aria-label": "Edit memory entry" },
      h("div.field", h("label", { for: `${prefix}-content` }, "Content"), content, errors.slot("content", content)),
      h("div.field", h("label", { for: `${prefix}-tags` }, "Tags (comma-separated)"), tags, errors.slot("tags", tags)),
      formError,
      h("div.row.form-actions", save, cancel));
    const restore = () => { item.replaceWith(entryItem(e, score)); };
    cancel.addEventListener("click", restore);
    form.addEventListener("keydown", (ev) => { if (ev.key === "Escape") { ev.preventDefault(); restore(); } });
    item.replaceChildren(form);
    content.focus();
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      errors.clear();
      formError.replaceChildren();
      const body = { version: base };
      if (content.value !== e.content) body.content = content.value;
      const newTags = tagList(tags.value);
      if (newTags.join("\n") !== (e.tags || []).join("\n")) body.tags = newTags;
      if (!content.value.trim()) { errors.set("content", ["Give the entry some content."]); content.focus(); return; }
      if (Object.keys(body).length === 1) { restore(); return; }
      save.disabled = true;
      try {
        const changed = await patch(path`/v1/agents/${tc.name}/memory/entries/${e.id}`, body);
        item.replaceWith(entryItem(changed, score));
        toast("Entry saved", "ok");
      } catch (err) {
        save.disabled = false;
        if (refused(err, tc)) return;
        if (err instanceof ApiError && err.code === "entry_changed") {
          // Someone else (the agent, another operator) wrote it since the form opened:
          // show what it holds now; what was typed stays, and a second Save replaces it.
          let now = null;
          try { now = await get(path`/v1/agents/${tc.name}/memory/entries/${e.id}`); } catch { now = null; }
          const parts = [h("strong", "Changed elsewhere since you opened it. "), err.message];
          if (now) {
            base = now.version;
            parts.push(h("p", `It now holds (v${now.version}): `, h("q", clip(now.content, 300))),
              h("p", "Your edit is kept below; Save again to replace it."));
          }
          formError.replaceChildren(h("div.error-box", { dataset: { code: err.code } }, parts));
          content.focus();
          return;
        }
        if (err instanceof ApiError && err.code === "entry_duplicate") {
          const existing = err.details && err.details.existing;
          errors.set("content", [`${err.message}${existing && typeof existing === "string" ? ` (${existing})` : ""}`]);
          content.focus();
          return;
        }
        if (err instanceof ApiError && err.code === "entry_not_found") {
          formError.replaceChildren(h("div.error-box", "This entry was deleted meanwhile; copy your text if you need it."));
          return;
        }
        const rest = errors.show(errorList(err), routeField);
        if (rest.length) formError.replaceChildren(h("div.error-box", rest.join("; ")));
      }
    });
  }

  async function deleteEntry(item, e, button) {
    const yes = await confirmDialog({ title: "Delete this memory entry?",
      body: `"${clip(e.content, 120)}" is forgotten: the agent can no longer recall it. This cannot be undone.`,
      confirm: "Delete entry" });
    if (!yes) { button.focus(); return; }
    try {
      await del(path`/v1/agents/${tc.name}/memory/entries/${e.id}`);
      toast("Entry deleted", "ok");
    } catch (err) {
      if (!(err instanceof ApiError && err.code === "entry_not_found")) {
        if (!refused(err, tc)) toast(`Could not delete the entry: ${err.message}`, "error");
        return;
      }
    }
    const list = item.parentElement;
    const next = item.nextElementSibling || item.previousElementSibling;
    item.remove();
    // Keep the keyboard where it was: the neighbour's Edit, else the New entry button.
    const target = next && next.querySelector(".entry-meta .actions button");
    (target || addToggle).focus();
    shown = Math.max(0, shown - 1);
    if (list && !list.children.length) {
      if (searching) entriesBox.replaceChildren(h("p.empty", "No entry matches."));
      else loadEntries(null);
    } else {
      showCount();
    }
  }

  // -- the new-entry form -----------------------------------------------------------------------
  function addForm() {
    const errors = new FieldErrors("new-entry");
    const content = h("textarea#new-entry-content", { rows: "4" });
    const tags = h("input#new-entry-tags", { autocomplete: "off", spellcheck: "false", placeholder: "pref, travel" });
    const spaces = namespaces();
    const namespace = spaces.length
      ? h("select#new-entry-namespace", h("option", { value: "" }, "The agent's own"),
        spaces.map((n) => h("option", { value: n }, n)))
      : null;
    const save = h("button.primary", { type: "submit" }, "Add entry");
    const cancel = h("button", { type: "button" }, "Cancel");
    const formError = h("div.form-error", { role: "alert" });
    const form = h("form.panel.inner.new-entry", { novalidate: true, "aria-label": "New memory entry" },
      h("div.field", h("label", { for: "new-entry-content" }, "Content"), content, errors.slot("content", content)),
      h("div.form-grid",
        h("div.field", h("label", { for: "new-entry-tags" }, "Tags (comma-separated)"), tags, errors.slot("tags", tags)),
        namespace ? h("div.field", h("label", { for: "new-entry-namespace" }, "Namespace"), namespace,
          errors.slot("namespace", namespace)) : null),
      formError, h("div.row.form-actions", save, cancel));
    cancel.addEventListener("click", () => { showAdd(false); addToggle.focus(); });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      errors.clear();
      formError.replaceChildren();
      if (!content.value.trim()) { errors.set("content", ["Write what the agent should remember."]); content.focus(); return; }
      const body = { content: content.value, tags: tagList(tags.value) };
      if (namespace && namespace.value) body.namespace = namespace.value;
      save.disabled = true;
      try {
        const written = await post(path`/v1/agents/${tc.name}/memory/entries`, body);
        save.disabled = false;
        if (written && written.created === false) {
          errors.set("content", ["The agent remembers this already (the same words): nothing was added."]);
          content.focus();
          return;
        }
        toast("Entry added", "ok");
        showAdd(false);
        addToggle.focus();
        leaveSearch();
        await loadEntries(null);
      } catch (err) {
        save.disabled = false;
        if (refused(err, tc)) return;
        if (err instanceof ApiError && err.code === "namespace_not_allowed" && namespace) {
          errors.set("namespace", [err.message]);
          namespace.focus();
          return;
        }
        const rest = errors.show(errorList(err), routeField);
        if (rest.length) formError.replaceChildren(h("div.error-box", rest.join("; ")));
      }
    });
    return { el: form, focus: () => content.focus() };
  }
  const showAdd = disclosure(addToggle, addSlot, addForm);

  // -- the list and the search ------------------------------------------------------------------
  let before = null;
  let shown = 0;
  let searching = false;
  let seq = 0; // an older answer (a list page, a previous search) is dropped
  function showCount() {
    entryCount.textContent = searching ? `${fmtInt(shown)} result${shown === 1 ? "" : "s"}`
      : shown ? `${fmtInt(shown)} shown` : "";
  }
  async function loadEntries(next) {
    const mine = ++seq;
    try {
      const body = await get(path`/v1/agents/${tc.name}/memory/entries`, { query: { limit: 50, before: next || undefined } });
      if (mine !== seq) return;
      const items = body.entries.map((e) => entryItem(e));
      if (!next) {
        shown = 0;
        entriesBox.replaceChildren(items.length ? h("ul.entry-list", items)
          : h("p.empty", "No memory entries yet: the agent writes them with its remember tool, or consolidation does."));
      } else {
        entriesBox.querySelector("ul.entry-list").append(...items);
      }
      shown += items.length;
      showCount();
      before = body.next_before;
      more.hidden = !before;
    } catch (e) {
      if (mine === seq && !refused(e, tc)) entriesBox.replaceChildren(errorBox(e, "Could not read the memory entries"));
    }
  }
  more.addEventListener("click", () => loadEntries(before));

  function leaveSearch() {
    searching = false;
    back.hidden = true;
    searchErrors.clear();
  }
  async function search() {
    searchErrors.clear();
    const q = query.value.trim();
    if (!q) { searchErrors.set("query", ["Type what to look for."]); query.focus(); return; }
    const mine = ++seq;
    searchBtn.disabled = true;
    try {
      const body = await post(path`/v1/agents/${tc.name}/memory/search`, { query: q, limit: SEARCH_LIMIT });
      if (mine !== seq) return;
      searching = true;
      back.hidden = false;
      more.hidden = true;
      const items = body.results.map((r) => entryItem(r, r.score));
      shown = items.length;
      entriesBox.replaceChildren(items.length ? h("ul.entry-list.search-results", items)
        : h("p.empty", "No entry matches."));
      showCount();
    } catch (err) {
      if (mine !== seq || refused(err, tc)) return;
      const list = errorList(err);
      searchErrors.set("query", list.map((x) => x.message));
    } finally {
      searchBtn.disabled = false;
    }
  }
  searchForm.addEventListener("submit", (ev) => { ev.preventDefault(); search(); });
  back.addEventListener("click", () => {
    query.value = "";
    leaveSearch();
    loadEntries(null);
    query.focus();
  });
  query.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && searching) { ev.preventDefault(); back.click(); }
  });

  return { el: section, load: () => loadEntries(null) };
}
