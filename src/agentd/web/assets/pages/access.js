// Access (#/access/audit, #/access/tokens, #/access/tenants): who may do what. The audit
// log (admins), the tokens the signed-in token may see, and the tenants with their quotas
// and usage. Each view is a module: make(panel, ac) -> cleanup. The view (and the audit
// page's filters) are in the address, so a link opens the same view; a token's text
// never is.

import { h } from "../ui.js";
import { auditView } from "./access-audit.js";
import { tokensView } from "./access-tokens.js";
import { tenantsView } from "./access-tenants.js";

export const title = "Access";

const VIEWS = [
  ["audit", "Audit log", auditView],
  ["tokens", "Tokens", tokensView],
  ["tenants", "Tenants", tenantsView],
];

export function render(root, params, ctx) {
  const wanted = VIEWS.some(([k]) => k === params.view) ? params.view : "audit";
  const query = new URLSearchParams(params.query || "");
  const tabList = h("div.tabs", { role: "tablist", "aria-label": "Access pages" });
  const panel = h("div.tab-panel#access-panel", { role: "tabpanel", tabindex: "-1" });
  const buttons = VIEWS.map(([key, label]) => h("button", { type: "button", role: "tab", id: `access-tab-${key}`,
    "aria-controls": "access-panel", "aria-selected": "false", tabindex: "-1", dataset: { tab: key },
    onclick: () => show(key, true) }, label));
  tabList.append(...buttons);
  root.append(h("section.page.access-page",
    h("div.page-head", h("h1", "Access")),
    h("p.hint.page-intro", "Who may do what: the tokens and their roles, the tenants and their quotas, and the audit "
      + "log of every refusal and every change to them (docs/security.md, \"Identity\"). Every action here is an API "
      + "call with your token: the daemon decides what it may do, and says so when it may not."),
    tabList, panel));

  let current = null;
  let cleanup = null;
  // The view's state in the address (#/access/audit?actor=...): replaceState, so the
  // page is not routed again and the back button is not filled with tab changes.
  const ac = {
    ctx,
    setQuery(values) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(values)) if (v) q.set(k, v);
      const s = q.toString();
      history.replaceState(null, "", `#/access/${current}${s ? `?${s}` : ""}`);
    },
  };

  function show(key, user) {
    if (current === key) return;
    if (cleanup) { try { cleanup(); } catch (e) { console.error(e); } cleanup = null; }
    current = key;
    for (const b of buttons) {
      const on = b.dataset.tab === key;
      b.setAttribute("aria-selected", String(on));
      b.tabIndex = on ? 0 : -1;
    }
    panel.setAttribute("aria-labelledby", `access-tab-${key}`);
    panel.replaceChildren();
    const [, label, make] = VIEWS.find(([k]) => k === key);
    ctx.setTitle(label);
    if (user) history.replaceState(null, "", `#/access/${key}`);
    const done = make(panel, ac, user ? new URLSearchParams() : query);
    cleanup = typeof done === "function" ? done : null;
  }
  tabList.addEventListener("keydown", (e) => {
    const i = VIEWS.findIndex(([k]) => k === current);
    const to = e.key === "ArrowRight" ? i + 1 : e.key === "ArrowLeft" ? i - 1 : e.key === "Home" ? 0
      : e.key === "End" ? VIEWS.length - 1 : null;
    if (to === null) return;
    e.preventDefault();
    const key = VIEWS[(to + VIEWS.length) % VIEWS.length][0];
    show(key, true);
    buttons.find((b) => b.dataset.tab === key).focus();
  });

  show(wanted, false);
  return () => { if (cleanup) cleanup(); };
}
