// Models and rollouts: versions with their traffic weights, and the rollouts moving them.

import { adminApi } from "./admin.js";
import { clear, el, fmt, showError } from "./dom.js";

const $ = (id) => document.getElementById(id);

async function setWeights(model, inputs) {
  const weights = Object.fromEntries(inputs.map((i) => [i.dataset.version, Number(i.value)]));
  try {
    await adminApi("/admin/weights", { method: "POST", body: { model, weights } });
    showError("models-error", null);
    await refreshModels();
  } catch (error) {
    showError("models-error", error);
  }
}

function modelBlock(name, model) {
  const inputs = Object.entries(model.versions).map(([version, route]) =>
    el("input", { type: "number", min: "0", step: "1", value: route.weight, "data-version": version }));
  const table = el("table", { class: "grid", "data-model": name },
    el("tr", {}, ...["version", "upstream model", "replicas", "policy", "weight"].map((h) => el("th", {}, h))),
    Object.entries(model.versions).map(([version, route], i) => el("tr", {},
      el("td", {}, version), el("td", {}, route.upstream_model || "–"), el("td", {}, String(route.pool.endpoints.length)),
      el("td", {}, route.pool.policy), el("td", {}, inputs[i]))));
  return [el("h3", {}, name), table,
    el("button", { type: "button", class: "quiet", onclick: () => setWeights(name, inputs) }, "Set weights")];
}

function rolloutBlock(rollout) {
  const model = rollout.model;
  const action = (verb) => el("button", { type: "button", class: "quiet", onclick: () => rolloutAction(model, verb) }, verb);
  const rows = Object.entries(rollout).filter(([, v]) => v === null || typeof v !== "object");
  const nested = Object.entries(rollout).filter(([, v]) => v !== null && typeof v === "object");
  return el("div", { class: "panel", "data-rollout": model },
    el("h3", {}, `${model}: ${rollout.from ?? rollout.from_version ?? "?"} → ${rollout.to ?? rollout.to_version ?? "?"}`),
    el("table", { class: "grid" }, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, typeof v === "number" ? fmt(v, 3) : String(v))))),
    nested.map(([k, v]) => el("details", {}, el("summary", {}, k), el("pre", {}, JSON.stringify(v, null, 2)))),
    el("div", { class: "row" }, action("pause"), action("resume"), action("abort")));
}

async function rolloutAction(model, verb) {
  try {
    await adminApi(`/admin/rollouts/${encodeURIComponent(model)}/${verb}`, { method: "POST", body: {} });
    await refreshRollouts();
  } catch (error) {
    showError("rollouts-error", error);
  }
}

export async function refreshModels() {
  try {
    const state = await adminApi("/admin/state");
    showError("models-error", null);
    const root = clear($("models"));
    for (const [name, model] of Object.entries(state.models)) root.append(...modelBlock(name, model));
  } catch (error) {
    showError("models-error", error);
  }
}

export async function refreshRollouts() {
  try {
    const body = await adminApi("/admin/rollouts");
    showError("rollouts-error", null);
    const list = Array.isArray(body) ? body : body.data || [];
    const root = clear($("rollouts"));
    if (!list.length) root.append(el("p", { class: "muted" }, "No rollouts."));
    for (const rollout of list) root.append(rolloutBlock(rollout));
  } catch (error) {
    showError("rollouts-error", error.status === 404 ? new Error("this gateway has no rollout API") : error);
  }
}

async function start(event) {
  event.preventDefault();
  const body = {
    model: $("rollout-model").value.trim(), from: $("rollout-from").value.trim(), to: $("rollout-to").value.trim(),
    steps: $("rollout-steps").value.split(",").map(Number).filter((s) => s > 0), bake_s: Number($("rollout-bake").value),
  };
  try {
    await adminApi("/admin/rollouts", { method: "POST", body });
    await refreshRollouts();
  } catch (error) {
    showError("rollouts-error", error);
  }
}

export function initModels() {
  $("rollout-form").addEventListener("submit", start);
}
