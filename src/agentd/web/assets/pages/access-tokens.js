// Tokens (GET /v1/tokens): the tokens the signed-in token may see, never their text.
// New token (POST /v1/tokens) and Rotate (POST /v1/tokens/NAME/rotate) show the text
// they answer once, in a field of its own (access-shared.js, shownOnce); Revoke (DELETE)
// asks first. The configuration's tokens are the operator's: listed, read-only.

import { ApiError, del, get, path, post, token } from "../api.js";
import { errorBox, h, pill, toast } from "../ui.js";
import { FieldErrors, confirmDialog, disclosure, when } from "./agent-shared.js";
import { isMine, oneLine, refusalList, refusalText, shownOnce } from "./access-shared.js";

const ROLES = ["viewer", "member", "operator", "admin"];

function scopeText(t) {
  if (t.tenant && t.agents) return ["tenant ", h("code", oneLine(t.tenant)), ", agents ", patterns(t.agents)];
  if (t.tenant) return ["tenant ", h("code", oneLine(t.tenant))];
  if (t.agents) return ["agents ", patterns(t.agents)];
  if (t.scope) return oneLine(t.scope);
  return h("span.muted", "every agent");
}
function patterns(list) {
  return h("span.patterns", list.map((p) => h("code", oneLine(p))));
}

function tokenForm(tenants, { onCreated, onCancel }) {
  const errors = new FieldErrors("token");
  const name = h("input#token-name", { name: "name", maxlength: "64", autocomplete: "off", spellcheck: "false",
    placeholder: "ci-deploy", "aria-describedby": "token-name-hint" });
  const role = h("select#token-role", { name: "role" },
    ROLES.map((r) => h("option", { value: r, selected: r === "member" }, r)));
  const tenant = h("input#token-tenant", { name: "tenant", maxlength: "64", autocomplete: "off", spellcheck: "false",
    list: "token-tenants", placeholder: "none", "aria-describedby": "token-tenant-hint" });
  const choices = h("datalist#token-tenants", tenants.map((t) => h("option", { value: t })));
  const agents = h("textarea#token-agents", { name: "agents", rows: "3", spellcheck: "false",
    placeholder: "support-*", "aria-describedby": "token-agents-hint" });
  const expires = h("input#token-expires", { type: "datetime-local", name: "expires_at", step: "1",
    "aria-describedby": "token-expires-hint" });
  const formError = h("div.form-error", { role: "alert" });
  const submit = h("button.primary", { type: "submit" }, "Create token");
  const form = h("form.panel.inner.token-form", { novalidate: true, "aria-labelledby": "token-form-title" },
    h("h3#token-form-title", "New token"),
    h("div.form-grid",
      h("div.field", h("label", { for: "token-name" }, "Name"), name,
        h("p.hint#token-name-hint", "Letters, digits, ", h("code", "_ . @ -"), ": how lists and the audit log name it."),
        errors.slot("name", name)),
      h("div.field", h("label", { for: "token-role" }, "Role"), role, errors.slot("role", role)),
      h("div.field", h("label", { for: "token-tenant" }, "Tenant"), tenant, choices,
        h("p.hint#token-tenant-hint", "Optional: it uses that tenant's agents only."), errors.slot("tenant", tenant)),
      h("div.field", h("label", { for: "token-expires" }, "Expires"), expires,
        h("p.hint#token-expires-hint", "Optional, in your local time."), errors.slot("expires_at", expires))),
    h("div.field", h("label", { for: "token-agents" }, "Agent patterns"), agents,
      h("p.hint#token-agents-hint", "Optional, one per line (", h("code", "support-*"), "): the agents it may use."),
      errors.slot("agents", agents)),
    formError,
    h("div.row.form-actions", submit, h("button", { type: "button", onclick: () => onCancel() }, "Cancel")));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    formError.replaceChildren();
    const body = { name: name.value.trim(), role: role.value };
    if (!body.name) { errors.set("name", ["Give the token a name."]); name.focus(); return; }
    if (tenant.value.trim()) body.tenant = tenant.value.trim();
    const lines = agents.value.split("\n").map((l) => l.trim()).filter(Boolean);
    if (lines.length) body.agents = lines;
    if (expires.validity.badInput) { errors.set("expires_at", ["Give a date and time, or none."]); expires.focus(); return; }
    if (expires.value) {
      const at = new Date(expires.value);  // a datetime-local is read in the browser's zone
      if (Number.isNaN(at.getTime())) { errors.set("expires_at", ["Give a date and time, or none."]); return; }
      body.expires_at = at.toISOString();
    }
    submit.disabled = true;
    try {
      const made = await post("/v1/tokens", body);
      onCreated(made);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      const rest = errors.show(refusalList(e, { token_exists: "body.name" }), (field) => {
        const m = /^body\.(name|role|tenant|agents|expires_at)\b/.exec(field);
        return m ? m[1] : null;
      });
      if (rest.length) {
        formError.replaceChildren(h("div.error-box", h("strong", "Not created: "), h("ul", rest.map((m) => h("li", m)))));
      }
    } finally {
      submit.disabled = false;
    }
  });
  form.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.preventDefault(); onCancel(); } });
  return { el: form, focus() { name.focus(); } };
}

