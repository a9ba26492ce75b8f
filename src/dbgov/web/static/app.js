// dbgov dashboard behaviour: CSRF header for htmx, the live statement stream (SSE),
// charts (uPlot) and local times. No inline scripts anywhere: the CSP forbids them.
"use strict";

function cookie(name) {
  const found = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

// Every htmx request that changes something carries the double-submit token.
document.addEventListener("htmx:configRequest", (e) => {
  e.detail.headers["X-CSRF-Token"] = cookie("dbgov_csrf");
});

function rowFrom(html) {
  const t = document.createElement("template");
  t.innerHTML = html.trim();
  return t.content.firstElementChild;
}

function startStream(tbody) {
  const state = document.getElementById("live-state");
  const es = new EventSource(tbody.dataset.stream);
  es.addEventListener("open", () => { if (state) state.textContent = "live"; });
  es.addEventListener("error", () => { if (state) state.textContent = "reconnecting…"; });
  es.addEventListener("row", (e) => {
    const row = rowFrom(e.data);
    if (!row) return;
    const old = document.getElementById(row.id);
    if (old) old.replaceWith(row); else tbody.prepend(row);
    while (tbody.rows.length > 200) tbody.deleteRow(-1);
  });
  es.addEventListener("refresh", (e) => {
    if (window.htmx) window.htmx.trigger(document.body, "dbgov:" + e.data);
  });
  es.addEventListener("end", () => { es.close(); if (state) state.textContent = "ended"; });
}

const COLORS = {
  allowed: "#2f855a", masked: "#6b46c1", denied: "#c53030", pending: "#b7791f",
  "denied statements": "#c53030", "failed logins": "#dd6b20",
};

async function drawChart(el) {
  const res = await fetch(el.dataset.chart, { credentials: "same-origin" });
  if (!res.ok) { el.textContent = "chart unavailable"; return; }
  const data = await res.json();
  if (el.dataset.kind === "meters") {
    const max = Math.max(1, ...data.identities.map((i) => i.statements));
    el.replaceChildren(...data.identities.map((i) => {
      const row = document.createElement("div");
      row.className = "meter-row";
      const label = document.createElement("a");
      label.href = "/identities/" + encodeURIComponent(i.user);
      label.textContent = i.user;
      const meter = document.createElement("meter");
      meter.max = max; meter.value = i.statements;
      const n = document.createElement("span");
      n.textContent = i.statements + (i.denied ? " (" + i.denied + " denied)" : "");
      row.append(label, meter, n);
      return row;
    }));
    if (!data.identities.length) el.textContent = "no statements yet";
    return;
  }
  const names = Object.keys(data.series);
  const bars = el.dataset.kind === "bars" && window.uPlot.paths.bars;
  const opts = {
    width: Math.max(280, el.clientWidth), height: 180,
    series: [{}, ...names.map((n) => ({
      label: n, stroke: COLORS[n] || "#333", width: 2,
      fill: bars ? (COLORS[n] || "#333") + "99" : undefined,
      paths: bars ? window.uPlot.paths.bars({ size: [0.6, 40] }) : undefined,
    }))],
    axes: [{}, { size: 40 }],
    scales: { x: { time: true } },
  };
  el.replaceChildren();
  new window.uPlot(opts, [data.t, ...names.map((n) => data.series[n])], el);
}

function localTimes(root) {
  for (const el of root.querySelectorAll(".ts[data-epoch]")) {
    el.textContent = new Date(Number(el.dataset.epoch) * 1000).toLocaleString();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const tbody = document.getElementById("stream");
  if (tbody && window.EventSource) startStream(tbody);
  for (const el of document.querySelectorAll("[data-chart]")) {
    drawChart(el).catch(() => { el.textContent = "chart unavailable"; });
  }
  localTimes(document);
  document.body.addEventListener("htmx:afterSwap", (e) => localTimes(e.target));
});
