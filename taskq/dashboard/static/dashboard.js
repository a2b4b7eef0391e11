// The taskq dashboard page: polls the JSON endpoints and draws each panel.
// Every value from the broker goes into the page as text (textContent), never as
// HTML: a dead letter's record holds what a task's exception said.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#c62828", "#5d4037"];
let pollMs = 2000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function say(text, isError) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = isError ? "error" : "";
}

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// The token comes from the link `taskq dashboard` prints (#token=...), or is typed
// in; it is kept for this tab only and taken out of the address bar.
function takeToken() {
  const input = document.getElementById("token");
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("taskq-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);
  }
  input.value = sessionStorage.getItem("taskq-token") || "";
  input.addEventListener("change", () => sessionStorage.setItem("taskq-token", input.value));
}

async function act(path, what) {
  const token = document.getElementById("token").value.trim();
  if (!token) {
    say(`${what}: type the actions token that taskq dashboard printed at start`, true);
    return;
  }
  const response = await fetch(path, { method: "POST", headers: { "X-Taskq-Token": token } });
  const data = await response.json();
  if (!response.ok) {
    say(`${what} refused: ${data.error}`, true);
  } else if ("requeued" in data) {
    const skipped = data.skipped.length ? `; skipped: ${data.skipped.join("; ")}` : "";
    say(`${what}: requeued ${data.requeued} message(s)${skipped}`, data.skipped.length > 0);
  } else {
    say(`${what}: deleted ${data.deleted} dead message(s)`, false);
  }
  refresh();
}

// "2026-12-04T15:28:40.419+00:00" -> "2026-12-04 15:28:40 UTC"; other text as it is.
function when(iso) {
  const match = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)[.\d]*\+00:00$/.exec(iso);
  return el("td", { class: "when", title: iso }, match ? `${match[1]} ${match[2]} UTC` : iso);
}

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows);
}

