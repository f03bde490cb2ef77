// The agent page's MCP tab: its MCP servers that take OAuth tokens, whether each is
// authorized, and the link a person opens to authorize one (the same link
// `agentd mcp login AGENT SERVER` prints: POST /v1/agents/NAME/mcp/SERVER/login). The
// authorization server sends the person back to the daemon, which keeps the tokens:
// this page never sees one. make(panel, tc) -> {onAgent, onGone} (see agent.js).

import { del, get, path, post } from "../api.js";
import { errorBox, h, pill, toast } from "../ui.js";
import { confirmDialog, when } from "./agent-shared.js";
import { refused } from "./agent-tabs.js";

// Seconds between two looks at the status while a login is under way.
const POLL_MS = 3000;

export function mcpTab(panel, tc) {
  const box = h("div#mcp-servers", { "aria-live": "polite" });
  panel.append(h("div.panel", h("h2", "MCP servers"),
    h("p.hint", "Servers of this agent's ", h("code", "settings.mcp"), " with an ", h("code", "oauth"),
      " block. A person authorizes agentd once, at the server's own sign-in page; the daemon keeps the tokens, sealed, and refreshes them."),
    box));

  const links = new Map(); // server -> the login just started (its authorization_url, expires_at)
  let servers = [];
  let timer = null;

  function draw() {
    if (!servers.length) {
      box.replaceChildren(h("p.empty", "This agent has no MCP server that takes OAuth tokens."));
      return;
    }
    box.replaceChildren(h("ul.mcp-list", servers.map(row)));
  }

  function row(s) {
    const started = links.get(s.server);
    const state = s.authorized ? pill("running", "authorized")
      : s.login_pending ? pill("paused", "login under way") : pill("error", "not authorized");
    return h("li.mcp-server", { dataset: { server: s.server } },
      h("div", h("strong", s.server), " ", state, " ", h("code", s.url)),
      s.authorized ? h("p.hint", "Scope ", h("code", s.scope || "–"), s.expires_at ? [" · token until ", when(s.expires_at)] : null,
        s.refreshable ? " · refreshed by the daemon" : " · not refreshable: log in again when it expires",
        " · tokens of the ", s.tokens === "tenant" ? "whole tenant" : "agent") : null,
      started ? h("p.mcp-link", "Open this link, sign in and consent (it works once, until ", when(started.expires_at), "): ",
        h("a", { href: started.authorization_url, target: "_blank", rel: "noopener noreferrer", dataset: { role: "authorize-link" } },
          started.authorization_url)) : null,
      h("div.row",
        h("button", { type: "button", disabled: tc.isGone(), dataset: { action: "login" },
          onclick: () => login(s.server) }, s.authorized ? "Authorize again" : "Authorize…"),
        s.authorized ? h("button.danger", { type: "button", disabled: tc.isGone(), dataset: { action: "logout" },
          onclick: () => logout(s.server) }, "Log out") : null));
  }

  async function load() {
    try {
      servers = (await get(path`/v1/agents/${tc.name}/mcp`)).servers;
      for (const s of servers) if (s.authorized && !s.login_pending) links.delete(s.server);
      draw();
    } catch (e) {
      if (refused(e, tc)) return;
      box.replaceChildren(errorBox(e, "Could not load the MCP servers"));
    }
    clearTimeout(timer);
    if (links.size) timer = setTimeout(load, POLL_MS);
  }

  async function login(server) {
    try {
      links.set(server, await post(path`/v1/agents/${tc.name}/mcp/${server}/login`));
      draw();
      load();
    } catch (e) {
      if (!refused(e, tc, `Could not start the login of ${server}`)) draw();
    }
  }

  async function logout(server) {
    const yes = await confirmDialog({ title: `Log ${server} out?`,
      body: "The daemon forgets its tokens (revoked at the server first, where it can); the agent's calls of its tools then wait for a new login.",
      confirm: "Log out" });
    if (!yes) return;
    try {
      await del(path`/v1/agents/${tc.name}/mcp/${server}/login`);
      toast(`${server}: logged out`, "ok");
      load();
    } catch (e) {
      refused(e, tc, `Could not log ${server} out`);
    }
  }

  load();
  return {
    onAgent: load,
    onGone() { clearTimeout(timer); draw(); },
    cleanup() { clearTimeout(timer); },
  };
}
