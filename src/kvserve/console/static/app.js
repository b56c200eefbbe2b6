// The console's entry point: pages by URL fragment, the theme, and each page's refresh.

import { api } from "./api.js";
import { refreshFleet } from "./fleet.js";
import { initKeys, refreshKeys, refreshUsage } from "./keys.js";
import { initModels, refreshModels, refreshRollouts } from "./models.js";
import { initPlayground, loadModels } from "./playground.js";
import { refreshServer } from "./server.js";

// page -> [refresh on show, refresh period in ms or 0]
const PAGES = {
  playground: [() => loadModels(), 0],
  fleet: [() => refreshFleet(), 2000],
  server: [() => refreshServer(), 2000],
  keys: [() => Promise.all([refreshKeys(), refreshUsage()]), 5000],
  models: [() => Promise.all([refreshModels(), refreshRollouts()]), 2000],
};
let timer = null;
let kind = "gateway";

function show() {
  let page = location.hash.slice(1);
  const link = document.querySelector(`#nav a[data-page="${page}"]`);
  if (!PAGES[page] || !link || link.hidden) page = "playground";
  document.querySelectorAll(".page").forEach((p) => p.classList.toggle("active", p.id === `page-${page}`));
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
  clearInterval(timer);
  const [refresh, period] = PAGES[page];
  refresh();
  if (period) timer = setInterval(refresh, period);
}

function theme() {
  const saved = localStorage.getItem("kvserve.theme");
  const dark = saved ? saved === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.classList.toggle("dark", dark);
  document.getElementById("theme").addEventListener("click", () => {
    const now = !document.documentElement.classList.contains("dark");
    document.documentElement.classList.toggle("dark", now);
    localStorage.setItem("kvserve.theme", now ? "dark" : "light");
  });
}

async function main() {
  theme();
  try {
    kind = (await api("meta.json")).kind;
  } catch (_) { /* keep the gateway's pages */ }
  document.querySelectorAll("#nav a[data-kind]").forEach((a) => { a.hidden = a.dataset.kind !== kind; });
  initPlayground();
  initKeys();
  initModels();
  window.addEventListener("hashchange", show);
  show();
}

main();
