// The fridaymorning dashboard: one script for its four pages, fed by /dashboard/api and its event stream.
"use strict";

const ROLE = (document.querySelector('meta[name="fm-role"]') || {}).content || "";
const CSRF = (document.querySelector('meta[name="fm-csrf"]') || {}).content || "";
const MAIN = document.getElementById("main");
const BUTTONS = [
  ["promote", "Promote (next step)"],
  ["promote_full", "Promote fully"],
  ["abort", "Abort"],
  ["pause", "Pause"],
  ["resume", "Resume"],
  ["approve", "Approve"],
  ["retry", "Retry"],
];
const COLOURS = { baseline: "#2b6cb0", canary: "#dd6b20" };

function esc(value) {
  return String(value === null || value === undefined ? "–" : value).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );
}
function num(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (!Number.isFinite(value)) return value > 0 ? "∞" : "-∞";
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 0.01 || magnitude >= 1e5)) return value.toExponential(2);
  return value.toFixed(digits);
}
function pct(value) {
  return value === null || value === undefined ? "–" : (100 * value).toFixed(2) + "%";
}
function clock(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "–";
}

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (response.status === 401) location.assign("/login");
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}
async function post(path) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": CSRF },
  });
  let body = {};
  try {
    body = await response.json();
  } catch (error) {
    body = { detail: response.statusText };
  }
  return { ok: response.ok, status: response.status, body };
}

function liveEvents(handlers) {
  const source = new EventSource("/dashboard/api/events");
  for (const [kind, handler] of Object.entries(handlers)) {
    source.addEventListener(kind, (message) => handler(JSON.parse(message.data)));
  }
  source.onopen = () => (document.body.dataset.live = "yes");
  source.onerror = () => (document.body.dataset.live = "no");
  return source;
}

// --- checks: the judge's evidence, one row per check ---------------------------------------------

function checksTable(verdict) {
  if (!verdict || !verdict.checks) return "<p>Not judged yet.</p>";
  const window = verdict.window ? ` on seconds [${verdict.window.start}, ${verdict.window.end})` : "";
  const rows = verdict.checks
    .map(
      (c) => `<tr class="check-${esc(c.phase)}"><td>${esc(c.name)}</td><td>${esc(c.phase)}</td>
      <td>${esc(c.n)}</td><td class="statistic" data-value="${esc(c.statistic)}">${num(c.statistic, 4)}</td><td>${num(c.bound, 4)}</td>
      <td class="threshold" data-value="${esc(c.threshold)}">${num(c.threshold, 4)}</td><td>${num(c.evalue, 2)} / ${num(c.evalue_threshold, 0)}</td>
      <td class="sentence">${esc(c.detail)}</td></tr>`,
    )
    .join("");
  return `<p class="verdict verdict-${esc(verdict.phase)}"><b>${esc(verdict.phase)}</b>${esc(window)}: ${esc(verdict.reason)}</p>
    <table class="checks"><thead><tr><th>check</th><th>phase</th><th>canary n</th><th>statistic</th>
    <th>bound</th><th>threshold</th><th>e-value / threshold</th><th>in words</th></tr></thead>
    <tbody>${rows}</tbody></table>`;
}

// --- overview ------------------------------------------------------------------------------------

function versionCells(entry) {
  if (!entry) return "<td>–</td><td>–</td><td>–</td>";
  return `<td>${num(entry.rps)}</td><td>${pct(entry.error_rate)}</td><td>${num(entry.p99)}</td>`;
}

function overviewRows(rows) {
  return rows
    .map((row) => {
      const rollout = row.rollout;
      const canary = row.versions.canary;
      const link = rollout ? `<a href="/rollouts/${rollout.id}">rollout ${rollout.id}</a>` : "";
      const warning = row.affinity
        ? `<div class="warning">affinity is on: sticky sessions make the canary's real share drift from its weight</div>`
        : "";
      return `<tr data-service="${esc(row.service)}"><td><b>${esc(row.service)}</b>${warning}</td>
        <td>${esc(row.versions.stable.version)}</td><td>${esc(canary ? canary.version : "")}</td>
        <td class="phase">${esc(rollout ? rollout.phase : "stable")}</td><td>${esc(rollout ? rollout.step : "")}</td>
        <td>${rollout ? `${esc(row.weight_set)}% / ${num(row.weight_read)}%` : "–"}</td>
        ${versionCells(row.versions.stable)}${versionCells(canary)}
        <td class="verdict-line">${esc(row.verdict)}</td><td>${link}</td></tr>`;
    })
    .join("");
}