function drawChart(history) {
  const box = document.getElementById("chart");
  const width = 560, height = 180, left = 40, bottom = 20;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img" });
  const queues = [...new Set(history.flatMap((s) => Object.keys(s.queues)))].sort();
  const max = Math.max(1, ...history.flatMap((s) => Object.values(s.queues).map((c) => c.ready)));
  const t0 = history.length ? history[0].at : 0;
  const span = Math.max(1, history.length ? history[history.length - 1].at - t0 : 1);
  const x = (at) => left + ((at - t0) / span) * (width - left - 5);
  const y = (n) => height - bottom - (n / max) * (height - bottom - 10);
  chart.append(svg("line", { x1: left, y1: y(0), x2: width - 5, y2: y(0), stroke: "#999" }));
  chart.append(svg("line", { x1: left, y1: y(0), x2: left, y2: 5, stroke: "#999" }));
  for (const [value, label] of [[0, "0"], [max, String(max)]]) {
    const text = svg("text", { x: left - 4, y: y(value) + 4, "text-anchor": "end" });
    text.textContent = label;
    chart.append(text);
  }
  const since = svg("text", { x: left, y: height - 4 });
  since.textContent = history.length ? `last ${Math.round(span)} s` : "no samples yet";
  chart.append(since);
  const legend = el("div", { class: "legend" });
  queues.forEach((queue, i) => {
    const color = COLORS[i % COLORS.length];
    const points = history
      .filter((s) => queue in s.queues)
      .map((s) => `${x(s.at).toFixed(1)},${y(s.queues[queue].ready).toFixed(1)}`);
    chart.append(svg("polyline", { points: points.join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
    const swatch = el("i");
    swatch.style.background = color;
    legend.append(el("span", {}, swatch, queue));
  });
  box.replaceChildren(chart, legend);
}

async function refreshQueues() {
  const data = await getJSON("api/queues");
  pollMs = Math.max(500, data.interval * 1000);
  document.getElementById("broker").textContent = data.broker;
  const rows = Object.entries(data.queues).map(([queue, c]) =>
    el("tr", { "data-queue": queue }, el("td", {}, queue),
      el("td", { class: "num" }, c.ready), el("td", { class: "num" }, c.scheduled),
      el("td", { class: "num" }, c.claimed), el("td", { class: "num" }, c.dead)));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no queues yet")));
  fillTable("queues", rows);
  drawChart(data.history);
}

function childLine(child, now) {
  const doing = child.task
    ? `running ${child.task} [${child.task_id}] for ${(now - child.started_at).toFixed(1)} s`
    : "idle";
  const retiring = child.retiring ? " (retiring after a reload)" : "";
  return el("tr", {}, el("td", {}, `pid ${child.pid}${retiring}`),
    el("td", { class: "num" }, `${child.done} done`), el("td", { class: "child-task" }, doing));
}

async function refreshWorkers() {
  const data = await getJSON("api/workers");
  const blocks = data.workers.map((w) =>
    el("div", { class: "worker", "data-worker": w.name },
      el("h3", {}, `${w.name} (pid ${w.pid} on ${w.host}) queues ${w.queues.join(", ")}`),
      el("table", {}, el("tbody", {}, ...w.children.map((c) => childLine(c, data.now))))));
  if (!blocks.length) blocks.push(el("p", { class: "muted" }, "no live worker"));
  document.getElementById("workers").replaceChildren(...blocks);
}

async function refreshFailures() {
  const data = await getJSON("api/failures");
  if (!changed("failures", data)) return;
  const rows = data.failures.map((f) =>
    el("tr", { "data-id": f.id }, when(f.died_at), el("td", {}, f.task),
      el("td", {}, f.queue), el("td", {}, f.reason), el("td", { class: "error" }, f.error)));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no failures")));
  fillTable("failures", rows);
}

async function show(id) {
  const box = document.getElementById("dead-record");
  try {
    box.textContent = (await getJSON(`api/dead/${encodeURIComponent(id)}`)).text;
    box.hidden = false;
  } catch (error) {
    say(`show ${id}: ${error.message}`, true);
  }
}

function deadRow(d) {
  const path = `api/dead/${encodeURIComponent(d.id)}`;
  const button = (label, onClick, cls) => {
    const b = el("button", { type: "button", class: cls || "" }, label);
    b.addEventListener("click", onClick);
    return b;
  };
  return el("tr", { "data-id": d.id },
    el("td", { class: "id", title: d.id }, d.id.slice(0, 12)), el("td", {}, d.queue),
    el("td", {}, d.task), el("td", {}, d.reason), when(d.died_at),
    el("td", { class: "error" }, d.error),
    el("td", { class: "actions" },
      button("show", () => show(d.id)),
      button("retry", () => act(`${path}/retry`, `retry ${d.id}`)),
      button("purge", () => confirm(`Delete dead message ${d.id} for good?`)
        && act(`${path}/purge`, `purge ${d.id}`), "danger")));
}

// Rows are redrawn only when they change: a button replaced between a press and its
// release would swallow the click.
const drawn = {};
function changed(panel, data) {
  const key = JSON.stringify(data);
  if (drawn[panel] === key) return false;
  drawn[panel] = key;
  return true;
}

async function refreshDead() {
  const data = await getJSON("api/dead");
  if (!changed("dead", data)) return;
  const shown = data.dead.length < data.total ? ` (newest ${data.dead.length} shown)` : "";
  document.getElementById("dead-total").textContent = `${data.total}${shown}`;
  const rows = data.dead.map(deadRow);
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no dead letters")));
  fillTable("dead", rows);
}

let timer = null;
let polls = Promise.resolve();

// One poll at a time: a poll that started before an action never draws over the
// state after it.
function refresh() {
  polls = polls.then(poll, poll);
  return polls;
}

async function poll() {
  clearTimeout(timer);
  const results = await Promise.allSettled(
    [refreshQueues(), refreshWorkers(), refreshFailures(), refreshDead()]);
  const failed = results.find((r) => r.status === "rejected");
  document.getElementById("updated").textContent = failed
    ? `cannot read the broker: ${failed.reason.message}`
    : `updated ${new Date().toLocaleTimeString()}`;
  timer = setTimeout(refresh, pollMs);
}

document.addEventListener("DOMContentLoaded", () => {
  takeToken();
  document.getElementById("retry-all").addEventListener("click", () =>
    act("api/dead/retry", "retry all"));
  document.getElementById("purge-all").addEventListener("click", () =>
    confirm("Delete every dead message for good?") && act("api/dead/purge", "purge all"));
  refresh();
});
