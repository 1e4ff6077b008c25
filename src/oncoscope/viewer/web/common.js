// Shared helpers of the viewer pages.
"use strict";
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
function put(parent, ...children) {  // Node.append without the null/undefined/false children
  parent.append(...children.flat().filter(c => c !== null && c !== undefined && c !== false));
}
async function getJSON(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
  return response.json();
}
function param(name) { return new URLSearchParams(location.search).get(name); }
function fmt(value, digits) {
  if (value === null || value === undefined || value === "") return "–";
  const n = Number(value);
  return Number.isFinite(n) ? n.toFixed(digits === undefined ? 3 : digits) : String(value);
}
function trim(value) { return value === null || value === undefined ? "–" : String(+Number(value).toFixed(3)); }
function pct(value) { return value === null || value === undefined ? "–" : (100 * Number(value)).toFixed(1) + " %"; }
function histogram(container, counts, winner) {
  const entries = Object.entries(counts || {});
  const most = Math.max(1, ...entries.map(([, v]) => Number(v)));
  const bars = el("div", { class: "hist" });
  for (const [scale, votes] of entries) {
    bars.append(el("div", { class: String(scale) === String(winner) ? "win" : "", title: `${scale}: ${votes} votes`,
      style: `height:${Math.max(2, 80 * Number(votes) / most)}px` }, el("span", {}, scale)));
  }
  container.append(bars, el("div", { style: "height:22px" }), el("div", { class: "muted" }, `winner: ${winner ?? "–"}`));
}
// The facts of the page's item (`api?key=` the page's own key), with the page's title set from
// them; null, the error shown, when they cannot be read.
async function loadKeyed(api, titleOf) {
  let data;
  try { data = await getJSON(`${api}?key=${encodeURIComponent(param("key"))}`); } catch (error) { showError(error); return null; }
  document.getElementById("title").textContent = titleOf(data);
  document.title = `${titleOf(data)} · oncoscope viewer`;
  return data;
}
function showError(error) {
  document.querySelector("main, .side")?.prepend(el("div", { class: "warning" }, String(error)));
}

function couinaudTable(data) {
  if (!data) return el("p", { class: "muted" }, "unreadable");
  const table = el("table", {}, el("tr", {}, ["Lesion", "Segment", "Volume (mL)", "Max diameter (mm)", "Centroid (mm)", "Fractions"].map(h => el("th", {}, h))));
  for (const l of data.lesions || []) {
    const fractions = Object.entries(l.fractions || {}).filter(([, v]) => Number(v) > 0.005)
      .map(([k, v]) => `${k}: ${pct(v)}`).join(", ");
    table.append(el("tr", {}, el("td", {}, l.id), el("td", {}, el("strong", {}, l.segment)),
      el("td", { class: "num" }, fmt(l.volume_ml, 2)), el("td", { class: "num" }, fmt(l.max_diameter_mm, 1)),
      el("td", { class: "muted" }, (l.centroid_mm || []).map(v => fmt(v, 1)).join(", ")), el("td", { class: "muted" }, fractions)));
  }
  return el("div", {}, el("div", { class: "muted" }, `method: ${data.method ?? "–"}`), table);
}
