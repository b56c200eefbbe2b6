// Keys and usage: create and revoke API keys, and watch usage per tenant and key.

import { adminApi } from "./admin.js";
import { clear, el, showError, sparkline, when } from "./dom.js";

const $ = (id) => document.getElementById(id);
const usageSeries = new Map(); // tenant/key -> [total tokens, ...]

async function revoke(keyId) {
  try {
    await adminApi("/admin/keys/revoke", { method: "POST", body: { key_id: keyId } });
    await refreshKeys();
  } catch (error) {
    showError("keys-error", error);
  }
}

export async function refreshKeys() {
  let keys;
  try {
    keys = await adminApi("/admin/keys");
  } catch (error) {
    showError("keys-error", error);
    return;
  }
  showError("keys-error", null);
  const table = clear($("keys-table"));
  table.append(el("tr", {}, ...["key id", "tenant", "name", "models", "requests/min", "tokens/min", "created", "state", ""]
    .map((h) => el("th", {}, h))));
  for (const key of keys.data) {
    table.append(el("tr", { "data-key-id": key.key_id },
      el("td", {}, el("code", {}, key.key_id)), el("td", {}, key.tenant), el("td", {}, key.name),
      el("td", {}, key.models.length ? key.models.join(", ") : "all"),
      el("td", {}, key.limits.requests_per_minute || "–"), el("td", {}, key.limits.tokens_per_minute || "–"),
      el("td", {}, when(key.created)),
      el("td", { class: "state" }, key.revoked ? el("span", { class: "badge bad" }, "revoked") : el("span", { class: "badge ok" }, "active")),
      el("td", {}, key.revoked ? "" : el("button", { class: "quiet", type: "button", onclick: () => revoke(key.key_id) }, "Revoke"))));
  }
}

export async function refreshUsage() {
  let usage;
  try {
    usage = await adminApi("/admin/usage");
  } catch (error) {
    showError("usage-error", error);
    return;
  }
  showError("usage-error", null);
  const table = clear($("usage-table"));
  table.append(el("tr", {}, ...["tenant", "key id", "model", "requests", "prompt tokens", "completion tokens", "cache hits", "tokens over time"]
    .map((h) => el("th", {}, h))));
  for (const row of usage.data) {
    const id = `${row.tenant}/${row.key_id}/${row.model}`;
    const series = [...(usageSeries.get(id) || []), (row.prompt_tokens || 0) + (row.completion_tokens || 0)].slice(-30);
    usageSeries.set(id, series);
    table.append(el("tr", {}, el("td", {}, row.tenant), el("td", {}, el("code", {}, row.key_id)), el("td", {}, row.model),
      el("td", {}, row.requests ?? "–"), el("td", {}, row.prompt_tokens ?? "–"), el("td", {}, row.completion_tokens ?? "–"),
      el("td", {}, row.cache_hits ?? "–"), el("td", {}, sparkline(series))));
  }
  $("usage-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function create(event) {
  event.preventDefault();
  const models = $("key-models").value.split(",").map((m) => m.trim()).filter(Boolean);
  const body = {
    tenant: $("key-tenant").value.trim(), name: $("key-name").value.trim(), models,
    limits: { requests_per_minute: Number($("key-rpm").value) || 0, tokens_per_minute: Number($("key-tpm").value) || 0 },
  };
  try {
    const created = await adminApi("/admin/keys", { method: "POST", body });
    $("new-key-value").textContent = created.key;
    $("new-key").hidden = false;
    showError("keys-error", null);
    await refreshKeys();
  } catch (error) {
    showError("keys-error", error);
  }
}

export function initKeys() {
  $("key-form").addEventListener("submit", create);
}