async function showOverview() {
  MAIN.innerHTML = `<h1>Services</h1>
    <table id="overview"><thead><tr><th rowspan="2">service</th><th rowspan="2">stable</th>
    <th rowspan="2">canary</th><th rowspan="2">phase</th><th rowspan="2">step</th>
    <th rowspan="2">weight set / read back</th><th colspan="3">stable (last 10 s)</th>
    <th colspan="3">canary (last 10 s)</th><th rowspan="2">latest verdict</th><th rowspan="2"></th></tr>
    <tr><th>req/s</th><th>errors</th><th>p99 ms</th><th>req/s</th><th>errors</th><th>p99 ms</th></tr></thead>
    <tbody></tbody></table>`;
  const body = MAIN.querySelector("#overview tbody");
  body.innerHTML = overviewRows(await getJSON("/dashboard/api/overview"));
  liveEvents({ overview: (rows) => (body.innerHTML = overviewRows(rows)) });
}

// --- rollout page --------------------------------------------------------------------------------

function chart(element, title, unit, series) {
  const options = {
    title,
    width: Math.max(320, Math.min(640, element.clientWidth || 560)),
    height: 200,
    scales: { x: { time: true } },
    axes: [{}, { label: unit, size: 60 }],
    series: [{}, ...series],
  };
  return new uPlot(options, [[], ...series.map(() => [])], element);
}

class RolloutCharts {
  constructor(element, rollout) {
    this.element = element;
    this.rollout = rollout;
    this.roles = { [rollout.baseline]: "baseline", [rollout.version]: "canary" };
    this.points = { [rollout.baseline]: new Map(), [rollout.version]: new Map() };
    element.innerHTML = `<div id="chart-rps"></div><div id="chart-errors"></div>
      <div id="chart-latency"></div><div id="chart-weight"></div>`;
    const line = (version, label, dash) => ({
      label: `${version} ${label}`.trim(),
      stroke: COLOURS[this.roles[version]],
      dash,
      spanGaps: true,
    });
    const versions = [rollout.baseline, rollout.version];
    this.rps = chart(element.querySelector("#chart-rps"), "requests per second", "req/s", versions.map((v) => line(v, "")));
    this.errors = chart(element.querySelector("#chart-errors"), "error rate", "%", versions.map((v) => line(v, "")));
    this.latency = chart(
      element.querySelector("#chart-latency"),
      "response time p50 / p90 / p99",
      "ms",
      versions.flatMap((v) => [line(v, "p50", []), line(v, "p90", [6, 3]), line(v, "p99", [2, 2])]),
    );
    this.weight = chart(element.querySelector("#chart-weight"), "canary weight (● a decision)", "%", [
      { label: "canary weight", stroke: COLOURS.canary, paths: uPlot.paths.stepped({ align: 1 }), points: { show: true, size: 8 } },
    ]);
  }

  add(versions) {
    for (const [version, points] of Object.entries(versions)) {
      const known = this.points[version];
      if (!known) continue;
      for (const point of points) known.set(point.second, point);
    }
    this.draw();
  }

  draw() {
    const versions = [this.rollout.baseline, this.rollout.version];
    const seconds = [...new Set(versions.flatMap((v) => [...this.points[v].keys()]))].sort((a, b) => a - b);
    const column = (version, pick) =>
      seconds.map((second) => {
        const point = this.points[version].get(second);
        return point ? pick(point) : null;
      });
    this.rps.setData([seconds, ...versions.map((v) => column(v, (p) => p.requests))]);
    this.errors.setData([
      seconds,
      ...versions.map((v) => column(v, (p) => (p.requests ? (100 * p.failed) / p.requests : null))),
    ]);
    this.latency.setData([
      seconds,
      ...versions.flatMap((v) => ["p50", "p90", "p99"].map((q) => column(v, (p) => p[q]))),
    ]);
    for (const version of versions) {
      const served = [...this.points[version].values()].filter((p) => p.requests > 0).length;
      this.element.dataset[`${this.roles[version]}Seconds`] = String(served);
    }
  }

