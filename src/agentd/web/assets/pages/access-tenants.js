// Tenants (GET /v1/tenants, and GET /v1/tenants/NAME for what each holds): quotas
// against usage; New tenant (POST), Edit (PATCH with only the quotas changed: an emptied
// field is sent as null, which lifts the quota) and Delete (asks first; a tenant with
// agents or tokens left is refused, 409 tenant_not_empty, said in its row). Tenants of
// agentd.toml are changed there, and names agents use without a tenant of their own
// have no quotas: both are read-only here.

import { ApiError, del, get, patch, path, post } from "../api.js";
import { errorBox, fmtCost, fmtInt, h, pill, toast } from "../ui.js";
import { FieldErrors, confirmDialog, disclosure } from "./agent-shared.js";
import { oneLine, readNumber, refusalList, refusalText } from "./access-shared.js";

// The quotas (TenantQuotas); counted ones come with the tenant's usage.
const QUOTAS = [
  ["agents", "Agents", true], ["sessions", "Sessions", true], ["schedules", "Schedules", true],
  ["memory_entries", "Memory entries", true], ["egress_connections", "Egress connections", false],
  ["sandbox_uids", "Sandbox uids", false], ["spend_usd_per_day", "Spend per day (USD)", false],
];
const SOURCE = { api: "API", config: "agentd.toml", implicit: "no quotas" };
const fmtQuota = (key, v) => (key === "spend_usd_per_day" ? fmtCost(v) : fmtInt(v));

// The form of a new tenant (no `tenant`) or of a tenant's changes.
function tenantForm({ tenant = null, onSaved, onCancel }) {
  const editing = Boolean(tenant);
  const pre = editing ? "edit-tenant" : "new-tenant";
  const errors = new FieldErrors(pre);
  const quotas = tenant ? tenant.quotas : {};
  const name = editing ? null : h(`input#${pre}-name`, { name: "name", maxlength: "64", autocomplete: "off",
    spellcheck: "false", placeholder: "acme", "aria-describedby": `${pre}-name-hint` });
  const description = h(`input#${pre}-description`, { name: "description", maxlength: "500", autocomplete: "off",
    value: tenant ? tenant.description : "" });
  const fields = QUOTAS.map(([key, label]) => {
    const input = h(`input#${pre}-${key}`, { name: key, inputmode: "decimal", autocomplete: "off",
      placeholder: "no limit", value: quotas[key] === undefined ? "" : String(quotas[key]) });
    return { key, label, input };
  });
  const formError = h("div.form-error", { role: "alert" });
  const save = h("button.primary", { type: "submit" }, editing ? "Save quotas" : "Create tenant");
  const form = h("form.panel.inner.tenant-form", { novalidate: true, "aria-labelledby": `${pre}-title`,
    dataset: editing ? { editing: tenant.name } : null },
    h(`h3#${pre}-title`, editing ? ["Quotas of ", h("code", oneLine(tenant.name))] : "New tenant"),
    h("div.form-grid",
      editing ? null : h("div.field", h("label", { for: `${pre}-name` }, "Name"), name,
        h(`p.hint#${pre}-name-hint`, "Lower-case letters, digits, ", h("code", "- _"), "; its agents are named ",
          h("code", "NAME.agent"), "."), errors.slot("name", name)),
      h("div.field", h("label", { for: `${pre}-description` }, "Description"), description,
        errors.slot("description", description))),
    h("p.hint", "A quota left empty is no limit", editing ? " (emptying one lifts it)" : "",
      ". A quota lowered below what the tenant holds refuses new writes; nothing is removed."),
    h("div.form-grid", fields.map((f) => h("div.field", h("label", { for: f.input.id }, f.label), f.input,
      errors.slot(f.key, f.input)))),
    formError,
    h("div.row.form-actions", save, h("button", { type: "button", onclick: () => onCancel() }, "Cancel")));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    formError.replaceChildren();
    const read = {};
    let bad = null;
    for (const f of fields) {
      const r = readNumber(f.input);
      if (!r.ok) { errors.set(f.key, [r.error]); bad = bad || f.input; } else read[f.key] = r.value;
    }
    if (bad) { bad.focus(); return; }
    let body;
    if (editing) {
      // Only what changed: a PATCH sets the keys it gives (null lifts one).
      const changed = {};
      for (const f of fields) {
        const before = quotas[f.key] === undefined ? null : quotas[f.key];
        if (read[f.key] !== before) changed[f.key] = read[f.key];
      }
      body = {};
      if (Object.keys(changed).length) body.quotas = changed;
      if (description.value !== tenant.description) body.description = description.value;
      if (!Object.keys(body).length) { formError.replaceChildren(h("p.hint", "Nothing changed.")); return; }
    } else {
      body = { name: name.value.trim(), quotas: {} };
      if (!body.name) { errors.set("name", ["Give the tenant a name."]); name.focus(); return; }
      for (const f of fields) if (read[f.key] !== null) body.quotas[f.key] = read[f.key];
      if (description.value) body.description = description.value;
    }
    save.disabled = true;
    try {
      const saved = editing ? await patch(path`/v1/tenants/${tenant.name}`, body) : await post("/v1/tenants", body);
      onSaved(saved);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      const rest = errors.show(refusalList(e, { tenant_exists: "body.name" }), (field) => {
        const m = /^body\.(?:quotas\.)?(name|description|[a-z_]+)$/.exec(field);
        return m ? m[1] : null;
      });
      if (rest.length) {
        formError.replaceChildren(h("div.error-box", h("strong", editing ? "Not saved: " : "Not created: "),
          h("ul", rest.map((m) => h("li", m)))));
      }
    } finally {
      save.disabled = false;
    }
  });
  form.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.preventDefault(); onCancel(); } });
  return { el: form, focus() { (name || fields[0].input).focus(); } };
}

