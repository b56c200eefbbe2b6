// Server: one `kvserve serve` process seen through its own /metrics, refreshed every 2 s.

import { api, parseMetrics } from "./api.js";
import { clear, el, fmt, meter, showError, sparkline } from "./dom.js";

const series = [];
let previous = null;

export async function refreshServer() {
  let m;
  try {
    m = parseMetrics(await api("/metrics"));
  } catch (error) {
    showError("server-error", error);
    return;
  }
  showError("server-error", null);
  const now = performance.now();
  const tokens = m["vllm:generation_tokens_total"] || 0;
  if (previous) series.push(Math.max(0, (tokens - previous.tokens) / ((now - previous.at) / 1000)));
  previous = { tokens, at: now };
  series.splice(0, Math.max(0, series.length - 30));
  const queries = m["vllm:prefix_cache_queries_total"] || 0;
  const rows = [
    ["running requests", fmt(m["vllm:num_requests_running"], 0)],
    ["waiting requests", fmt(m["vllm:num_requests_waiting"], 0)],
    ["KV cache", meter(m["vllm:kv_cache_usage_perc"])],
    ["prefix-cache hit rate", queries ? `${((m["vllm:prefix_cache_hits_total"] / queries) * 100).toFixed(0)}%` : "–"],
    ["output tokens/s", el("span", {}, sparkline(series.length ? series : [0]), ` ${fmt(series[series.length - 1] ?? null)}`)],
    ["requests finished", fmt(m["vllm:request_success_total"], 0)],
    ["preemptions", fmt(m["vllm:num_preemptions_total"], 0)],
  ];
  const table = el("table", { class: "grid" }, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
  clear(document.getElementById("server")).append(table);
  document.getElementById("server-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}
