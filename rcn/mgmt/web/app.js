// The RCN dashboard: plain JavaScript over the management server's REST API (/api/v1).
// The token lives in sessionStorage; every figure comes from the API, which shows a
// customer only its own pairs, routes and devices.
"use strict";

const API = "/api/v1";
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
let timer = null;

function token() { return sessionStorage.getItem("rcn-token"); }

async function get(path) {
  const response = await fetch(API + path, {headers: {"Authorization": "Bearer " + token()}});
  const body = await response.json();
  if (!response.ok) {
    const error = new Error(body.error || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function ms(seconds) {
  return seconds === null || seconds === undefined ? "-" : (seconds * 1000).toFixed(1) + " ms";
}

function rate(bytesPerSecond) {
  if (bytesPerSecond === null || bytesPerSecond === undefined) return "-";
  return (bytesPerSecond / 1e6).toFixed(2) + " MB/s";
}

function showPairs(pairs) {
  const body = document.querySelector("#pairs tbody");
  body.replaceChildren();
  for (const p of pairs) {
    const row = body.insertRow();
    row.dataset.pair = p.id;
    cell(row, `${p.source_wwn}:${p.source_lun} → ${p.target_wwn}:${p.target_lun}`);
    cell(row, p.customer_id);
    cell(row, p.group);
    cell(row, p.state || "unknown", "state state-" + (p.state || "unknown"));
    cell(row, ms(p.lag_s), "num lag");
    cell(row, p.residual_entries === null ? "-" : p.residual_entries, "num");
    cell(row, rate(p.throughput_bps), "num");
  }
}

function svg(tag, attributes, parent) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function showLag(data) {
  const chart = document.getElementById("lag-chart");
  chart.replaceChildren();
  const width = +chart.getAttribute("width"), height = +chart.getAttribute("height");
  const left = 50, bottom = 20, span = data.seconds;
  const groups = Object.keys(data.series);
  let top = 0.001;
  for (const g of groups) for (const [, lag] of data.series[g]) top = Math.max(top, lag);
  svg("text", {x: 4, y: 12}, chart).textContent = ms(top);
  svg("text", {x: 4, y: height - bottom}, chart).textContent = "0";
  svg("line", {x1: left, y1: height - bottom, x2: width, y2: height - bottom,
               stroke: "#999"}, chart);
  groups.forEach((g, i) => {
    const points = data.series[g].map(([t, lag]) => {
      const x = left + (width - left) * (1 - (data.now - t) / span);
      const y = (height - bottom) - (height - bottom - 16) * (lag / top);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const colour = COLOURS[i % COLOURS.length];
    svg("polyline", {points: points.join(" "), fill: "none", stroke: colour,
                     "stroke-width": 1.5, "data-group": g, class: "lag-line"}, chart);
    svg("text", {x: left + 8 + 90 * i, y: 12, fill: colour}, chart).textContent = "group " + g;
  });
  chart.dataset.points = groups.reduce((n, g) => n + data.series[g].length, 0);
}

function showTopology(topo) {
  const picture = document.getElementById("topology");
  picture.replaceChildren();
  const width = +picture.getAttribute("width"), height = +picture.getAttribute("height");
  const edges = topo.devices.filter(d => d.role === "edge");
  const cores = topo.devices.filter(d => d.role === "core");
  const where = {};
  const place = (list, y) => list.forEach((d, i) => {
    where[d.id] = {x: (width / (list.length + 1)) * (i + 1), y};
  });
  place(edges.filter((_, i) => i % 2 === 0), 40);
  place(cores, height / 2);
  place(edges.filter((_, i) => i % 2 === 1), height - 40);
  for (const link of topo.links) {
    const a = where[link.a], b = where[link.b];
    if (a && b) svg("line", {x1: a.x, y1: a.y, x2: b.x, y2: b.y, stroke: "#ccc"}, picture);
  }
  topo.routes.forEach((route, i) => {
    const points = route.path.filter(id => where[id]).map(id => `${where[id].x},${where[id].y}`);
    svg("polyline", {points: points.join(" "), fill: "none", "stroke-width": 3,
                     stroke: COLOURS[i % COLOURS.length], opacity: 0.6, class: "route"}, picture);
  });
  for (const d of topo.devices) {
    const p = where[d.id];
    if (!p) continue;
    svg(d.role === "edge" ? "rect" : "circle", d.role === "edge"
        ? {x: p.x - 9, y: p.y - 9, width: 18, height: 18, fill: "#fff", stroke: "#333"}
        : {cx: p.x, cy: p.y, r: 9, fill: "#fff", stroke: "#333"}, picture);
    svg("text", {x: p.x + 12, y: p.y + 4}, picture).textContent = d.id;
  }
}

function showDevices(devices) {
  const body = document.querySelector("#devices tbody");
  body.replaceChildren();
  for (const d of devices) {
    const row = body.insertRow();
    cell(row, d.id);
    cell(row, d.role);
    cell(row, d.connected ? "yes" : "no", d.connected ? "" : "stale");
    cell(row, d.version + (d.up_to_date ? "" : " (old)"), d.up_to_date ? "" : "stale");
    cell(row, d.last_report_age_s === null ? "-" : d.last_report_age_s.toFixed(1) + " s ago",
         d.stale ? "stale" : "");
  }
}

async function refresh() {
  try {
    const [status, lag, topo, devices] = await Promise.all([
      get("/status"), get("/lag?seconds=300"), get("/topology"), get("/devices")]);
    showPairs(status.pairs);
    showLag(lag);
    showTopology(topo);
    showDevices(devices.devices);
    document.getElementById("updated").textContent =
        "Last update " + new Date().toLocaleTimeString() + ".";
  } catch (error) {
    if (error.status === 401) return logout("The token is no longer valid.");
    document.getElementById("updated").textContent = "Update failed: " + error.message;
  }
}

async function login(value) {
  sessionStorage.setItem("rcn-token", value);
  try {
    const me = await get("/whoami");
    document.getElementById("who").textContent =
        me.operator ? "operator" : "customer " + me.customer;
    document.getElementById("login").hidden = true;
    document.getElementById("board").hidden = false;
    document.getElementById("logout").hidden = false;
    await refresh();
    timer = setInterval(refresh, 1000);
  } catch (error) {
    logout(error.status === 401 ? "Unknown token." : error.message);
  }
}

function logout(message) {
  clearInterval(timer);
  sessionStorage.removeItem("rcn-token");
  document.getElementById("login").hidden = false;
  document.getElementById("board").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("token").value = "";
  document.getElementById("login-error").textContent = message || "";
}

document.getElementById("login-form").addEventListener("submit", event => {
  event.preventDefault();
  login(document.getElementById("token").value);
});
document.getElementById("logout").addEventListener("click", () => logout());
if (token()) login(token());
