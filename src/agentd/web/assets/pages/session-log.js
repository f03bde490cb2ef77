// The part of a session's log the page holds: a window of events, contiguous by seq
// (the tail first, older pages prepended, live events appended), which of them a
// restore archived, and the session's runs as the log tells them.

// Kinds that end a run, and the run status each means.
export const TERMINAL = {
  "run.completed": "completed", "run.failed": "failed",
  "run.cancelled": "cancelled", "run.interrupted": "interrupted",
};

// The seqs of `events` (a contiguous, ordered run of a session's log ending anywhere)
// that a later restore archived. The same rule as the daemon's live_events: a
// session.restored at seq R with to_seq T makes the state what it was at T; every
// event between T and R leaves the state, and events after T that were archived by an
// earlier restore come back. Whether an event is live depends only on the restores
// after it, all of which are in a window that reaches the end of the log, so a window
// suffices; before its first seq the state is (as far as this window is concerned)
// empty.
export function archivedSeqs(events) {
  const targets = new Set();
  for (const e of events) {
    if (e.kind === "session.restored") targets.add(Number(e.data && e.data.to_seq));
  }
  const archived = new Set();
  if (!targets.size) return archived;
  const states = new Map();
  let live = [];
  const first = events.length ? events[0].seq : 0;
  for (const e of events) {
    if (e.kind === "session.restored") {
      const to = Number(e.data && e.data.to_seq);
      live = to < first ? [] : (states.get(to) || []).slice();
    }
    live.push(e.seq);
    if (targets.has(e.seq)) states.set(e.seq, live.slice());
  }
  const kept = new Set(live);
  for (const e of events) if (!kept.has(e.seq)) archived.add(e.seq);
  return archived;
}

export function createLog() {
  const events = [];
  let archived = new Set();
  const runs = new Map(); // run_id -> {id, status, steps, approval}

  function track(e) {
    const id = e.run_id;
    if (!id) return;
    const run = runs.get(id) || { id, status: "queued", step: 0, approval: null, since: e.at };
    if (e.kind === "run.queued") run.status = "queued";
    else if (e.kind === "run.started") run.status = "running";
    // A run taken over after a restart may still wait for its decision.
    else if (e.kind === "run.resumed" && run.status !== "waiting_approval") run.status = "running";
    else if (e.kind === "message.assistant") { run.status = "running"; run.step = e.data && e.data.step || run.step; }
    else if (e.kind === "approval.requested") {
      run.status = "waiting_approval";
      run.approval = { id: e.data.approval_id, name: e.data.name, arguments: e.data.arguments,
                       options: e.data.options || [], kind: e.data.kind };
    } else if (e.kind === "approval.decided") { run.status = "running"; run.approval = null; }
    else if (e.kind === "run.waiting") run.waiting = e.data && e.data.reason;
    else if (e.kind === "tool.started" || e.kind === "tool.finished") { run.status = "running"; run.waiting = null; }
    if (TERMINAL[e.kind]) { runs.delete(id); return; }
    runs.set(id, run);
  }

  return {
    events,
    get first() { return events.length ? events[0].seq : null; },
    get last() { return events.length ? events[events.length - 1].seq : 0; },
    isArchived(seq) { return archived.has(seq); },
    // Runs the page knows are not finished, oldest first.
    activeRuns() { return [...runs.values()]; },
    // The API's list of unfinished runs (read before the first page of events).
    seedRuns(list) {
      for (const r of list) {
        runs.set(r.id, { id: r.id, status: r.status, step: r.steps || 0, approval: null, since: r.created_at });
      }
    },
    dropRun(id) { runs.delete(id); },
    // Events newer than the last one held; returns those that were new. A restore
    // among them changes which held events are archived: `restored` says so.
    append(list) {
      const added = [];
      let restored = false;
      for (const e of list) {
        if (!e || typeof e.seq !== "number" || e.seq <= this.last) continue;
        events.push(e);
        added.push(e);
        track(e);
        if (e.kind === "session.restored") restored = true;
      }
      if (restored) archived = archivedSeqs(events);
      return { added, restored };
    },
    // Older events (contiguous, before the first held).
    prepend(list) {
      const first = this.first;
      const older = first === null ? list : list.filter((e) => e.seq < first);
      if (!older.length) return [];
      events.unshift(...older);
      archived = archivedSeqs(events);
      return older;
    },
    // For the run timeline and chat: every held event after an unknown gap restarts.
    clear() { events.length = 0; archived = new Set(); runs.clear(); },
  };
}

// What the chat shows of an event, or null: the conversation and what interrupts it.
export function chatKind(e) {
  switch (e.kind) {
    case "message.user": return "user";
    case "message.assistant":
      if (e.data && e.data.silent) return null;
      if (e.data && e.data.text) return "assistant";
      return e.data && e.data.tool_calls && e.data.tool_calls.length ? "tools" : null;
    case "message.proactive": return "proactive";
    case "message.added": return e.data && e.data.role === "user" ? "user" : "added";
    case "session.restored": case "session.forked": case "session.compacted":
    case "run.failed": case "run.cancelled": case "run.interrupted":
    case "approval.requested": case "approval.decided":
      return "note";
    default: return null;
  }
}
