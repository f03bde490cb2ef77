// The audit log (GET /v1/audit, admins): oldest first, a page of 100 at a time ("Load
// more" reads from the API's next_after; at the end, "Check for newer" reads past the
// last row shown), filtered by actor, action (a family: token.*) and refusals only.
// "Verify chain" walks the hash chain (GET /v1/audit/verify), against a head noted
// earlier when one is given. Every row's text is the daemon's or an attacker's (a
// refused request's path, a token's agent patterns): it is set as text.

import { ApiError, get } from "../api.js";
import { clear, fmtInt, h, pill, visibleJson } from "../ui.js";
import { FieldErrors, when } from "./agent-shared.js";
import { oneLine, refusalList, refusalText } from "./access-shared.js";

const PAGE = 100;

export function auditView(panel, ac, query) {
  const errors = new FieldErrors("audit");
  const actor = h("input#audit-actor", { name: "actor", maxlength: "64", autocomplete: "off", spellcheck: "false",
    placeholder: "a token's name", value: query.get("actor") || "" });
  const action = h("input#audit-action", { name: "action", maxlength: "64", autocomplete: "off", spellcheck: "false",
    placeholder: "token.* or agent.update", value: query.get("action") || "", "aria-describedby": "audit-action-hint" });
  const denied = h("input#audit-denied", { type: "checkbox", name: "denied", checked: query.get("outcome") === "denied" });
  const filters = h("form.audit-filters", { novalidate: true, "aria-label": "Filter the audit log" },
    h("div.field", h("label", { for: "audit-actor" }, "Actor"), actor, errors.slot("actor", actor)),
    h("div.field", h("label", { for: "audit-action" }, "Action"), action,
      h("p.hint#audit-action-hint", "One action, or a family: ", h("code", "token.*")), errors.slot("action", action)),
    h("div.field.field-check", h("label.check", denied, " Refusals only")),
    h("div.field.field-button", h("button.primary", { type: "submit" }, "Show")));

  const head = h("input#audit-head", { name: "head", maxlength: "100", autocomplete: "off", spellcheck: "false",
    placeholder: "SEQ:HASH (optional)", "aria-describedby": "audit-head-hint" });
  const verifyButton = h("button", { type: "submit" }, "Verify chain");
  const verdict = h("div.audit-verdict", { "aria-live": "polite" });
  const verify = h("form.audit-verify", { novalidate: true, "aria-label": "Verify the audit log's chain" },
    h("div.field", h("label", { for: "audit-head" }, "Noted head"), head,
      h("p.hint#audit-head-hint", "A head noted earlier: rows cut off the log's end since are caught too."),
      errors.slot("head", head)),
    h("div.field.field-button", verifyButton));

  const list = h("div.audit-rows");
  const status = h("p.list-count", { role: "status" });
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const formError = h("div.form-error", { role: "alert" });
  panel.append(
    h("div.panel", h("h2", "Audit log"), filters, formError, list, h("div.pager", status, more)),
    h("div.panel", h("h2", "The hash chain"),
      h("p.hint", "Each row's hash covers the row before it: an edited or removed row breaks the chain. "
        + "Keep a head somewhere else and give it later to catch rows cut off the end."),
      verify, verdict));

  let rows = [];
  let next = null; // the API's next_after: more rows now
  let shown = null; // the filters the rows were read with (Load more keeps them)
  let seq = 0;
  let closed = false;

  function wanted() {
    return { actor: actor.value.trim(), action: action.value.trim(), outcome: denied.checked ? "denied" : "" };
  }

  // Reads a page after `after`; fresh: the list starts over (new filters).
  async function load(fresh) {
    const mine = ++seq;
    const f = fresh || !shown ? wanted() : shown;
    if (fresh) { errors.clear(); formError.replaceChildren(); }
    const after = fresh ? 0 : next !== null ? next : rows.length ? rows[rows.length - 1].seq : 0;
    more.disabled = true;
    let page;
    try {
      page = await get("/v1/audit", { query: { ...f, after, limit: PAGE } });
    } catch (e) {
      if (closed || mine !== seq) return;
      more.disabled = false;
      if (e instanceof ApiError && e.status === 401) return;
      if (e instanceof ApiError && e.status === 403) {
        // Another role: the API's words, plainly, in place of the log.
        rows = [];
        next = null;
        list.replaceChildren(h("div.error-box.audit-refused", { role: "alert" },
          h("strong", "Not allowed: "), refusalText(e)));
        status.textContent = "";
        more.hidden = true;
        return;
      }
      const rest = errors.show(refusalList(e), (field) => {
        const m = /^query\.(actor|action)$/.exec(field);
        return m ? m[1] : null;
      });
      if (rest.length) {
        formError.replaceChildren(h("div.error-box", h("strong", "The audit log could not be read: "),
          h("ul", rest.map((m) => h("li", m)))));
      }
      return;
    }
    if (closed || mine !== seq) return;
    if (fresh) {
      rows = [];
      shown = f;
      ac.setQuery(f);
    }
    const body = !fresh && rows.length ? list.querySelector("tbody") : null;
    rows = rows.concat(page.rows);
    next = page.next_after;
    // A further page is added under the rows shown (which keep their place and focus).
    if (body) body.append(...page.rows.map(rowOf));
    else draw();
    counts();
    more.disabled = false;
  }

  function draw() {
    list.replaceChildren(rows.length ? rowTable(rows)
      : h("p.empty", filtered() ? "No rows match these filters." : "The audit log is empty."));
  }
  function counts() {
    status.textContent = `${fmtInt(rows.length)} row${rows.length === 1 ? "" : "s"} shown, oldest first`
      + (next !== null ? "; more" : "");
    more.hidden = false;
    more.textContent = next !== null ? "Load more" : "Check for newer";
  }
  const filtered = () => Object.values(shown || {}).some(Boolean);

  filters.addEventListener("submit", (e) => { e.preventDefault(); load(true); });
  denied.addEventListener("change", () => load(true));
  more.addEventListener("click", () => load(false));

  verify.addEventListener("submit", async (e) => {
    e.preventDefault();
    errors.clear();
    verifyButton.disabled = true;
    clear(verdict).append(h("p.hint", "Walking the chain…"));
    try {
      const v = await get("/v1/audit/verify", { query: { head: head.value.trim() } });
      if (!closed) verdict.replaceChildren(verdictBox(v));
    } catch (err) {
      if (closed) return;
      if (err instanceof ApiError && err.status === 401) return;
      const rest = errors.show(refusalList(err), (field) => (field === "query.head" ? "head" : null));
      verdict.replaceChildren(...(rest.length ? [h("div.error-box", { role: "alert" },
        h("strong", "Not verified: "), refusalText(err))] : []));
    } finally {
      verifyButton.disabled = false;
    }
  });

  load(true);
  return () => { closed = true; };
}

