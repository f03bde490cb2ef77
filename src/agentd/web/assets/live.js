// Server-sent events over fetch, so the token goes in a header (EventSource cannot
// send one, and a token in the URL would land in logs). Reconnects with backoff and
// resumes with Last-Event-ID: a dropped connection or a daemon restart loses nothing.

import { ApiError, headers, unauthorized } from "./api.js";

const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 5000;

// Parse "event: x\nid: y\ndata: z\n\n" blocks out of a growing text buffer.
function* frames(buffer) {
  let start = 0;
  for (;;) {
    const end = buffer.text.indexOf("\n\n", start);
    if (end < 0) break;
    const block = buffer.text.slice(start, end);
    start = end + 2;
    const frame = { event: "message", id: null, data: "" };
    const data = [];
    let any = false;
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") frame.event = value;
      else if (field === "id") frame.id = value;
      else if (field === "data") data.push(value);
      else continue;
      any = true;
    }
    if (!any) continue;
    frame.data = data.join("\n");
    yield frame;
  }
  buffer.text = buffer.text.slice(start);
}

// follow(url, {onEvent(frame, data), onState(state, detail), lastEventId, accept})
// -> {close()}. States: "connecting", "live", "reconnecting" (detail: error text),
// "closed" (by close()), "ended" (the server ended the stream: a run's stream, say),
// "refused" (a 4xx: detail is {status, body}); a 4xx is not retried.
export function follow(url, { onEvent, onState = () => {}, lastEventId = null,
                              reconnect = true } = {}) {
  let closed = false;
  let controller = null;
  let last = lastEventId;
  let backoff = MIN_BACKOFF_MS;

  async function once() {
    controller = new AbortController();
    const h = headers({ Accept: "text/event-stream" });
    if (last) h["Last-Event-ID"] = last;
    onState("connecting");
    const response = await fetch(url, { headers: h, signal: controller.signal, cache: "no-store" });
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch { body = null; }
      return { status: response.status, body };
    }
    onState("live");
    backoff = MIN_BACKOFF_MS;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const buffer = { text: "" };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return { ended: true };
      buffer.text += value.replace(/\r\n?/g, "\n");
      for (const frame of frames(buffer)) {
        if (frame.id) last = frame.id;
        let data = null;
        try { data = frame.data ? JSON.parse(frame.data) : null; } catch { data = frame.data; }
        onEvent(frame, data);
      }
    }
  }

  (async () => {
    while (!closed) {
      let outcome;
      try {
        outcome = await once();
      } catch (e) {
        if (closed) break;
        outcome = { error: String((e && e.message) || e) };
      }
      if (closed) break;
      if (outcome.status && outcome.status >= 400 && outcome.status < 500) {
        onState("refused", outcome);
        // Same path as every other 401: the app signs out and says why.
        if (outcome.status === 401) unauthorized(new ApiError(401, outcome.body));
        return;
      }
      if (outcome.ended && !reconnect) { onState("ended"); return; }
      onState("reconnecting", outcome.error || (outcome.status ? `HTTP ${outcome.status}` : "stream ended"));
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
    }
  })();

  return {
    close() {
      closed = true;
      onState("closed");
      if (controller) controller.abort();
    },
    get lastEventId() { return last; },
  };
}
