// Fleet: every model, version and replica the gateway routes to, refreshed every 2 s from
// the gateway's own view (/admin/state: its health checks, breakers and /metrics scrapes).

import { adminApi } from "./admin.js";
import { clear, el, fmt, meter, showError, sparkline } from "./dom.js";

const HISTORY = 30;
const last = new Map(); // url -> {tokens, at}
const rates = new Map(); // url -> [tokens/s, ...]

function rate(endpoint, now) {
  const seen = last.get(endpoint.url);
  const tokens = endpoint.generation_tokens;
  if (tokens !== null && tokens !== undefined) {
    if (seen && now > seen.at) {
      const series = rates.get(endpoint.url) || [];
      series.push(Math.max(0, (tokens - seen.tokens) / ((now - seen.at) / 1000)));
      rates.set(endpoint.url, series.slice(-HISTORY));
    }
    last.set(endpoint.url, { tokens, at: now });
  }
  return rates.get(endpoint.url) || [];
}

function health(endpoint) {
  if (endpoint.draining) return el("span", { class: "badge warn" }, "draining");
  return endpoint.healthy ? el("span", { class: "badge ok" }, "healthy") : el("span", { class: "badge bad" }, "down");
}

function breaker(state) {
  const cls = state === "closed" ? "ok" : state === "open" ? "bad" : "warn";
  return el("span", { class: `badge ${cls}` }, state);
}

function endpointRow(endpoint, now) {
  const series = rate(endpoint, now);
  const hits = endpoint.prefix_cache_queries ? endpoint.prefix_cache_hits / endpoint.prefix_cache_queries : null;
  return el("tr", { "data-url": endpoint.url },
    el("td", {}, endpoint.url), el("td", { class: "health" }, health(endpoint)),
    el("td", { class: "breaker" }, breaker(endpoint.breaker)),
    el("td", { class: "running" }, fmt(endpoint.running, 0)), el("td", { class: "waiting" }, fmt(endpoint.waiting, 0)),
    el("td", {}, String(endpoint.in_flight)),
    el("td", {}, endpoint.kv_usage === null ? "–" : meter(endpoint.kv_usage)),
    el("td", {}, hits === null ? "–" : `${(hits * 100).toFixed(0)}%`),
    el("td", {}, sparkline(series.length ? series : [0]), ` ${fmt(series[series.length - 1] ?? null)}`));
}

export async function refreshFleet() {
  let state;
  try {
    state = await adminApi("/admin/state");
  } catch (error) {
    showError("fleet-error", error);
    return;
  }
  showError("fleet-error", null);
  const now = performance.now();
  const byUrl = new Map(state.endpoints.map((e) => [e.url, e]));
  const root = clear(document.getElementById("fleet"));
  for (const [name, model] of Object.entries(state.models)) {
    const total = Object.values(model.versions).reduce((s, v) => s + v.weight, 0) || 1;
    root.append(el("h3", {}, name));
    for (const [version, route] of Object.entries(model.versions)) {
      const share = `${((route.weight / total) * 100).toFixed(0)}% of traffic`;
      root.append(el("div", { class: "muted" }, `version ${version} · weight ${route.weight} · ${share} · ${route.pool.policy}`));
      const table = el("table", { class: "grid", "data-model": name, "data-version": version },
        el("tr", {}, ...["replica", "health", "breaker", "running", "waiting", "in flight", "KV cache", "prefix hits", "tokens/s"]
          .map((h) => el("th", {}, h))));
      for (const url of route.pool.endpoints) if (byUrl.has(url)) table.append(endpointRow(byUrl.get(url), now));
      root.append(table);
    }
  }
  document.getElementById("fleet-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}