function rowTable(rows) {
  return h("div.table-wrap", h("table.audit",
    h("thead", h("tr", ["Seq", "When", "Actor", "Action", "Resource", "Outcome", "Reason", "Details"].map(
      (label, i) => h("th", { scope: "col", class: i === 0 ? "num" : null }, label)))),
    h("tbody", rows.map(rowOf))));
}

function rowOf(r) {
  return h("tr", { dataset: { seq: String(r.seq) } },
    h("td.num", { title: r.hash }, String(r.seq)),
    h("td", when(r.at)),
    h("td.audit-actor", r.actor === null ? h("span.muted", "no token") : oneLine(r.actor),
      r.role ? h("span.muted", ` (${oneLine(r.role)})`) : null),
    h("td", h("code.audit-action", oneLine(r.action))),
    h("td.audit-resource", oneLine(r.resource)),
    h("td", pill(r.outcome === "allowed" ? "allow" : r.outcome === "failed" ? "failed" : "denied", r.outcome)),
    h("td.audit-reason", oneLine(r.reason || "")),
    h("td", Object.keys(r.details || {}).length
      ? h("code.audit-details", visibleJson(r.details)) : h("span.muted", "–")));
}

// The chain's verdict: intact, with the head to note (copyable); or the first broken row
// and why.
function verdictBox(v) {
  const noted = `${v.head.seq}:${v.head.hash}`;
  const headField = h("input#audit-head-value.head-text", { type: "text", readonly: true, value: noted,
    "aria-label": "The chain's head (SEQ:HASH)", spellcheck: "false" });
  const copy = h("button", { type: "button", onclick: async () => {
    headField.select();
    try { await navigator.clipboard.writeText(noted); } catch { /* selected: the system's copy takes it */ }
  } }, "Copy");
  if (v.ok) {
    return h("div.ok-box.audit-ok", { role: "status" },
      h("strong", "The chain is intact: "), `${fmtInt(v.rows)} row${v.rows === 1 ? "" : "s"}, none edited or removed. `,
      "Note its head:", h("div.row.once-row", headField, copy));
  }
  return h("div.error-box.audit-broken", { role: "alert" },
    h("strong", `The chain is broken at row ${v.problem.seq}: `), v.problem.reason,
    h("p", `${fmtInt(v.rows)} row${v.rows === 1 ? "" : "s"} before it are intact; the last of them is:`),
    h("div.row.once-row", headField, copy));
}
