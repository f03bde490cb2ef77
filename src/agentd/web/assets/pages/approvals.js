// The approvals inbox: every tool call waiting for a person, across agents. Approve,
// approve with edited arguments, deny with a reason, remember the decision as a rule;
// a call of unknown outcome is retried, skipped or failed. Live: a request appears
// when it is made, and leaves when anyone decides it (here, in another tab, the CLI)
// or its run ends.

import { ApiError, get, path, post } from "../api.js";
import { feedState, onFeed, onFeedState, refreshApprovalCount } from "../nav.js";
import { clear, errorBox, h, pill, relTime, toast, visible, visibleJson } from "../ui.js";

export const title = "Approvals";

// The arguments as JSON with every invisible or bidi character written as an escape
// (\u202e): the card reads as what the call does, and the editor parses back to it.
function pretty(value) {
  return visibleJson(value, 2);
}

// "in 4m", "in 2h", "now": when a request expires (then its run is told "denied").
function until(epochS) {
  const s = Math.round(epochS - Date.now() / 1000);
  if (s <= 5) return "now";
  if (s < 60) return `in ${s}s`;
  if (s < 3600) return `in ${Math.round(s / 60)}m`;
  if (s < 86400) return `in ${Math.round(s / 3600)}h`;
  return `in ${Math.round(s / 86400)}d`;
}

function when(epochS) {
  return epochS ? new Date(epochS * 1000).toISOString() : null;
}