export function tokensView(panel) {
  const box = h("div.token-list");
  const once = h("div.once-slot");
  const addToggle = h("button", { type: "button", "aria-expanded": "false" }, "New token");
  const addSlot = h("div", { hidden: true });
  panel.append(h("div.panel",
    h("div.list-toolbar", h("h2", "Tokens"), h("div.actions", addToggle)),
    h("p.hint", "Named tokens are stored hashed and listed by their prefix. The configuration's tokens (",
      h("code", "token"), ", ", h("code", "token-N"), ", ", h("code", "bootstrap"),
      ") are the operator's: changed in agentd.toml, not here."),
    once, addSlot, box));

  let tokens = [];
  let tenants = [];
  let closed = false;
  const rowErrors = new Map(); // name -> a refused revoke or rotate, shown in its row

  // A token's text, once, above the list; a second one replaces the first.
  function showOnce(made, verb) {
    const shown = shownOnce({ name: made.name, verb, text: made.token, onDone: () => addToggle.focus() });
    once.replaceChildren(shown.el);
    shown.focus();
  }

  const showAdd = disclosure(addToggle, addSlot, () => tokenForm(tenants, {
    onCreated: (made) => {
      showAdd(false);
      showOnce(made, "created");
      load();
    },
    onCancel: () => { showAdd(false); addToggle.focus(); },
  }));

  function draw() {
    if (!tokens.length) { box.replaceChildren(h("p.empty", "No tokens this token may see.")); return; }
    box.replaceChildren(h("div.table-wrap", h("table.tokens",
      h("thead", h("tr", ["Name", "Role", "Scope", "Prefix", "Expires", "Source", "Made", ""].map(
        (label) => h("th", { scope: "col" }, label)))),
      h("tbody", tokens.map(row)))));
  }

  function row(t) {
    const named = t.source === "api";
    const err = rowErrors.get(t.name);
    return h("tr", { dataset: { token: t.name } },
      h("td", h("strong.token-name", oneLine(t.name)),
        named && isMine(t.prefix) ? [" ", pill("info", "this console")] : null,
        err ? h("div.error-box", { role: "alert" }, h("strong", "Refused: "), refusalText(err)) : null),
      h("td", pill(t.role === "admin" ? "ask" : "created", t.role)),
      h("td", scopeText(t)),
      h("td", t.prefix ? h("code", t.prefix) : h("span.muted", "–")),
      h("td", !t.expires_at ? h("span.muted", "never")
        : t.expired ? [pill("error", "expired"), " ", when(t.expires_at)] : when(t.expires_at)),
      h("td", named ? "API" : h("span", { title: "In the daemon's configuration: read-only here" }, "configuration")),
      h("td", named ? [t.created_by ? oneLine(t.created_by) : "–", " · ", when(t.created_at),
        t.rotated_at ? [" · rotated ", when(t.rotated_at)] : null] : h("span.muted", "–")),
      h("td.token-actions", named ? h("div.row",
        h("button", { type: "button", dataset: { action: "rotate" }, onclick: () => rotate(t) }, "Rotate…"),
        h("button.danger", { type: "button", dataset: { action: "revoke" }, onclick: () => revoke(t) }, "Revoke…"))
        : h("span.muted", "read-only")));
  }

  const yours = (t, what) => (isMine(t.prefix) ? ` This console is signed in with it: ${what}.` : "");

  async function rotate(t) {
    const yes = await confirmDialog({ title: `Rotate ${oneLine(t.name)}?`,
      body: "It gets a new text, shown once; the old text stops working at once (on other nodes within a second)."
        + yours(t, "it goes on with the new text"), confirm: "Rotate token", danger: false });
    if (!yes) return;
    rowErrors.delete(t.name);
    const mine = isMine(t.prefix);
    try {
      const made = await post(path`/v1/tokens/${t.name}/rotate`);
      // The console's own token: it goes on with the new text (where it keeps the text
      // it signed in with), or its next request would sign it out and lose the new one.
      if (mine) token.set(made.token);
      showOnce(made, mine ? "rotated; this console now uses the new text" : "rotated");
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      rowErrors.set(t.name, e);
    }
    await load();
  }

  async function revoke(t) {
    const yes = await confirmDialog({ title: `Revoke ${oneLine(t.name)}?`,
      body: "Requests with it are refused from now on (on other nodes within a second). This cannot be undone."
        + yours(t, "it signs out at once"), confirm: "Revoke token" });
    if (!yes) return;
    rowErrors.delete(t.name);
    try {
      await del(path`/v1/tokens/${t.name}`);
      toast(`Revoked ${oneLine(t.name)}`, "ok");
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      if (!(e instanceof ApiError && e.status === 404)) rowErrors.set(t.name, e);
    }
    await load();
  }

  async function load() {
    try {
      const found = await get("/v1/tokens");
      if (closed) return;
      tokens = found.tokens;
      draw();
    } catch (e) {
      if (closed || (e instanceof ApiError && e.status === 401)) return;
      box.replaceChildren(errorBox(e, "The tokens could not be listed"));
    }
  }
  // The tenants the form offers (a token that may not list them types the name).
  get("/v1/tenants").then((t) => { tenants = t.tenants.map((x) => x.name); }).catch(() => {});
  load();
  return () => {
    closed = true;
    // The text shown once goes with the page.
    for (const field of once.querySelectorAll("input")) field.value = "";
    once.replaceChildren();
  };
}
