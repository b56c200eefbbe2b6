// Talking to the server or gateway. Keys live in this tab's sessionStorage and travel in
// the Authorization header only: never in a URL, a cookie or a log line.

const STORE = window.sessionStorage;

export const keys = {
  get tenant() { return STORE.getItem("kvserve.tenantKey") || ""; },
  set tenant(v) { v ? STORE.setItem("kvserve.tenantKey", v) : STORE.removeItem("kvserve.tenantKey"); },
  get admin() { return STORE.getItem("kvserve.adminKey") || ""; },
  set admin(v) { v ? STORE.setItem("kvserve.adminKey", v) : STORE.removeItem("kvserve.adminKey"); },
};

export class ApiError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}

function headers(key, json) {
  const h = {};
  if (key) h.Authorization = `Bearer ${key}`;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error) { message = body.error.message || message; code = body.error.code || null; }
  } catch (_) { /* not JSON */ }
  return new ApiError(response.status, message, code);
}

export async function api(path, { method = "GET", body, admin = false } = {}) {
  const response = await fetch(path, {
    method, headers: headers(admin ? keys.admin : keys.tenant, body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store", credentials: "omit",
  });
  if (!response.ok) throw await errorOf(response);
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

// POST a streaming chat request; calls onChunk(parsedJson) per SSE data event.
export async function streamChat(body, onChunk, signal) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(keys.tenant, true), body: JSON.stringify(body), signal,
    cache: "no-store", credentials: "omit",
  });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    const events = pending.split(/\r?\n\r?\n/);
    pending = events.pop();
    for (const event of events) {
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(500, chunk.error.message || "stream failed", chunk.error.code);
      onChunk(chunk);
    }
  }
}

// Prometheus text -> {name: summed value} (labels dropped).
export function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (m) out[m[1]] = (out[m[1]] || 0) + Number(m[3]);
  }
  return out;
}
