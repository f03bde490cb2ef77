// The header's approvals count, kept current from the API and the live activity feed
// (GET /v1/events). Pages may listen to the same feed (onFeed, onFeedState) rather
// than open another stream: a browser has few connections per host to spare.

import { get, token } from "./api.js";
import { follow } from "./live.js";
import { debounce } from "./ui.js";

const listeners = new Set();
const stateListeners = new Set();
let stream = null;
let state = "";

// fn(frame, data) for each frame of the feed: frame.event is the event kind (or
// "lagged"), data the Event with "agent" and "session"; or, for a change to an agent
// (frame.event "agent.created", "agent.updated", "agent.state", "agent.deleted"),
// data is {agent, state, updated_at}, with no session.
export function onFeed(fn) { listeners.add(fn); return () => listeners.delete(fn); }
// fn(state) when the feed connects ("live"), drops ("reconnecting") or stops. The
// feed has no replay: a listener reads again what it shows when it is live again.
export function onFeedState(fn) { stateListeners.add(fn); return () => stateListeners.delete(fn); }
export function feedState() { return state; }

function show(n) {
  const el = document.getElementById("nav-approvals");
  if (!el) return;
  el.hidden = !n;
  el.textContent = n ? String(n) : "";
  el.title = n ? `${n} waiting for a decision` : "";
  el.setAttribute("aria-label", n ? `${n} waiting` : "none waiting");
}

async function count() {
  try {
    const { approvals } = await get("/v1/approvals");
    if (stream) show(approvals.length);
  } catch {
    // A refused token signs out (api.js); anything else: the count stays as it was.
  }
}
// Decisions come in bursts (an inbox cleared, a run cancelled): count once after.
export const refreshApprovalCount = debounce(count, 150);

const COUNTED = new Set(["approval.requested", "approval.decided", "run.completed", "run.failed",
  "run.cancelled", "run.interrupted", "lagged"]);

function start() {
  if (stream) return;
  stream = follow("/v1/events", {
    onEvent(frame, data) {
      if (COUNTED.has(frame.event)) refreshApprovalCount();
      for (const fn of listeners) {
        try { fn(frame, data); } catch (e) { console.error(e); }
      }
    },
    onState(next) {
      state = next;
      if (next === "live") refreshApprovalCount();
      for (const fn of stateListeners) {
        try { fn(next); } catch (e) { console.error(e); }
      }
    },
  });
  count();
}

function stop() {
  if (!stream) return;
  stream.close();
  stream = null;
  show(0);
}

function sync() {
  if (token.get() && location.hash !== "#/signin") start();
  else stop();
}

window.addEventListener("hashchange", sync);
sync();