  drawWeight(rollout) {
    const steps = rollout.events.map((event) => [event.at, event.canary_weight]);
    if (!rollout.finished_at) steps.push([Date.now() / 1000, rollout.canary_weight]);
    this.weight.setData([steps.map((s) => s[0]), steps.map((s) => s[1])]);
  }
}

function actionButtons(rollout) {
  return BUTTONS.map(([action, label]) => {
    const enabled = ROLE === "admin" && rollout.actions.includes(action);
    const why = ROLE !== "admin" ? "read-only: log in with the admin token" : enabled ? "" : `not while ${rollout.phase}`;
    return `<button data-action="${action}" ${enabled ? "" : "disabled"} title="${esc(why)}">${label}</button>`;
  }).join(" ");
}

function timeline(rollout) {
  return rollout.events
    .map(
      (e) => `<li><span class="offset">+${num(e.at - rollout.started_at)} s</span> <b>${esc(e.kind)}</b>
        at ${esc(e.canary_weight)}%: ${esc(e.reason)}</li>`,
    )
    .join("");
}

function rolloutHeading(rollout) {
  return `<h1>Rollout ${rollout.id}: ${esc(rollout.service)} ${esc(rollout.baseline)} → ${esc(rollout.version)}</h1>
    <p class="summary">phase <b id="phase" data-phase="${esc(rollout.phase)}">${esc(rollout.phase)}</b>,
    step ${esc(rollout.step)}, canary weight <b>${esc(rollout.canary_weight)}%</b>,
    ${num(rollout.duration_s)} s${rollout.reason ? `: <span id="reason">${esc(rollout.reason)}</span>` : ""}
    · <a href="/rollouts/${rollout.id}/explain">explanation</a></p>
    ${rollout.affinity ? `<p class="warning">affinity is on: the canary's real share may drift from its weight</p>` : ""}`;
}

async function showRollout(id) {
  MAIN.innerHTML = `<div id="heading"></div><div id="actions"></div><p id="action-result"></p>
    <div id="charts"></div><h2>Checks (latest verdict)</h2><div id="checks"></div>
    <h2>Events</h2><ol id="timeline"></ol>`;
  let rollout = await getJSON(`/dashboard/api/rollouts/${id}`);
  const charts = new RolloutCharts(MAIN.querySelector("#charts"), rollout);
  const render = () => {
    MAIN.querySelector("#heading").innerHTML = rolloutHeading(rollout);
    MAIN.querySelector("#actions").innerHTML = actionButtons(rollout);
    MAIN.querySelector("#checks").innerHTML = checksTable(rollout.verdict);
    MAIN.querySelector("#timeline").innerHTML = timeline(rollout);
    charts.drawWeight(rollout);
  };
  render();
  charts.add((await getJSON(`/dashboard/api/rollouts/${id}/series`)).versions);
  MAIN.querySelector("#actions").addEventListener("click", async (click) => {
    const action = click.target.dataset && click.target.dataset.action;
    if (!action || click.target.disabled) return;
    if (!confirm(`${click.target.textContent}: rollout ${id} of ${rollout.service} (${rollout.version})?`)) return;
    const result = await post(`/dashboard/api/rollouts/${id}/${action}`);
    const line = MAIN.querySelector("#action-result");
    line.className = result.ok ? "ok" : "refused";
    line.textContent = result.ok
      ? `${action}: accepted (${result.body.phase || "queued"})`
      : `${action} refused (${result.status}): ${result.body.detail}`;
    if (action === "retry" && result.ok) location.assign(`/rollouts/${result.body.id}`);
  });
  const refresh = async () => {
    rollout = await getJSON(`/dashboard/api/rollouts/${id}`);
    render();
  };
  liveEvents({
    rollout: (event) => event.rollout_id === rollout.id && refresh(),
    points: (message) => message.rollout === rollout.id && charts.add(message.versions),
    overview: (rows) => {
      const row = rows.find((r) => r.rollout && r.rollout.id === rollout.id);
      if (row && !rollout.finished_at) charts.drawWeight({ ...rollout, canary_weight: row.weight_set });
    },
  });
}

