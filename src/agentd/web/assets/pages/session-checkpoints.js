// The session's checkpoints: the list (live: a `checkpoint` event reloads it), a form
// to take one now, and restore / fork for each.

import { ApiError, get, path, post } from "../api.js";
import { clear, h, pill, timeEl, visible } from "../ui.js";

// checkpointsPanel({agent, key, restore(target, label), fork(target)}) -> {el, reload()}
export function checkpointsPanel({ agent, key, restore, fork }) {
  const list = h("div.cp-list");
  const name = h("input#cp-name", { type: "text", name: "checkpoint", placeholder: "name (optional)",
    maxlength: "64", autocomplete: "off", "aria-describedby": "cp-error" });
  const error = h("p.field-error#cp-error", { role: "alert", hidden: true });
  const create = h("button.primary", { type: "submit" }, "Checkpoint now");
  const form = h("form.cp-form", { novalidate: true },
    h("label", { for: "cp-name" }, "New checkpoint"),
    h("div.row", name, create), error);
  let exists = true;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    name.removeAttribute("aria-invalid");
    create.disabled = true;
    try {
      const value = name.value.trim();
      await post(path`/v1/agents/${agent}/sessions/${key}/checkpoints`, value ? { name: value } : {});
      name.value = "";
      await reload();
    } catch (e) {
      error.hidden = false;
      error.textContent = visible(e.message);
      if (e instanceof ApiError && e.status === 422) name.setAttribute("aria-invalid", "true");
    } finally {
      create.disabled = false;
    }
  });

  async function reload() {
    if (!exists) return;
    let found;
    try {
      found = (await get(path`/v1/agents/${agent}/sessions/${key}/checkpoints`)).checkpoints;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) { clear(list).append(h("p.empty", "No checkpoints: the session does not exist yet.")); return; }
      clear(list).append(h("p.field-error", `Checkpoints could not be read: ${e.message}`));
      return;
    }
    clear(list);
    if (!found.length) { list.append(h("p.empty", "No checkpoints yet.")); return; }
    list.append(h("ul.cps", [...found].reverse().map((c) => h("li.cp", { dataset: { id: c.id, seq: String(c.seq) } },
      h("div.cp-head", h("strong", c.name || `#${c.seq}`), pill("info", c.kind), h("span.muted", ` at #${c.seq} · `), timeEl(c.created_at)),
      h("div.cp-actions",
        h("button.small", { type: "button", onclick: () => restore({ checkpoint: c.id }, c.name || `#${c.seq}`) }, "Restore"),
        h("button.small", { type: "button", onclick: () => fork({ checkpoint: c.id }) }, "Fork"))))));
  }

  return {
    el: h("div.cp-panel", form, list),
    reload,
    setExists(value) { exists = value; form.hidden = !value; },
  };
}
