// Playground: a chat with any served model, streamed, with per-reply TTFT, speed and usage.

import { api, keys, streamChat } from "./api.js";
import { clear, el, fmt } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);
let history = [];
let running = null; // the AbortController of the reply being streamed

export async function loadModels() {
  const select = $("model");
  const current = select.value;
  try {
    const models = await api("/v1/models");
    clear(select);
    for (const m of models.data) select.append(el("option", { value: m.id }, m.id));
    if (current) select.value = current;
    $("chat-status").textContent = "";
  } catch (error) {
    $("chat-status").textContent = `models: ${error.message}`;
  }
}

function settings() {
  const body = {
    model: $("model").value, stream: true, stream_options: { include_usage: true },
    temperature: Number($("temperature").value), top_p: Number($("top_p").value),
    max_tokens: Number($("max_tokens").value),
  };
  if ($("json_mode").checked) body.response_format = { type: "json_object" };
  const tools = $("tools").value.trim();
  if (tools) {
    const parsed = JSON.parse(tools); // a SyntaxError is shown to the user as is
    if (!Array.isArray(parsed)) throw new Error("tools must be a JSON array");
    body.tools = parsed;
  }
  return body;
}

function messages(prompt) {
  const system = $("system").value.trim();
  return [...(system ? [{ role: "system", content: system }] : []), ...history, { role: "user", content: prompt }];
}

function renderReply(node, reply) {
  clear(node.content);
  if (reply.reasoning) node.content.append(el("details", {}, el("summary", {}, "Reasoning"), reply.reasoning));
  node.content.append(renderMarkdown(reply.content));
  for (const call of reply.toolCalls.filter(Boolean)) {
    node.content.append(el("div", { class: "tool-call" }, `tool call ${call.name || ""}(${call.arguments})`));
  }
}

function replyNode() {
  const content = el("div", { class: "content" });
  const stats = el("div", { class: "stats" });
  const box = el("div", { class: "msg assistant" }, content, stats);
  $("transcript").append(box);
  return { box, content, stats };
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || running) return;
  let body;
  try {
    body = { ...settings(), messages: messages(prompt) };
  } catch (error) {
    $("chat-status").textContent = error.message;
    return;
  }
  $("transcript").append(el("div", { class: "msg user" }, prompt));
  $("prompt").value = "";
  const node = replyNode();
  const reply = { content: "", reasoning: "", toolCalls: [] };
  const started = performance.now();
  let first = null;
  let usage = null;
  running = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  try {
    await streamChat(body, (chunk) => {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const delta = choice.delta || {};
        if (delta.content || delta.reasoning_content || delta.tool_calls) first = first ?? performance.now();
        reply.content += delta.content || "";
        reply.reasoning += delta.reasoning_content || "";
        for (const call of delta.tool_calls || []) {
          const slot = (reply.toolCalls[call.index ?? 0] ||= { name: "", arguments: "" });
          slot.name += (call.function && call.function.name) || "";
          slot.arguments += (call.function && call.function.arguments) || "";
        }
      }
      renderReply(node, reply);
      $("transcript").scrollTop = $("transcript").scrollHeight;
    }, running.signal);
    const end = performance.now();
    const tokens = usage ? usage.completion_tokens : null;
    const decode = first !== null && tokens > 1 ? (tokens - 1) / ((end - first) / 1000) : null;
    node.stats.textContent = `TTFT ${first === null ? "–" : Math.round(first - started)} ms · ${fmt(decode)} tok/s`
      + (usage ? ` · ${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens` : "");
    const calls = reply.toolCalls.filter(Boolean);
    history.push({ role: "user", content: prompt },
      calls.length ? { role: "assistant", content: reply.content || null,
        tool_calls: calls.map((c, i) => ({ id: `call_${i}`, type: "function", function: c })) }
        : { role: "assistant", content: reply.content });
  } catch (error) {
    node.box.classList.add("error");
    node.stats.textContent = error.name === "AbortError" ? "stopped" : `error: ${error.message}`;
  } finally {
    running = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

export function initPlayground() {
  $("tenant-key").value = keys.tenant;
  $("tenant-key").addEventListener("change", () => { keys.tenant = $("tenant-key").value.trim(); loadModels(); });
  $("send-form").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("send-form").requestSubmit(); }
  });
  $("stop").addEventListener("click", () => running && running.abort());
  $("clear").addEventListener("click", () => { history = []; clear($("transcript")); });
}
