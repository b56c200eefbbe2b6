// DOM helpers. Text only ever enters the page as text nodes (textContent), never as HTML.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function showError(id, error) {
  const node = document.getElementById(id);
  node.textContent = error ? String(error.message || error) : "";
  node.hidden = !error;
}

const SVG = "http://www.w3.org/2000/svg";

// A small line chart of the last values (no axes: the number beside it says the scale).
export function sparkline(values, width = 120, height = 24) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const line = document.createElementNS(SVG, "polyline");
  const top = Math.max(1e-9, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  line.setAttribute("points", values.map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (v / top) * (height - 2)).toFixed(1)}`).join(" "));
  svg.append(line);
  return svg;
}

export function meter(fraction) {
  const f = Math.max(0, Math.min(1, fraction || 0));
  const fill = el("span");
  fill.style.width = `${(f * 100).toFixed(0)}%`; // CSSOM, allowed by the style-src policy
  return el("span", {}, el("span", { class: "bar-meter" }, fill), `${(f * 100).toFixed(0)}%`);
}

export function fmt(value, digits = 1) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : Number(value).toFixed(digits);
}

export function when(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) : "–";
}