export function tenantsView(panel) {
  const box = h("div.tenant-list");
  const addToggle = h("button", { type: "button", "aria-expanded": "false" }, "New tenant");
  const addSlot = h("div", { hidden: true });
  panel.append(h("div.panel",
    h("div.list-toolbar", h("h2", "Tenants"), h("div.actions", addToggle)),
    h("p.hint", "An agent belongs to the tenant its ", h("code", "settings.tenant"), " names (",
      h("code", "default"), " when none). Only admins make, change and delete tenants."),
    addSlot, box));

  let tenants = [];
  const usage = new Map(); // name -> {agents, ...} or an ApiError
  const rowErrors = new Map(); // name -> a refused delete
  let editing = null; // {name, form}
  let closed = false;

  const showAdd = disclosure(addToggle, addSlot, () => tenantForm({
    onSaved: (made) => { showAdd(false); toast(`Created ${oneLine(made.name)}`, "ok"); load(); },
    onCancel: () => { showAdd(false); addToggle.focus(); },
  }));

  function focusAction(name, action) {
    for (const el of box.querySelectorAll(`button[data-action="${action}"]`)) {
      if (el.closest("tr").dataset.tenant === name) { el.focus(); return; }
    }
  }

  function startEdit(t) {
    const close = () => { editing = null; draw(); focusAction(t.name, "edit"); };
    editing = { name: t.name, form: tenantForm({ tenant: t,
      onSaved: (saved) => {
        tenants = tenants.map((x) => (x.name === saved.name ? saved : x));
        toast(`Saved ${oneLine(saved.name)}`, "ok");
        close();
      },
      onCancel: close }) };
    draw();
    editing.form.focus();
  }

  function draw() {
    if (!tenants.length) { box.replaceChildren(h("p.empty", "No tenants this token may see.")); return; }
    // Moving the open form into the new table blurs it: the field being typed in gets
    // its focus back (the usage arrives after the list).
    const active = editing && editing.form.el.contains(document.activeElement) ? document.activeElement : null;
    const body = [];
    for (const t of tenants) {
      body.push(row(t));
      if (editing && editing.name === t.name) {
        body.push(h("tr.edit-row", h("td", { colspan: "5" }, editing.form.el)));
      }
    }
    box.replaceChildren(h("div.table-wrap", h("table.tenants",
      h("thead", h("tr", ["Name", "Source", "Quotas and usage", "Description", ""].map(
        (label) => h("th", { scope: "col" }, label)))),
      h("tbody", body))));
    if (active) active.focus();
  }

  function row(t) {
    const own = t.source === "api";
    const err = rowErrors.get(t.name);
    return h("tr", { dataset: { tenant: t.name } },
      h("td", h("strong.tenant-name", oneLine(t.name)),
        err ? h("div.error-box", { role: "alert" }, h("strong", "Not deleted: "), refusalText(err)) : null),
      h("td", pill(own ? "created" : "paused", SOURCE[t.source] || t.source)),
      h("td", quotaList(t)),
      h("td.tenant-description", t.description || h("span.muted", "–")),
      h("td.tenant-actions", own ? h("div.row",
        h("button", { type: "button", dataset: { action: "edit" }, disabled: Boolean(editing && editing.name === t.name),
          onclick: () => startEdit(t) }, "Edit quotas"),
        h("button.danger", { type: "button", dataset: { action: "delete" }, onclick: () => remove(t) }, "Delete…"))
        : h("span.muted", t.source === "config" ? "changed in agentd.toml" : "read-only")));
  }

  // Each quota as "used / limit" where the daemon counts it, the limit alone otherwise.
  function quotaList(t) {
    const used = usage.get(t.name);
    const items = [];
    for (const [key, label, counted] of QUOTAS) {
      const limit = t.quotas[key];
      const have = counted && used && !(used instanceof Error) ? used[key] : undefined;
      if (limit === undefined && have === undefined) continue;
      const full = limit !== undefined && have !== undefined && have >= limit;
      items.push(h("li", { dataset: { quota: key }, class: full ? "full" : null },
        h("span.quota-label", label), " ",
        h("span.quota-value", have !== undefined ? `${fmtInt(have)} / ` : "",
          limit === undefined ? "no limit" : fmtQuota(key, limit))));
    }
    const note = used instanceof Error ? h("p.hint", "Usage could not be read: ", used.message) : null;
    return [items.length ? h("ul.quotas", items) : h("span.muted", "no quotas"), note];
  }

  async function remove(t) {
    const yes = await confirmDialog({ title: `Delete tenant ${oneLine(t.name)}?`,
      body: "Only a tenant without agents and tokens can be deleted; its quotas go with it.", confirm: "Delete tenant" });
    if (!yes) { focusAction(t.name, "delete"); return; }
    rowErrors.delete(t.name);
    try {
      await del(path`/v1/tenants/${t.name}`);
      toast(`Deleted ${oneLine(t.name)}`, "ok");
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      if (!(e instanceof ApiError && e.status === 404)) rowErrors.set(t.name, e);
    }
    await load();
    focusAction(t.name, "delete");
  }

  // What each tenant holds: a request per tenant, a few at a time.
  async function readUsage(names) {
    const queue = [...names];
    const worker = async () => {
      while (queue.length && !closed) {
        const name = queue.shift();
        try {
          usage.set(name, (await get(path`/v1/tenants/${name}`)).usage || {});
        } catch (e) {
          if (e instanceof ApiError && e.status === 401) return;
          usage.set(name, e);
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  }

  async function load() {
    try {
      const found = await get("/v1/tenants");
      if (closed) return;
      tenants = found.tenants;
      if (editing && !tenants.some((t) => t.name === editing.name)) editing = null;
      draw();
      await readUsage(tenants.map((t) => t.name));
      if (!closed) draw();
    } catch (e) {
      if (closed || (e instanceof ApiError && e.status === 401)) return;
      box.replaceChildren(errorBox(e, "The tenants could not be listed"));
    }
  }
  load();
  return () => { closed = true; };
}
