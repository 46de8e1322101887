// layercrit report page: hand-written SVG, no libraries, no network. All data is in #report-data.
"use strict";
const D = JSON.parse(document.getElementById("report-data").textContent);
const SVG_NS = "http://www.w3.org/2000/svg";
const MISSING = "#e6e6e6";
const CHAR = 5.8;         // approximate width of one 10px character [px], for the label margins

// ---------- small helpers ----------
function el(tag, attrs, parent, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}
const isNum = (v) => v !== null && v !== undefined && !Number.isNaN(v);
const fmt = (v, digits = 1) => (isNum(v) ? v.toFixed(digits) : "–");
const signed = (v) => (isNum(v) ? (v >= 0 ? "+" : "") + v.toFixed(1) : "–");

function hexToRgb(h) { return [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)); }
function colorFor(scale, v) {
  if (!isNum(v)) return MISSING;
  const t = Math.min(1, Math.max(0, (v - scale.min) / (scale.max - scale.min || 1)));
  const x = t * (scale.stops.length - 1), i = Math.min(Math.floor(x), scale.stops.length - 2), f = x - i;
  const a = hexToRgb(scale.stops[i]), b = hexToRgb(scale.stops[i + 1]);
  return "rgb(" + a.map((c, k) => Math.round(c + (b[k] - c) * f)).join(",") + ")";
}
function meanStd(values) {
  const v = values.filter(isNum);
  if (!v.length) return "–";
  const m = v.reduce((s, x) => s + x, 0) / v.length;
  if (v.length < 2) return m.toFixed(1);
  const sd = Math.sqrt(v.reduce((s, x) => s + (x - m) ** 2, 0) / (v.length - 1));
  return m.toFixed(1) + " ± " + sd.toFixed(1);
}
const categoryColor = Object.fromEntries(D.categories.map((c) => [c.name, c.color]));

// ---------- header ----------
document.getElementById("subtitle").textContent = D.subtitle;

// ---------- heatmap ----------
const state = { view: "abs", sort: "category" };
const heat = document.getElementById("heatmap");
const nModels = D.models.length, nLayers = D.layers.length;
// cell size [px]: 12 for the study's 54 layers, larger for small studies so they stay legible
const CELL = Math.max(12, Math.min(30, Math.floor(640 / nLayers)));
const labelW = Math.max(...D.models.map((m) => m.name.length)) * CHAR + 10;
const band = 8;
const left = band + 6 + labelW, top = 80;  // top: room for the column mean +/- std
const bottom = Math.max(...D.layers.map((l) => l.label.length)) * CHAR + 10;
const statsW = 80;
heat.setAttribute("width", left + nLayers * CELL + statsW);
heat.setAttribute("height", top + nModels * CELL + bottom);

const colStats = el("svg:g", {}, heat);
D.layers.forEach((layer, j) => {
  const x = left + j * CELL + CELL / 2, y = top + nModels * CELL + 6;
  el("svg:text", { x, y, transform: `rotate(-90 ${x} ${y})`, "text-anchor": "end", "dominant-baseline": "middle" },
     heat, layer.label);
});
el("svg:text", { x: left + nLayers * CELL + 6, y: top - 6, class: "stats" }, heat, "mean ± std");

const rows = D.models.map((model, i) => {
  const g = el("svg:g", { class: "row", "data-model": model.id }, heat);
  el("svg:rect", { x: 0, y: 0, width: band, height: CELL, fill: categoryColor[model.category] || "#999" }, g)
    .appendChild(el("svg:title", {}, null, model.category));
  el("svg:text", { x: left - 4, y: CELL / 2, "text-anchor": "end", "dominant-baseline": "central" }, g,
     model.name + (model.id === D.baseline ? " ★" : ""));
  const cells = D.layers.map((layer, j) => el("svg:rect", {
    class: "cell", x: left + j * CELL, y: 0, width: CELL - 1, height: CELL - 1,
    "data-row": i, "data-col": j, "data-model": model.id, "data-layer": layer.name }, g));
  const stats = el("svg:text", { x: left + nLayers * CELL + 6, y: CELL / 2, class: "stats",
                                 "dominant-baseline": "central" }, g);
  return { g, cells, stats, model, index: i };
});

