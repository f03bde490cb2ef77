// Pieces the Access pages (audit, tokens, tenants) share: names on one line, the API's
// refusals as field errors, a number field, and the box that shows a token's text once.

import { ApiError, token } from "../api.js";
import { h, toast, visible } from "../ui.js";

// A name, actor or resource on one line. visible() (every text's way onto the page)
// escapes what shows nothing but keeps newline and tab for free text; in a name they
// would show as a space or nothing ("bob\n" reads as "bob"), so they are escaped too.
export function oneLine(text) {
  return String(text === null || text === undefined ? "" : text)
    .replace(/\n/g, "\\n").replace(/\t/g, "\\t");
}

// The API's refusal as [{field, message}]: a 422's details.errors, a 403's details.field
// (the role, tenant or agents of a token beyond the maker's rights), a conflict on a name
// (`conflicts`: {code: field}); else one entry without a field, for the form's own box.
export function refusalList(error, conflicts = {}) {
  if (!(error instanceof ApiError)) return [{ field: "", message: String(error && error.message || error) }];
  const listed = Array.isArray(error.details.errors) ? error.details.errors.filter((e) => e && e.field) : [];
  if (listed.length) return listed;
  if (typeof error.details.field === "string") return [{ field: error.details.field, message: error.message }];
  if (conflicts[error.code]) return [{ field: conflicts[error.code], message: error.message }];
  return [{ field: "", message: error.message }];
}

// A refusal's words for a box: the message and its code.
export function refusalText(error) {
  return [error && error.message ? error.message : String(error),
    error instanceof ApiError && error.code ? h("code.code", error.code) : null];
}

// A quota or other number typed as text: {ok, value} (value null when empty), or
// {ok: false, error}. Not <input type=number>: it reads a typo as empty, and an empty
// quota field means "no limit"; the daemon judges the number itself (its range, an
// integer) and its 422 goes beside the field.
const NUMBER = /^-?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
export function readNumber(input) {
  const text = input.value.trim();
  if (!text) return { ok: true, value: null };
  if (!NUMBER.test(text)) return { ok: false, error: "Give a number, or leave it empty for no limit." };
  return { ok: true, value: Number(text) };
}

// Whether the console is signed in with the named token whose prefix is `prefix`
// (agd_<id>): its text is agd_<id>_<secret>.
export function isMine(prefix) {
  const mine = token.get() || "";
  return Boolean(prefix) && mine.startsWith(prefix + "_");
}

// A token's text, shown once: a read-only field with Copy and a "shown once" note.
// The text lives in this field only (not in storage, the address or any variable the
// page keeps); Done empties and removes it, and so does leaving the page.
export function shownOnce({ name, verb, text, onDone }) {
  const field = h("input#token-once.once-text", { type: "text", readonly: true, autocomplete: "off",
    spellcheck: "false", "aria-label": visible(`The text of token ${oneLine(name)}`), "aria-describedby": "token-once-note" });
  field.value = text;
  const copy = h("button", { type: "button" }, "Copy");
  const done = h("button.primary", { type: "button" }, "Done");
  const box = h("div.once-box", { role: "status", dataset: { token: name } },
    h("h3", `Token `, h("code", oneLine(name)), ` ${verb}`),
    h("p.once-note#token-once-note", h("strong", "Shown once. "),
      "Copy it now: the daemon keeps only a hash of it, and this page forgets it when you press Done or leave. ",
      "Lost, it cannot be shown again: rotate the token for a new text."),
    h("div.row.once-row", field, copy),
    h("div.row.form-actions", done));
  copy.addEventListener("click", async () => {
    field.focus();
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
      toast("Copied the token", "ok");
    } catch {
      // (no clipboard permission) The text is selected: the system's copy takes it.
      toast("Selected: copy it with your system's copy key", "info");
    }
  });
  done.addEventListener("click", () => {
    field.value = "";
    box.remove();
    if (onDone) onDone();
  });
  return { el: box, focus() { field.focus(); field.select(); } };
}
