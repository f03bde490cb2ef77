// The agent page's Skills tab: the daemon's installed skills, enabled or not for this
// agent; installing an archive, viewing and removing a skill (daemon-wide, not per agent).
// make(panel, tc) -> {onAgent, onGone} (see agent.js).

import { ApiError, del, get, path, postRaw, put } from "../api.js";
import { errorBox, fmtBytes, fmtInt, h, pill, toast } from "../ui.js";
import { confirmDialog, when } from "./agent-shared.js";
import { refused } from "./agent-tabs.js";

// POST /v1/skills takes at most this (MAX_ARCHIVE_BYTES): a bigger file is not read.
const MAX_ARCHIVE = 64 * 1024 * 1024;

// The Content-Type of an archive by its name; the daemon reads the format from the
// first bytes anyway, so anything else goes as octet-stream.
function archiveType(name) {
  const n = name.toLowerCase();
  if (n.endsWith(".zip")) return "application/zip";
  if (n.endsWith(".tar.gz") || n.endsWith(".tgz")) return "application/gzip";
  return "application/octet-stream";
}

// An ApiError in words: its message (which names the field, "SKILL.md.name: ..."),
// and the fields (a 422's details.errors, a 413's details.field) it does not say.
function refusal(e) {
  const fields = e instanceof ApiError ? Object.keys(e.fieldErrors()) : [];
  if (e instanceof ApiError && typeof e.details.field === "string" && !fields.includes(e.details.field)) fields.push(e.details.field);
  const named = fields.filter((f) => !e.message.includes(f));
  return [e.message, named.length ? ` (${named.join(", ")})` : "",
    e instanceof ApiError && e.code ? h("code.code", e.code) : null];
}

