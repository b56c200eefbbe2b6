// Markdown to DOM nodes for model answers: paragraphs, headings, lists, fenced code,
// inline code, bold, italics and http(s) links. Every piece of the answer becomes a text
// node, so an answer holding <script> or <img onerror> is shown as those characters.

import { el } from "./dom.js";

export function renderMarkdown(text) {
  const out = document.createDocumentFragment();
  const lines = text.replace(/\r\n/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*```\s*([\w+-]*)\s*$/);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) body.push(lines[i++]);
      i += 1; // the closing fence (or the end of a still-streaming answer)
      const code = el("code", fence[1] ? { "data-lang": fence[1] } : {}, body.join("\n"));
      out.append(el("pre", {}, code));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      out.append(el(`h${Math.min(6, heading[1].length + 2)}`, {}, inline(heading[2])));
      i += 1;
      continue;
    }
    if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
      const ordered = /^\s*\d/.test(line);
      const list = el(ordered ? "ol" : "ul");
      while (i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i])) {
        list.append(el("li", {}, inline(lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ""))));
        i += 1;
      }
      out.append(list);
      continue;
    }
    if (!line.trim()) { i += 1; continue; }
    const para = [];
    while (i < lines.length && lines[i].trim() && !/^\s*```/.test(lines[i]) && !/^#{1,6}\s/.test(lines[i])
           && !/^\s*([-*+]|\d+[.)])\s+/.test(lines[i])) para.push(lines[i++]);
    const p = el("p");
    para.forEach((l, n) => { if (n) p.append(el("br")); p.append(...inline(l)); });
    out.append(p);
  }
  return out;
}

const INLINE = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*)|(\[[^\]]+\]\((https?:\/\/[^\s)]+)\))/;

export function inline(text) {
  const parts = [];
  let rest = text;
  while (rest) {
    const m = rest.match(INLINE);
    if (!m) { parts.push(document.createTextNode(rest)); break; }
    if (m.index) parts.push(document.createTextNode(rest.slice(0, m.index)));
    const token = m[0];
    if (m[1]) parts.push(el("code", {}, token.slice(1, -1)));
    else if (m[2]) parts.push(el("strong", {}, token.slice(2, -2)));
    else if (m[3]) parts.push(el("em", {}, token.slice(1, -1)));
    else {
      const label = token.slice(1, token.indexOf("]("));
      let href = null;
      try { href = new URL(m[5]); } catch (_) { /* not a URL: shown as text */ }
      if (href && (href.protocol === "http:" || href.protocol === "https:")) {
        const link = el("a", { rel: "noopener noreferrer nofollow", target: "_blank" }, label);
        link.href = href.href;
        parts.push(link);
      } else {
        parts.push(document.createTextNode(token));
      }
    }
    rest = rest.slice(m.index + token.length);
  }
  return parts;
}