function paint() {
  const scale = D.scales[state.view], values = D.values[state.view];
  rows.forEach((r) => {
    r.cells.forEach((c, j) => c.setAttribute("fill", colorFor(scale, values[r.index][j])));
    r.stats.textContent = meanStd(values[r.index]);
  });
  colStats.replaceChildren();
  D.layers.forEach((_, j) => {
    const x = left + j * CELL + CELL / 2, y = top - 6;
    el("svg:text", { x, y, transform: `rotate(-90 ${x} ${y})`, class: "colstats", "dominant-baseline": "middle" },
       colStats, meanStd(values.map((row) => row[j])));
  });
  document.getElementById("legend-min").textContent = scale.min.toFixed(0);
  document.getElementById("legend-max").textContent = scale.max.toFixed(0);
  document.getElementById("legend-label").textContent = scale.label;
  document.getElementById("legend-bar").style.background = `linear-gradient(to right, ${scale.stops.join(",")})`;
}

function order() {
  const key = {
    category: (r) => r.index,  // the report's order: grouped by category, baseline first
    accuracy: (r) => (isNum(r.model.accuracy) ? -r.model.accuracy : Infinity),
    avg: (r) => -D.values.abs[r.index].filter(isNum).reduce((s, x, _, a) => s + x / a.length, 0),
  }[state.sort];
  [...rows].sort((a, b) => key(a) - key(b) || a.index - b.index)
    .forEach((r, pos) => r.g.setAttribute("transform", `translate(0, ${top + pos * CELL})`));
}

document.querySelectorAll('input[name="view"]').forEach((input) =>
  input.addEventListener("change", () => { state.view = input.value; paint(); }));
document.getElementById("sort").addEventListener("change", (e) => { state.sort = e.target.value; order(); });

// ---------- tooltip ----------
const tip = document.getElementById("tooltip");
function showTip(event, head, lines) {
  tip.replaceChildren();
  el("div", { class: "head" }, tip, head);
  const table = el("table", {}, tip);
  for (const [k, v] of lines) {
    const tr = el("tr", {}, table);
    el("td", {}, tr, k);
    el("td", {}, tr, v);
  }
  tip.hidden = false;
  const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  const y = Math.min(event.clientY + 14, window.innerHeight - tip.offsetHeight - 8);
  tip.style.left = x + "px";
  tip.style.top = y + "px";
}
heat.addEventListener("mouseover", (event) => {
  const c = event.target.closest(".cell");
  if (!c) return;
  const i = +c.dataset.row, j = +c.dataset.col, m = D.models[i], layer = D.layers[j], v = D.values;
  showTip(event, `${m.name} — ${layer.label}`, [
    ["model", m.id + " (" + m.category + ")"],
    ["layer", layer.name + " (" + layer.stage + ")"],
    ["criticality", fmt(v.abs[i][j]) + " ± " + fmt(v.std[i][j]) + " %"],
    ["Δ to baseline", signed(v.delta[i][j]) + " pp"],
    ["top-1 after reset", fmt(v.top1[i][j], 2) + " %"],
    ["recovered accuracy", fmt(isNum(v.recovered[i][j]) ? 100 * v.recovered[i][j] : null) + " %"],
  ]);
});
heat.addEventListener("mouseleave", () => { tip.hidden = true; });

// ---------- category legend ----------
const legend = document.getElementById("categories");
D.categories.forEach((c) => el("span", { style: `--c: ${c.color}` }, legend, c.name));
el("span", { style: "--c: transparent" }, legend, "★ baseline: " + D.baseline);