export function skillsTab(panel, tc) {
  const box = h("div");
  const file = h("input#skill-archive", { type: "file", accept: ".zip,.tar.gz,.tgz,application/zip,application/gzip",
    "aria-describedby": "skill-archive-hint skill-install-result" });
  const install = h("button.primary", { type: "submit" }, "Install");
  const result = h("div#skill-install-result.skill-install-result", { "aria-live": "polite" });
  const form = h("form.skill-install", { novalidate: true, "aria-label": "Install a skill" },
    h("div.row", h("label", { for: "skill-archive" }, "Install skill"), file, install),
    h("p.hint#skill-archive-hint", "A .zip, .tar.gz or .tgz with ", h("code", "SKILL.md"),
      " at its top or in one folder named as the skill. It is installed on the daemon: every agent can then enable it."),
    result);
  panel.append(h("div.panel", h("h2", "Skills"),
    h("p.hint", "Enabled skills are named in every run's instructions and readable by the agent's commands at ",
      h("code", "/skills/NAME"), "."), form, box));

  let installed = [];
  const open = new Map(); // name -> the skill's detail (GET /v1/skills/{name}) or an ApiError, while viewed
  const rowErrors = new Map(); // name -> a refused removal, shown in its row

  function draw() {
    // The list is rebuilt whole: the focused control (by skill and action) gets the focus back.
    const active = document.activeElement;
    const keep = active && box.contains(active) && active.dataset.action
      ? [active.closest("[data-skill]")?.dataset.skill, active.dataset.action] : null;
    const enabled = new Set(((tc.agent().settings || {}).skills || {}).enabled || []);
    const known = new Set(installed.map((s) => s.name));
    const rows = [...installed, ...[...enabled].filter((n) => !known.has(n)).map((n) => ({ name: n, missing: true }))];
    if (!rows.length) {
      box.replaceChildren(h("p.empty", "No skills are installed on this daemon: install an archive above (or ",
        h("code", "agentd skill install PATH"), ")."));
      return;
    }
    box.replaceChildren(h("ul.skill-list", rows.map((s) => skillRow(s, enabled.has(s.name)))));
    if (keep) {
      for (const el of box.querySelectorAll("[data-action]")) {
        if (el.dataset.action === keep[1] && el.closest("[data-skill]").dataset.skill === keep[0]) { el.focus(); break; }
      }
    }
  }

  function skillRow(s, on) {
    const id = `skill-view-${s.name}`;
    const viewing = open.has(s.name);
    const err = rowErrors.get(s.name);
    return h("li.skill", { dataset: { skill: s.name } },
      h("div.skill-text", h("strong", s.name), " ", on ? pill("running", "enabled") : pill("created", "off"),
        s.missing ? h("span.pill.pill-error", "not installed") : null,
        s.description ? h("p.hint", s.description) : null,
        s.missing ? h("p.hint.skill-missing", "Removed from the daemon: this agent's runs leave it out, and saving its settings is refused until it is disabled here.") : null,
        err ? h("div.error-box", { role: "alert" }, h("strong", "Not removed: "), refusal(err)) : null,
        viewing ? detail(s.name, id) : null),
      h("div.row.skill-actions",
        s.missing ? null : h("button", { type: "button", dataset: { action: "view" }, "aria-expanded": String(viewing),
          "aria-controls": viewing ? id : null, onclick: () => toggleView(s.name) }, viewing ? "Hide" : "View"),
        h("button", { type: "button", disabled: tc.isGone(), "aria-pressed": String(on), dataset: { action: "enable" },
          onclick: () => setSkill(s.name, !on) }, on ? "Disable" : "Enable"),
        s.missing ? null : h("button.danger", { type: "button", dataset: { action: "remove" },
          "aria-label": `Remove ${s.name}`, onclick: () => remove(s.name, on) }, "Remove")));
  }

  // The skill's text as text: SKILL.md's body is the package author's, never HTML.
  function detail(name, id) {
    const d = open.get(name);
    if (d === null) return h("div.skill-detail", { id }, h("p.hint", "Loading…"));
    if (d instanceof Error) return h("div.skill-detail", { id }, errorBox(d, "Could not read the skill"));
    return h("div.skill-detail", { id, role: "region", "aria-label": `Skill ${name}` },
      h("dl.facts",
        d.license ? [h("dt", "License"), h("dd", d.license)] : null,
        d.compatibility ? [h("dt", "Compatibility"), h("dd", d.compatibility)] : null,
        d.allowed_tools && d.allowed_tools.length ? [h("dt", "Allowed tools"), h("dd", d.allowed_tools.join(" "))] : null,
        h("dt", "Installed"), h("dd", d.installed_at ? when(d.installed_at) : "–"),
        h("dt", "Size"), h("dd", fmtBytes(d.size)),
        h("dt", "Hash"), h("dd", h("code.skill-hash", d.hash))),
      h("h3", `Files (${fmtInt(d.files.length)})`),
      h("ul.skill-files", d.files.map((f) => h("li", h("code", f)))),
      h("h3", "SKILL.md"),
      h("pre.skill-body", d.body));
  }

  async function toggleView(name) {
    if (open.has(name)) { open.delete(name); draw(); return; }
    open.set(name, null);
    draw();
    try {
      open.set(name, await get(path`/v1/skills/${name}`));
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      if (e instanceof ApiError && e.status === 404) { open.delete(name); await load(); toast(`${name} is not installed any more`, "error"); return; }
      if (open.has(name)) open.set(name, e);
    }
    if (open.has(name)) draw();
  }

  async function setSkill(skill, on) {
    try {
      const agent = on ? await put(path`/v1/agents/${tc.name}/skills/${skill}`)
        : await del(path`/v1/agents/${tc.name}/skills/${skill}`);
      if (agent) tc.setAgent(agent);
      draw();
    } catch (e) {
      refused(e, tc, `Could not ${on ? "enable" : "disable"} ${skill}`);
    }
  }

  // Removing is daemon-wide. What the daemon does to agents that enable it: they keep the
  // name in their settings, their runs leave it out, and saving one is refused until the
  // name goes (docs/api.md, "Skills"): said before, and shown after as "not installed".
  async function remove(name, on) {
    const yes = await confirmDialog({ title: `Remove ${name} from the daemon?`,
      body: `It is removed for every agent on this daemon, not only ${tc.name}. Agents that enable it keep its name `
        + "in their settings: their runs leave it out, and saving such an agent is refused until the name is disabled."
        + (on ? ` ${tc.name} enables it: it stays listed here as not installed until you disable it.` : ""),
      confirm: "Remove skill" });
    if (!yes) { focusAction(name, "remove"); return; }
    rowErrors.delete(name);
    try {
      await del(path`/v1/skills/${name}`);
      open.delete(name);
      toast(`${name} removed from the daemon`, "ok");
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      if (!(e instanceof ApiError && e.status === 404)) rowErrors.set(name, e);
    }
    await load();
    if (!focusAction(name, rowErrors.has(name) ? "remove" : "enable")) file.focus();
  }

  function focusAction(name, action) {
    for (const el of box.querySelectorAll(`[data-action="${action}"]`)) {
      if (el.closest("[data-skill]").dataset.skill === name) { el.focus(); return true; }
    }
    return false;
  }

  // -- installing -------------------------------------------------------------------------------

  function say(...children) { result.replaceChildren(...children); }

  async function send(chosen, replace) {
    if (chosen.size > MAX_ARCHIVE) {
      say(h("div.error-box", { role: "alert" }, h("strong", "Not installed: "),
        `${chosen.name} is ${fmtBytes(chosen.size)}; the daemon takes archives of at most ${fmtBytes(MAX_ARCHIVE)}.`));
      return;
    }
    install.disabled = true;
    say(h("p.hint", { role: "status" }, `Installing ${chosen.name}…`));
    try {
      const data = await chosen.arrayBuffer();
      const skill = await postRaw("/v1/skills", data, archiveType(chosen.name), { query: replace ? { replace: "true" } : undefined });
      say(h("p.ok-note", { role: "status" }, `${replace ? "Replaced" : "Installed"} `, h("strong", skill.name),
        ` (${fmtInt(skill.files.length)} file${skill.files.length === 1 ? "" : "s"}, ${fmtBytes(skill.size)}).`));
      file.value = "";
      if (open.has(skill.name)) open.delete(skill.name);
      rowErrors.delete(skill.name);
      await load();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) { say(); return; }
      if (e instanceof ApiError && e.status === 409 && e.code === "skill_exists" && !replace) {
        const again = h("button", { type: "button" }, "Replace");
        again.addEventListener("click", async () => {
          const yes = await confirmDialog({ title: "Replace the installed skill?",
            body: `The skill in ${chosen.name} replaces the installed one of the same name, for every agent on this daemon `
              + "that enables it (from their next run).", confirm: "Replace skill" });
          if (yes) send(chosen, true); else again.focus();
        });
        // The daemon's message ends in API advice ("install with replace=true"): Replace is that.
        say(h("div.warn-box", { role: "alert" }, h("strong", "Already installed: "), `${e.message.split(":")[0]}. `,
          `Replace it with ${chosen.name}? `, again));
        again.focus();
        return;
      }
      const what = e instanceof ApiError && e.status === 413 ? "Too large: "
        : e instanceof ApiError && e.status === 403 ? "Not allowed: " : "Not installed: ";
      say(h("div.error-box", { role: "alert" }, h("strong", what), refusal(e)));
    } finally {
      install.disabled = false;
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const chosen = file.files && file.files[0];
    if (!chosen) {
      say(h("p.field-error", { role: "alert" }, "Choose a .zip, .tar.gz or .tgz archive first."));
      file.focus();
      return;
    }
    send(chosen, false);
  });
  file.addEventListener("change", () => say());

  async function load() {
    try {
      installed = (await get("/v1/skills")).skills;
      draw();
    } catch (e) {
      if (!refused(e, tc)) box.replaceChildren(errorBox(e, "Could not list the skills"));
    }
  }
  load();
  return { onAgent: draw, onGone: draw };
}