export async function render(root, _params, ctx) {
  const cards = new Map(); // approval_id -> {el, approval}
  const list = h("div.ap-list", { "aria-live": "polite" });
  const count = h("span.ap-count.muted");
  const filter = h("input#ap-filter", { type: "search", placeholder: "Filter by agent, session or tool  ( / )",
    "aria-label": "Filter approvals", "data-search": "" });
  const empty = h("div.ap-empty", { hidden: true },
    h("p.ap-empty-title", "Nothing is waiting for a decision."),
    h("p.muted", "Tool calls your policies ask about appear here as they are made."));
  const page = h("section.page.approvals-page",
    h("div.page-head", h("h1", "Approvals"), count, h("div.actions", filter)),
    empty, list);
  root.append(page);
  let closed = false;

  function update() {
    const n = cards.size;
    count.textContent = n === 1 ? "1 waiting" : `${n} waiting`;
    empty.hidden = n > 0;
    applyFilter();
  }
  function applyFilter() {
    const q = filter.value.trim().toLowerCase();
    for (const { el, approval: a } of cards.values()) {
      el.hidden = Boolean(q) && ![a.agent, a.session, a.name, a.run_id].some((s) => String(s).toLowerCase().includes(q));
    }
  }
  filter.addEventListener("input", applyFilter);

  function remove(id) {
    const card = cards.get(id);
    if (!card) return;
    cards.delete(id);
    card.el.remove();
    update();
  }

  function add(a) {
    if (cards.has(a.approval_id)) return;
    const el = card(a);
    cards.set(a.approval_id, { el, approval: a });
    // Oldest first, as the API lists them.
    const after = [...list.children].find((c) => Number(c.dataset.requested) > a.requested_at);
    list.insertBefore(el, after || null);
    update();
  }

  async function decide(a, body, errorEl, buttons) {
    errorEl.hidden = true;
    for (const b of buttons) b.disabled = true;
    try {
      await post(path`/v1/approvals/${a.approval_id}`, body);
      remove(a.approval_id);
      refreshApprovalCount();
      const verb = { approve: "Approved", deny: "Denied", retry: "Retrying", skip: "Skipped", fail: "Failed" }[body.action];
      toast(`${verb}: ${a.name} for ${a.agent}`, "ok");
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.code === "approval_not_found") {
        remove(a.approval_id);
        toast("That request was already decided (or it expired).", "info");
        return false;
      }
      errorEl.hidden = false;
      const fields = e instanceof ApiError ? e.fieldErrors() : {};
      errorEl.textContent = visible(Object.keys(fields).length
        ? Object.entries(fields).map(([f, m]) => `${f.replace(/^body\./, "")}: ${m}`).join("; ")
        : e.message);
      return false;
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  function card(a) {
    const id = a.approval_id;
    const errorEl = h("p.field-error", { role: "alert", hidden: true, id: `ap-error-${id}` });
    const policy = a.policy || {};
    const expires = when(a.expires_at);
    const head = h("div.ap-head",
      h("code.tool.ap-tool", a.name),
      a.kind === "unknown_outcome" ? pill("warn", "unknown outcome") : pill("ask", "asks"),
      h("span.ap-where",
        h("a", { href: ctx.agentHref(a.agent) }, a.agent), " › ",
        h("a.mono", { href: ctx.sessionHref(a.agent, a.session) }, a.session)),
      h("span.muted.ap-time", { title: when(a.requested_at) }, relTime(when(a.requested_at))),
      expires ? h("span.muted.ap-expires", { title: expires }, `expires ${until(a.expires_at)}`) : null);
    const why = h("div.ap-why",
      a.reason ? h("p", a.reason) : null,
      policy.rule || policy.categories || policy.tainted ? h("div.verdict",
        policy.rule ? h("code", policy.rule) : null,
        (policy.categories || []).map((c) => pill("warn", c)),
        policy.tainted ? h("span.pill.pill-taint", `tainted: ${policy.tainted}`) : null) : null);
    const args = h("pre.ap-args", { "aria-label": "Arguments" }, pretty(a.arguments ?? {}));
    const el = h("article.ap-card", { id: `ap-${id}`, dataset: { approvalId: id, requested: String(a.requested_at), run: a.run_id } },
      head, why, h("div.ap-label", "Arguments"), args);

    if (a.kind === "unknown_outcome") {
      const output = h("textarea", { rows: "3", "aria-label": "Output to give the model", placeholder: "the result the model is given" });
      const retry = h("button.primary", { type: "button" }, "Retry");
      const skip = h("button", { type: "button" }, "Skip with this output");
      const fail = h("button.danger", { type: "button" }, "Fail the run");
      const buttons = [retry, skip, fail];
      retry.addEventListener("click", () => decide(a, { action: "retry" }, errorEl, buttons));
      skip.addEventListener("click", () => decide(a, { action: "skip", output: output.value }, errorEl, buttons));
      fail.addEventListener("click", () => decide(a, { action: "fail" }, errorEl, buttons));
      el.append(h("p.muted", "The daemon stopped while this call ran; whether it took effect is unknown."),
        output, h("div.ap-actions", ...buttons), errorEl);
      return el;
    }

    const remember = h("select.ap-remember", { "aria-label": "Remember" },
      h("option", { value: "" }, "Just this once"),
      h("option", { value: "arguments" }, "Remember for these arguments"),
      h("option", { value: "tool" }, "Always deny this tool"));
    const approve = h("button.primary.ap-approve", { type: "button" }, "Approve");
    const edit = h("button.ap-edit", { type: "button", "aria-expanded": "false" }, "Edit arguments");
    const deny = h("button.danger.ap-deny", { type: "button", "aria-expanded": "false" }, "Deny…");
    const rememberHint = h("span.hint.ap-hint", { hidden: true }, "A rule for the whole tool can only deny.");

    // Editing: the arguments as JSON text; bad JSON is said beside it, and so is the
    // API's 422 when the arguments do not fit the tool's schema.
    const editor = h("textarea.ap-editor", { rows: "6", spellcheck: "false", "aria-label": "Edited arguments (JSON)",
      "aria-describedby": `ap-json-${id}` });
    const jsonError = h("p.field-error", { id: `ap-json-${id}`, role: "alert", hidden: true });
    const approveEdited = h("button.primary.ap-approve-edited", { type: "button" }, "Approve with these arguments");
    const cancelEdit = h("button.ghost", { type: "button" }, "Cancel");
    const editPanel = h("div.ap-panel.ap-edit-panel", { hidden: true },
      h("label", "Arguments to run the call with (JSON)"), editor, jsonError, h("div.ap-actions", approveEdited, cancelEdit));

    const reason = h("textarea.ap-reason", { rows: "2", maxlength: "2000", "aria-label": "Reason for denying",
      placeholder: "Why (the model reads it)" });
    const confirmDeny = h("button.danger.ap-confirm-deny", { type: "button" }, "Deny");
    const cancelDeny = h("button.ghost", { type: "button" }, "Cancel");
    const denyPanel = h("div.ap-panel.ap-deny-panel", { hidden: true },
      h("label", "Reason"), reason, h("div.ap-actions", confirmDeny, cancelDeny));

    const buttons = [approve, edit, deny, approveEdited, confirmDeny];
    const rememberValue = () => remember.value || undefined;
    remember.addEventListener("change", () => {
      const toolWide = remember.value === "tool";
      approve.disabled = toolWide;
      approveEdited.disabled = toolWide;
      rememberHint.hidden = !toolWide;
    });
    approve.addEventListener("click", () => decide(a, { action: "approve", remember: rememberValue() }, errorEl, buttons));
    edit.addEventListener("click", () => {
      const open = editPanel.hidden;
      editPanel.hidden = !open;
      denyPanel.hidden = true;
      edit.setAttribute("aria-expanded", String(open));
      if (open) {
        if (!editor.value) editor.value = pretty(a.arguments ?? {});
        editor.focus();
      }
    });
    cancelEdit.addEventListener("click", () => { editPanel.hidden = true; edit.setAttribute("aria-expanded", "false"); });
    approveEdited.addEventListener("click", async () => {
      jsonError.hidden = true;
      editor.removeAttribute("aria-invalid");
      let parsed;
      try {
        parsed = JSON.parse(editor.value);
      } catch (e) {
        jsonError.hidden = false;
        jsonError.textContent = `Not JSON: ${e.message}`;
        editor.setAttribute("aria-invalid", "true");
        editor.focus();
        return;
      }
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
        jsonError.hidden = false;
        jsonError.textContent = "The arguments must be a JSON object ({...}).";
        editor.setAttribute("aria-invalid", "true");
        return;
      }
      const ok = await decide(a, { action: "approve", arguments: parsed, remember: rememberValue() }, jsonError, buttons);
      if (!ok && !jsonError.hidden) editor.setAttribute("aria-invalid", "true");
    });
    deny.addEventListener("click", () => {
      const open = denyPanel.hidden;
      denyPanel.hidden = !open;
      editPanel.hidden = true;
      deny.setAttribute("aria-expanded", String(open));
      if (open) reason.focus();
    });
    cancelDeny.addEventListener("click", () => { denyPanel.hidden = true; deny.setAttribute("aria-expanded", "false"); });
    confirmDeny.addEventListener("click", () => decide(a, {
      action: "deny", reason: reason.value.trim() || undefined, remember: rememberValue() }, errorEl, buttons));
    reason.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) confirmDeny.click();
    });
    editor.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) approveEdited.click();
    });

    el.append(h("div.ap-actions", approve, edit, deny, h("span.ap-spacer"), remember, rememberHint),
      errorEl, editPanel, denyPanel);
    return el;
  }

  async function load() {
    let found;
    try {
      found = (await get("/v1/approvals")).approvals;
    } catch (e) {
      if (closed) return;
      clear(list).append(errorBox(e, "The approvals could not be read"));
      return;
    }
    if (closed) return;
    const ids = new Set(found.map((a) => a.approval_id));
    for (const id of [...cards.keys()]) if (!ids.has(id)) remove(id);
    for (const a of found) add(a);
    update();
  }

  async function fetchOne(id) {
    try {
      add(await get(path`/v1/approvals/${id}`));
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) console.error(e);
    }
  }

  const offFeed = onFeed((frame, data) => {
    if (closed) return;
    if (frame.event === "lagged") { load(); return; }
    if (!data || !data.data) return;
    if (frame.event === "approval.requested") fetchOne(data.data.approval_id);
    else if (frame.event === "approval.decided") remove(data.data.approval_id);
    else if (["run.completed", "run.failed", "run.cancelled", "run.interrupted"].includes(frame.event)) {
      for (const [id, c] of [...cards]) if (c.approval.run_id === data.run_id) remove(id);
    }
  });
  // The feed has no replay: when it is live again, what was decided or asked while it
  // was away is read again.
  const offState = onFeedState((state) => {
    ctx.connection(state === "live" ? "live" : state === "reconnecting" ? "reconnecting" : "");
    if (state === "live") load();
  });
  if (feedState() === "live") ctx.connection("live");

  await load();

  // Relative times drift; redraw them once a minute.
  const tick = setInterval(() => {
    for (const { el, approval: a } of cards.values()) {
      const t = el.querySelector(".ap-time");
      if (t) t.textContent = relTime(when(a.requested_at));
      const x = el.querySelector(".ap-expires");
      if (x && a.expires_at) x.textContent = `expires ${until(a.expires_at)}`;
    }
  }, 60_000);

  return () => {
    closed = true;
    offFeed();
    offState();
    clearInterval(tick);
  };
}