// --- history and explanation ---------------------------------------------------------------------

async function showHistory() {
  const rollouts = await getJSON("/dashboard/api/history");
  const rows = rollouts
    .map(
      (r) => `<tr><td><a href="/rollouts/${r.id}">${r.id}</a></td><td>${esc(r.service)}</td>
      <td>${esc(r.baseline)} → ${esc(r.version)}</td><td class="phase phase-${esc(r.phase)}">${esc(r.phase)}</td>
      <td>${clock(r.started_at)}</td><td>${num(r.duration_s)} s</td><td>${esc(r.reason)}</td>
      <td><a href="/rollouts/${r.id}/explain">explain</a></td></tr>`,
    )
    .join("");
  MAIN.innerHTML = `<h1>History</h1><table id="history"><thead><tr><th>rollout</th><th>service</th>
    <th>versions</th><th>outcome</th><th>started</th><th>duration</th><th>final reason</th><th></th></tr>
    </thead><tbody>${rows}</tbody></table>`;
}

async function showExplanation(id) {
  const rollout = await getJSON(`/dashboard/api/rollouts/${id}`);
  const events = rollout.events
    .map(
      (e) => `<section class="event"><h3>+${num(e.at - rollout.started_at)} s ${esc(e.kind)} at
      ${esc(e.canary_weight)}%</h3><p>${esc(e.reason)}</p>${e.verdict ? checksTable(e.verdict) : ""}</section>`,
    )
    .join("");
  MAIN.innerHTML = `${rolloutHeading(rollout)}
    <p><button id="replay">Replay</button> re-runs the judge on the stored windows
    (as <code>fm replay ${id}</code>). <span id="replay-result"></span></p><div id="replay-table"></div>
    <div id="explanation">${events}</div>`;
  MAIN.querySelector("#replay").addEventListener("click", async () => {
    const result = await post(`/dashboard/api/rollouts/${id}/replay`);
    const line = MAIN.querySelector("#replay-result");
    if (!result.ok) {
      line.textContent = `replay failed (${result.status}): ${result.body.detail}`;
      return;
    }
    const decisions = result.body.decisions;
    const same = decisions.filter((d) => d.same).length;
    line.textContent = `${same} of ${decisions.length} decisions reproduced`;
    line.className = result.body.reproduced ? "ok" : "refused";
    MAIN.querySelector("#replay-table").innerHTML = `<table><thead><tr><th>t (s)</th><th>event</th>
      <th>seconds judged</th><th>recorded</th><th>replayed</th></tr></thead><tbody>${decisions
        .map(
          (d) => `<tr class="${d.same ? "" : "differs"}"><td>${num(d.at)}</td><td>${esc(d.kind)}</td>
          <td>[${d.start}, ${d.end})</td><td>${esc(d.recorded)}</td><td>${esc(d.replayed)}</td></tr>`,
        )
        .join("")}</tbody></table>`;
  });
}

// --- routing -------------------------------------------------------------------------------------

function route() {
  if (!ROLE) return; // the login page
  const path = location.pathname;
  let match;
  const failed = (error) => (MAIN.innerHTML = `<p class="refused">${esc(error.message)}</p>`);
  if (path === "/") showOverview().catch(failed);
  else if (path === "/history") showHistory().catch(failed);
  else if ((match = path.match(/^\/rollouts\/(\d+)\/explain$/))) showExplanation(Number(match[1])).catch(failed);
  else if ((match = path.match(/^\/rollouts\/(\d+)$/))) showRollout(Number(match[1])).catch(failed);
}

const logout = document.getElementById("logout");
if (logout) logout.addEventListener("click", () => post("/logout").then(() => location.assign("/login")));
route();
