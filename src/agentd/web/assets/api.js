// The console's one way to the daemon: the public HTTP API with the signed-in token.
// The token lives in sessionStorage (this tab only, gone when it closes) and travels
// only in the Authorization header, never in a URL.

const KEY = "agentd.token";

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || (status === 0 ? "network" : "http_" + status);
    this.retryable = Boolean(err.retryable);
    this.details = err.details || {};
  }
  // {field: message} from a 422's details.errors ("body.settings.max_steps" -> ...).
  fieldErrors() {
    const out = {};
    for (const e of this.details.errors || []) {
      if (e && e.field) out[e.field] = e.message;
    }
    return out;
  }
}

export const token = {
  get() { return sessionStorage.getItem(KEY); },
  set(value) { sessionStorage.setItem(KEY, value); },
  clear() { sessionStorage.removeItem(KEY); },
};

// Listeners told when the daemon refuses the token (401): the app signs out.
const refused = new Set();
export function onUnauthorized(fn) { refused.add(fn); return () => refused.delete(fn); }
export function unauthorized(error) { for (const fn of refused) fn(error); }

export function headers(extra = {}) {
  const t = token.get();
  return t ? { Authorization: `Bearer ${t}`, ...extra } : { ...extra };
}

// Path segments are encoded here: agent names and session keys are the user's.
export function path(strings, ...values) {
  let out = strings[0];
  values.forEach((v, i) => { out += encodeURIComponent(String(v)) + strings[i + 1]; });
  return out;
}

// api("GET", "/v1/agents") -> parsed JSON (null for 204); throws ApiError. body is sent as
// JSON; or raw: {data, type} sends bytes as they are (an ArrayBuffer, a Blob) with that
// Content-Type (a skill's archive).
export async function api(method, url, body, { signal, query, raw } = {}) {
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
    }
    const s = q.toString();
    if (s) url += (url.includes("?") ? "&" : "?") + s;
  }
  const init = { method, headers: headers({ Accept: "application/json" }), signal };
  if (raw) {
    init.body = raw.data;
    init.headers["Content-Type"] = raw.type || "application/octet-stream";
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, { error: { message: "The daemon cannot be reached.", retryable: true } });
  }
  if (response.status === 204) return null;
  let data = null;
  const text = await response.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401) unauthorized(error);
    throw error;
  }
  return data;
}

export const get = (url, opts) => api("GET", url, undefined, opts);
export const post = (url, body, opts) => api("POST", url, body === undefined ? {} : body, opts);
export const postRaw = (url, data, type, opts = {}) => api("POST", url, undefined, { ...opts, raw: { data, type } });
export const patch = (url, body, opts) => api("PATCH", url, body, opts);
export const put = (url, body, opts) => api("PUT", url, body, opts);
export const del = (url, opts) => api("DELETE", url, undefined, opts);