// ---------- scatter: average criticality vs accuracy ----------
function niceTicks(lo, hi, n = 5) {
  const step0 = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(step0 || 1));
  const step = [1, 2, 5, 10].map((s) => s * mag).find((s) => s >= step0) || mag;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) ticks.push(+t.toFixed(10));
  return ticks;
}
(function scatter() {
  const svg = document.getElementById("scatter"), W = 400, H = 290, m = { l: 48, r: 12, t: 10, b: 40 };
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const pts = D.models.filter((p) => isNum(p.accuracy) && isNum(p.avg));
  if (!pts.length) {
    el("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, svg, "no model has an accuracy: give them one in a metadata CSV");
    return;
  }
  const pad = (lo, hi) => { const d = (hi - lo) || Math.abs(hi) || 1; return [lo - 0.08 * d, hi + 0.08 * d]; };
  const [x0, x1] = pad(Math.min(...pts.map((p) => p.accuracy)), Math.max(...pts.map((p) => p.accuracy)));
  const [y0, y1] = pad(Math.min(...pts.map((p) => p.avg)), Math.max(...pts.map((p) => p.avg)));
  const sx = (v) => m.l + (v - x0) / (x1 - x0) * (W - m.l - m.r);
  const sy = (v) => H - m.b - (v - y0) / (y1 - y0) * (H - m.t - m.b);
  niceTicks(x0, x1).forEach((t) => {
    el("svg:line", { x1: sx(t), x2: sx(t), y1: m.t, y2: H - m.b, stroke: "#eee" }, svg);
    el("svg:text", { x: sx(t), y: H - m.b + 14, "text-anchor": "middle" }, svg, String(t));
  });
  niceTicks(y0, y1).forEach((t) => {
    el("svg:line", { x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t), stroke: "#eee" }, svg);
    el("svg:text", { x: m.l - 5, y: sy(t), "text-anchor": "end", "dominant-baseline": "central" }, svg, String(t));
  });
  el("svg:rect", { x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b, fill: "none", stroke: "#999" }, svg);
  el("svg:text", { x: (m.l + W - m.r) / 2, y: H - 6, "text-anchor": "middle" }, svg, "accuracy [%]");
  el("svg:text", { x: 12, y: (m.t + H - m.b) / 2, transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})`,
                   "text-anchor": "middle" }, svg, "average criticality [%]");
  pts.forEach((p) => {
    const c = el("svg:circle", { class: "point", cx: sx(p.accuracy), cy: sy(p.avg), r: 5,
                                 fill: categoryColor[p.category] || "#999", stroke: "#fff", "data-model": p.id }, svg);
    c.addEventListener("mouseover", (event) => showTip(event, p.name, [
      ["category", p.category], ["accuracy", fmt(p.accuracy, 2) + " %"],
      ["average criticality", fmt(p.avg) + " ± " + fmt(p.std) + " %"]]));
    c.addEventListener("mouseleave", () => { tip.hidden = true; });
  });
  const list = document.getElementById("correlations");
  D.correlations.forEach((line) => el("li", {}, list, line));
})();

// ---------- stage table ----------
(function stages() {
  const table = document.getElementById("stages"), S = D.stages, scale = D.scales.abs;
  const head = el("tr", {}, el("thead", {}, table));
  el("th", { class: "name" }, head, "category / model");
  S.columns.forEach((c) => el("th", {}, head, c));
  const body = el("tbody", {}, table);
  const line = (name, values, cls, title) => {
    const tr = el("tr", { class: cls }, body);
    el("td", { class: "name", title: title || name }, tr, name);
    values.forEach((v) => {
      const td = el("td", {}, tr, fmt(v));
      td.style.background = colorFor(scale, v);
      if (isNum(v) && v > 55) td.style.color = "#fff";  // keep numbers readable on dark cells
    });
  };
  S.categories.forEach((c) => line(`${c.name} (n=${c.n})`, c.values, "category-row"));
  S.models.forEach((m) => line(m.name, m.values, "model-row", `${m.name} (${m.id})`));
})();

// ---------- run configurations ----------
(function runs() {
  const table = document.getElementById("runs");
  const cols = ["model_id", "source", "spec", "category", "accuracy", "samples", "seed", "trials", "started",
                "finished"];
  const head = el("tr", {}, el("thead", {}, table));
  cols.forEach((c) => el("th", { class: "name" }, head, c));
  el("th", { class: "name" }, head, "configuration");
  const body = el("tbody", {}, table);
  D.runs.forEach((run) => {
    const tr = el("tr", {}, body);
    cols.forEach((c) => el("td", { class: "name" }, tr, run[c] === null || run[c] === undefined ? "–" :
                            (c === "accuracy" ? fmt(run[c], 2) : String(run[c]))));
    const details = el("details", {}, el("td", { class: "name" }, tr));
    el("summary", {}, details, "show");
    el("pre", {}, details, JSON.stringify(run.config, null, 2));
  });
})();

order();
paint();
