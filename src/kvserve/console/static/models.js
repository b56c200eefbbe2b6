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

function comparison(rollout) {
  // the judge's last window: A (baseline) against B (candidate), as the gateway measured them
  const w = rollout.window;
  if (!w) return el("p", { class: "muted" }, "No window judged yet.");
  const rate = (v) => (v.requests ? `${((v.errors / v.requests) * 100).toFixed(1)}%` : "–");
  const ms = (s) => (s === null || s === undefined ? "–" : `${Math.round(s * 1000)} ms`);
  const row = (name, v) => el("tr", {}, el("td", {}, name), el("td", {}, String(v.requests)), el("td", { class: "error-rate" }, rate(v)),
    el("td", { class: "ttft" }, ms(v.ttft_p95_s)), el("td", {}, ms(v.tpot_p95_s)));
  return el("table", { class: "grid comparison" },
    el("tr", {}, ...["version", "requests", "error rate", "TTFT p95", "TPOT p95"].map((h) => el("th", {}, h))),
    row(`A ${rollout.from}`, w.baseline), row(`B ${rollout.to}`, w.candidate));
}

function rolloutBlock(rollout) {
  const model = rollout.model;
  const action = (verb) => el("button", { type: "button", class: "quiet", onclick: () => rolloutAction(model, verb) }, verb);
  const phase = rollout.phase || (rollout.state && rollout.state.phase) || "?";
  const cls = phase === "running" || phase === "promoted" ? "ok" : phase === "rolled_back" ? "bad" : "warn";
  const decision = rollout.last_decision ? `${rollout.last_decision.action}: ${rollout.last_decision.reason}` : "–";
  return el("div", { class: "panel", "data-rollout": model },
    el("h3", {}, `${model}: ${rollout.from} → ${rollout.to} `, el("span", { class: `badge ${cls} phase` }, phase)),
    el("div", { class: "muted" }, `step ${rollout.step ?? "–"} of ${(rollout.steps || []).length} · B at `
      + `${fmt(rollout.candidate_percent, 0)}% · step running ${fmt(rollout.step_elapsed_s, 0)} s of ${rollout.bake_s} s`),
    comparison(rollout),
    el("p", {}, "Last decision: ", el("span", { class: "decision" }, decision)),
    el("details", {}, el("summary", {}, "Events"), el("pre", {}, JSON.stringify(rollout.events || [], null, 2))),
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
