// The console's shell: sign-in, the hash router, the header, theme and keyboard.
// Pages are modules under pages/ exporting render(root, params, ctx) -> cleanup.

import { ApiError, get, onUnauthorized, token } from "./api.js";
import { banner, clear, h, toast, visible } from "./ui.js";
// The header's approvals count and the shared activity feed (starts once signed in).
import "./nav.js";

const ROUTES = [
  [/^#?\/?$/, "overview", () => ({})],
  [/^#\/agents\/([^/]+)\/sessions\/(.+)$/, "session", (m) => ({ agent: dec(m[1]), key: dec(m[2]) })],
  [/^#\/agents\/([^/]+)$/, "agent", (m) => ({ agent: dec(m[1]) })],
  [/^#\/runs\/([^/]+)\/trace$/, "trace", (m) => ({ run: dec(m[1]) })],
  [/^#\/approvals$/, "approvals", () => ({})],
  [/^#\/usage$/, "usage", () => ({})],
  [/^#\/kernel$/, "kernel", () => ({})],
  [/^#\/evals$/, "evals", () => ({})],
  [/^#\/evals\/runs\/([^/]+)$/, "evals", (m) => ({ run: dec(m[1]) })],
  [/^#\/evals\/([^/]+)$/, "evals", (m) => ({ suite: dec(m[1]) })],
  [/^#\/access(?:\/([a-z]+))?(?:\?(.*))?$/, "access", (m) => ({ view: m[1], query: m[2] || "" })],
];
const NAV = { overview: "overview", agent: "overview", session: "overview", trace: "overview",
              approvals: "approvals", usage: "usage", kernel: "kernel", access: "access",
              evals: "evals" };

function dec(s) { try { return decodeURIComponent(s); } catch { return s; } }

// Links inside the console: agentHref("a"), sessionHref("a", "user:1").
export const agentHref = (name) => `#/agents/${encodeURIComponent(name)}`;
export const sessionHref = (name, key) => `#/agents/${encodeURIComponent(name)}/sessions/${encodeURIComponent(key)}`;

const main = () => document.getElementById("main");
let cleanup = null;
let rendering = 0;
let signInReason = null;

function setConnection(state, detail) {
  const el = document.getElementById("conn");
  el.dataset.state = state || "";
  el.textContent = state === "live" ? "live" : state === "reconnecting" ? "reconnecting…"
    : state === "offline" ? "offline" : "";
  el.title = detail || "";
  if (state === "reconnecting" || state === "offline") {
    banner(`Connection to the daemon lost${detail ? ` (${detail})` : ""}; retrying. Nothing on this page is lost.`, "warn");
  } else if (state === "live") {
    const b = document.getElementById("banner");
    if (b.dataset.kind === "connection" || b.textContent.startsWith("Connection to the daemon lost")) banner(null);
  }
}

const ctx = {
  navigate(hash) { location.hash = hash; },
  setTitle(text) { document.title = text ? `${visible(text)} · agentd` : "agentd console"; },
  connection: setConnection,
  agentHref,
  sessionHref,
};

async function route() {
  const hash = location.hash || "#/";
  if (!token.get() && hash !== "#/signin") {
    sessionStorage.setItem("agentd.next", hash);
    location.replace("#/signin");
    return;
  }
  if (cleanup) { try { cleanup(); } catch (e) { console.error(e); } cleanup = null; }
  banner(null);
  setConnection("");
  const root = clear(main());
  const top = document.getElementById("top");
  if (hash === "#/signin") {
    top.hidden = true;
    renderSignIn(root);
    return;
  }
  top.hidden = false;
  let found = null;
  for (const [re, name, params] of ROUTES) {
    const m = re.exec(hash);
    if (m) { found = [name, params(m)]; break; }
  }
  if (!found) {
    root.append(h("section.page", h("h1", "Not found"), h("p", "No page at ", h("code", hash), ". "),
      h("a", { href: "#/" }, "Go to the overview")));
    return;
  }
  const [name, params] = found;
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === NAV[name]);
    if (a.dataset.nav === NAV[name]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const mine = ++rendering;
  try {
    const page = await import(`./pages/${name}.js`);
    if (mine !== rendering) return;
    ctx.setTitle(page.title || name);
    const done = await page.render(root, params, ctx);
    if (mine !== rendering) { if (typeof done === "function") done(); return; }
    cleanup = typeof done === "function" ? done : null;
  } catch (e) {
    if (mine !== rendering) return;
    console.error(e);
    if (!(e instanceof ApiError && e.status === 401)) {
      root.append(h("div.error-box", { role: "alert" }, "This page failed: ", String(e && e.message || e)));
    }
  }
  main().focus({ preventScroll: true });
}

function renderSignIn(root) {
  ctx.setTitle("Sign in");
  const input = h("input#token", { type: "password", name: "token", autocomplete: "current-password",
    placeholder: "the daemon's bearer token", required: true, "aria-describedby": "signin-help" });
  const error = h("p.field-error#signin-error", { role: "alert", hidden: !signInReason }, signInReason || "");
  const button = h("button.primary", { type: "submit" }, "Sign in");
  const form = h("form.signin", { novalidate: true },
    h("div.brand.big", h("span.logo", { "aria-hidden": "true" }), "agentd"),
    h("h1", "Sign in to the console"),
    h("label", { for: "token" }, "Token"),
    input,
    // (The page is public: it does not say where this daemon's home is.)
    h("p.hint#signin-help", "The daemon's token (", h("code", "cat ~/.agentd/token"),
      ", or the ", h("code", "token"), " file in ", h("code", "$AGENTD_HOME"),
      " if the daemon runs with one, or one of ", h("code", "tokens"),
      " in agentd.toml). It stays in this tab only."),
    error,
    button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) { error.hidden = false; error.textContent = "Enter a token."; input.focus(); return; }
    button.disabled = true;
    token.set(value);
    try {
      await get("/v1/kernel");
      signInReason = null;
      const next = sessionStorage.getItem("agentd.next");
      sessionStorage.removeItem("agentd.next");
      location.replace(next && next !== "#/signin" ? next : "#/");
    } catch (e) {
      token.clear();
      error.hidden = false;
      error.textContent = e instanceof ApiError && e.status === 401
        ? "The daemon refused this token." : `Could not sign in: ${e.message}`;
      button.disabled = false;
      input.select();
    }
  });
  root.append(h("section.signin-page", form));
  input.focus();
}

function signOut(reason) {
  token.clear();
  signInReason = reason || null;
  if (location.hash !== "#/signin") {
    if (reason) sessionStorage.setItem("agentd.next", location.hash || "#/");
    location.replace("#/signin");
  } else {
    route();
  }
}

onUnauthorized(() => {
  if (location.hash === "#/signin") return;
  signOut("The daemon refused the token (it may have been changed or removed). Sign in again.");
});

// Theme: the system's unless chosen here (kept in localStorage: not a secret).
function applyTheme() {
  const chosen = localStorage.getItem("agentd.theme");
  if (chosen) document.documentElement.dataset.theme = chosen;
  else delete document.documentElement.dataset.theme;
  const dark = chosen ? chosen === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  document.getElementById("theme").textContent = dark ? "Light" : "Dark";
}
function toggleTheme() {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === "dark"
    : matchMedia("(prefers-color-scheme: dark)").matches;
  localStorage.setItem("agentd.theme", dark ? "light" : "dark");
  applyTheme();
}

// Keyboard: g o / g a / g u / g k / g e / g x go to a page, / focuses the page's search, t theme,
// ? lists the keys. Not while typing in a field.
let pendingG = false;
function onKey(event) {
  const t = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) {
    if (event.key === "Escape") t.blur();
    return;
  }
  if (pendingG) {
    pendingG = false;
    const to = { o: "#/", a: "#/approvals", u: "#/usage", k: "#/kernel", e: "#/evals",
                 x: "#/access" }[event.key];
    if (to) { event.preventDefault(); location.hash = to; }
    return;
  }
  if (event.key === "g") { pendingG = true; setTimeout(() => { pendingG = false; }, 1200); return; }
  if (event.key === "/") {
    const search = document.querySelector("[data-search]");
    if (search) { event.preventDefault(); search.focus(); }
  } else if (event.key === "t") {
    toggleTheme();
  } else if (event.key === "?") {
    toast("Keys: g o overview · g a approvals · g u usage · g k kernel · g e evals · g x access · / search · t theme · Esc leave a field");
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("keydown", onKey);
// A module script runs once the document is parsed: the header is there.
applyTheme();
document.getElementById("theme").addEventListener("click", toggleTheme);
document.getElementById("signout").addEventListener("click", () => signOut(null));
route();
