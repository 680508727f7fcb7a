// lmrec console: a static page over the REST API (no build step, no CDN).
// The API key is kept in this tab's sessionStorage and sent as X-API-Key.
"use strict";

const COLORS = ["#2f6fdb", "#e0662e", "#2e9e6a", "#9b51e0", "#c2185b"];
const $main = document.getElementById("main");
let scope = null;
let gen = 0; // bumped by every navigation: a page whose data comes back late draws nothing

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}
const fmt = (x, d = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
const pct = (x, d = 1) => (x === null || x === undefined ? "–" : (100 * x).toFixed(d) + "%");
const int = (x) => Number(x).toLocaleString("en-US");

async function api(path, opts = {}) {
  const key = sessionStorage.getItem("lmrec-key");
  const headers = Object.assign({ "X-API-Key": key || "" }, opts.body ? { "Content-Type": "application/json" } : {});
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = { detail: text }; }
  if (!r.ok) {
    const err = new Error((body && body.detail) || r.statusText);
    err.status = r.status;
    throw err;
  }
  return body;
}

// -- charts (inline SVG) -------------------------------------------------------------------

function lineChart(series, opts = {}) {
  // series: [{name, x: [...], y: [...]}]; opts: {w, h, ylog, ymin, ymax, xlabel, ylabel, hline}
  const w = opts.w || 520, h = opts.h || 220, p = { l: 48, r: 12, t: 10, b: 30 };
  const xs = series.flatMap((s) => s.x), ys = series.flatMap((s) => s.y);
  if (!xs.length) return `<p class="muted">No data yet.</p>`;
  const tr = (v) => (opts.ylog ? Math.log10(Math.max(v, 1e-12)) : v);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1;
  let y0 = opts.ymin ?? Math.min(...ys.map(tr)), y1 = opts.ymax ?? Math.max(...ys.map(tr));
  if (y1 === y0) { y1 = y0 + 1; }
  const X = (v) => p.l + ((v - x0) / (x1 - x0 || 1)) * (w - p.l - p.r);
  const Y = (v) => h - p.b - ((tr(v) - y0) / (y1 - y0)) * (h - p.t - p.b);
  let out = `<svg width="${w}" height="${h}" role="img" aria-label="${esc(opts.label || "chart")}">`;
  out += `<line x1="${p.l}" y1="${h - p.b}" x2="${w - p.r}" y2="${h - p.b}" stroke="#ccc"/>`;
  out += `<line x1="${p.l}" y1="${p.t}" x2="${p.l}" y2="${h - p.b}" stroke="#ccc"/>`;
  for (let k = 0; k <= 4; k++) {
    const v = y0 + (k / 4) * (y1 - y0), yy = h - p.b - (k / 4) * (h - p.t - p.b);
    const lab = opts.ylog ? Math.pow(10, v).toExponential(0) : (opts.percent ? (100 * v).toFixed(0) + "%" : +v.toPrecision(3));
    out += `<text x="${p.l - 4}" y="${yy + 4}" text-anchor="end">${lab}</text>`;
    out += `<line x1="${p.l}" y1="${yy}" x2="${w - p.r}" y2="${yy}" stroke="#f0f0f0"/>`;
  }
  if (opts.hline !== undefined) {
    out += `<line x1="${p.l}" x2="${w - p.r}" y1="${Y(opts.hline)}" y2="${Y(opts.hline)}" stroke="#a12b1a" stroke-dasharray="4 3"/>`;
  }
  series.forEach((s, k) => {
    const pts = s.x.map((v, j) => `${X(v).toFixed(1)},${Y(s.y[j]).toFixed(1)}`).join(" ");
    out += `<polyline fill="none" stroke="${s.color || COLORS[k % COLORS.length]}" stroke-width="2" points="${pts}"/>`;
  });
  if (opts.xlabel) out += `<text x="${(w + p.l) / 2}" y="${h - 6}" text-anchor="middle">${esc(opts.xlabel)}</text>`;
  out += `</svg>`;
  const legend = series.length > 1 || opts.legend
    ? `<div class="legend">${series.map((s, k) => `<span><i style="background:${s.color || COLORS[k % COLORS.length]}"></i>${esc(s.name)}</span>`).join("")}</div>` : "";
  return out + legend;
}

function ciBars(arms) {
  // CTR of each arm with its 95% interval, as horizontal bars with whiskers.
  const w = 520, rowH = 34, h = arms.length * rowH + 26, l = 90, r = 20;
  const hi = Math.max(0.01, ...arms.map((a) => a.ctr_ci[1])) * 1.1;
  const X = (v) => l + (v / hi) * (w - l - r);
  let out = `<svg width="${w}" height="${h}" role="img" aria-label="CTR by arm">`;
  arms.forEach((a, k) => {
    const y = 8 + k * rowH, c = COLORS[k % COLORS.length];
    out += `<text x="${l - 8}" y="${y + 15}" text-anchor="end">${esc(a.arm)}</text>`;
    out += `<rect x="${l}" y="${y + 4}" width="${X(a.ctr) - l}" height="16" fill="${c}" opacity="0.35"/>`;
    out += `<line x1="${X(a.ctr_ci[0])}" x2="${X(a.ctr_ci[1])}" y1="${y + 12}" y2="${y + 12}" stroke="${c}" stroke-width="2"/>`;
    out += `<line x1="${X(a.ctr_ci[0])}" x2="${X(a.ctr_ci[0])}" y1="${y + 6}" y2="${y + 18}" stroke="${c}" stroke-width="2"/>`;
    out += `<line x1="${X(a.ctr_ci[1])}" x2="${X(a.ctr_ci[1])}" y1="${y + 6}" y2="${y + 18}" stroke="${c}" stroke-width="2"/>`;
    out += `<text x="${X(a.ctr_ci[1]) + 6}" y="${y + 16}">${pct(a.ctr)}</text>`;
  });
  out += `<text x="${l}" y="${h - 4}">0</text><text x="${w - r}" y="${h - 4}" text-anchor="end">${pct(hi, 0)}</text>`;
  return out + `</svg>`;
}

// -- pages ---------------------------------------------------------------------------------

function loginPage(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  $main.innerHTML = `<div class="panel login"><h1>Sign in</h1>
    <p class="muted">An API key of this service: a read key sees everything, an admin key may
    also create and stop experiments.</p>
    <form id="login" class="row"><input id="key" type="password" placeholder="API key" size="30" autocomplete="off">
    <button type="submit" id="signin">Sign in</button></form>
    <p id="login-error" class="error">${esc(message || "")}</p></div>`;
  document.getElementById("login").onsubmit = async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("lmrec-key", document.getElementById("key").value);
    try {
      await whoami();
      if (location.hash === "#/overview") route();
      else location.hash = "#/overview";
    } catch (e) {
      sessionStorage.removeItem("lmrec-key");
      document.getElementById("login-error").textContent = e.message;
    }
  };
}

async function whoami() {
  const me = await api("/auth/scope");
  scope = me.scope;
  document.getElementById("who").textContent = `signed in · ${scope} key`;
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
}

async function overviewPage() {
  const g = gen;
  const [s, h] = await Promise.all([api("/stats"), api("/health")]);
  if (g !== gen) return;
  const c = s.counts;
  const events = Object.entries(s.events).map(([k, v]) => `${esc(k)}: ${int(v)}`).join(", ");
  const act = s.activity, pop = s.popularity;
  $main.innerHTML = `<h1>Overview</h1>
    <div class="cards">
      <div class="card"><div class="v" id="n-users">${int(c.users)}</div><div class="k">users</div></div>
      <div class="card"><div class="v" id="n-items">${int(c.items)}</div><div class="k">items</div></div>
      <div class="card"><div class="v" id="n-events">${int(c.interactions)}</div><div class="k">events</div></div>
      <div class="card"><div class="v">${int(c.exposures)}</div><div class="k">exposures</div></div>
      <div class="card"><div class="v">${esc(h.active || "none")}</div><div class="k">active model</div></div>
    </div>
    <p class="muted">Events by type: ${events || "none"} · feedback committed since start: ${int(h.feedback_committed)}</p>
    <div class="grid2">
      <div class="panel"><h2>Activity (events per day)</h2>
        ${lineChart([{ name: "events", x: act.day.map((_, k) => k), y: act.events }], { label: "activity", xlabel: act.day.length ? `${act.day[0]} … ${act.day[act.day.length - 1]}` : "" })}</div>
      <div class="panel"><h2>Popularity curve</h2>
        ${lineChart([{ name: "share of events", x: pop.items_share, y: pop.events_share }], { label: "popularity curve", ymin: 0, ymax: 1, percent: true, xlabel: "share of items, most popular first" })}</div>
    </div>`;
}

async function itemsPage() {
  $main.innerHTML = `<h1>Items &amp; users</h1>
    <div class="grid2">
      <div class="panel"><h2>Search items by text</h2>
        <form id="search" class="row"><input id="q" placeholder="e.g. space adventure" size="28"><button>Search</button></form>
        <div id="search-out"></div></div>
      <div class="panel"><h2>Look up a user</h2>
        <form id="user" class="row"><input id="uid" placeholder="user id" size="14"><button>Show</button></form>
        <div id="user-out"></div></div>
    </div>`;
  document.getElementById("search").onsubmit = async (ev) => {
    ev.preventDefault();
    const out = document.getElementById("search-out");
    out.innerHTML = `<p class="muted">Searching…</p>`;
    try {
      const r = await api(`/search?q=${encodeURIComponent(document.getElementById("q").value)}&n=10`);
      const titles = await titlesOf(r.items.map((x) => x.item));
      out.innerHTML = table(["item", "title", "score"], r.items.map((x) => [esc(x.item), esc(titles[x.item]), fmt(x.score)]));
    } catch (e) { out.innerHTML = `<p class="error">${esc(e.message)}</p>`; }
  };
  document.getElementById("user").onsubmit = async (ev) => {
    ev.preventDefault();
    const out = document.getElementById("user-out"), id = document.getElementById("uid").value;
    try {
      const [u, hist] = await Promise.all([api(`/users/${encodeURIComponent(id)}`), api(`/users/${encodeURIComponent(id)}/history?n=10`)]);
      out.innerHTML = `<p>Attributes: ${esc(JSON.stringify(u.attributes))}</p>` + historyTable(hist);
    } catch (e) { out.innerHTML = `<p class="error">${esc(e.message)}</p>`; }
  };
}

function table(head, rows, id) {
  return `<table${id ? ` id="${id}"` : ""}><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr>` +
    rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("") + `</table>`;
}

async function titlesOf(ids) {
  const out = {};
  await Promise.all(ids.map(async (i) => {
    try { out[i] = (await api(`/items/${encodeURIComponent(i)}`)).title; } catch (e) { out[i] = ""; }
  }));
  return out;
}

function historyTable(hist) {
  return table(["item", "title", "event", "value"], hist.events.map((e) => [esc(e.item), esc(e.title), esc(e.event), fmt(e.value, 1)]), "history");
}

async function modelsPage() {
  const g = gen;
  const m = await api("/models");
  if (g !== gen) return;
  $main.innerHTML = `<h1>Models</h1>
    ${table(["version", "model", "state", "items", "users", "index", "load s"], m.versions.map((v) => [
      esc(v.version) + (v.version === m.active ? ` <span class="badge ok">active</span>` : ""),
      esc(v.model || ""), esc(v.state), v.items ?? "", v.users ?? "", esc(v.index || ""), v.load_seconds ? fmt(v.load_seconds, 2) : "",
    ]), "models")}`;
}

function stateBadge(state) {
  const cls = state === "running" ? "ok" : state === "stopped" ? "muted" : "";
  return `<span class="badge ${cls}">${esc(state)}</span>`;
}

async function experimentsPage() {
  const g = gen;
  const [list, models] = await Promise.all([api("/experiments"), api("/models")]);
  if (g !== gen) return;
  const options = models.versions.map((v) => `<option>${esc(v.version)}</option>`).join("");
  const form = scope === "admin" ? `<div class="panel"><h2>New experiment</h2>
    <form id="create" class="row">
      <input id="x-name" placeholder="name" size="14" required>
      A <select id="x-a">${options}</select> B <select id="x-b">${options}</select>
      share of B <input id="x-share" type="number" min="0.05" max="0.95" step="0.05" value="0.5">
      <button>Start</button></form><p id="create-error" class="error"></p></div>` : "";
  $main.innerHTML = `<h1>Experiments</h1>${form}
    ${list.experiments.length ? table(["name", "state", "arms"], list.experiments.map((e) => [
      `<a href="#/experiments/${encodeURIComponent(e.name)}">${esc(e.name)}</a>`, stateBadge(e.state),
      e.config.arms.map((a) => `${esc(a.name)}: ${esc(a.model || "active")} (${pct(a.share, 0)})`).join(" · "),
    ]), "experiments") : `<p class="muted">No experiments yet.</p>`}`;
  const f = document.getElementById("create");
  if (f) f.onsubmit = async (ev) => {
    ev.preventDefault();
    const b = Number(document.getElementById("x-share").value);
    try {
      const e = await api("/experiments", { method: "POST", body: JSON.stringify({
        name: document.getElementById("x-name").value,
        arms: [{ name: "A", model: document.getElementById("x-a").value, share: +(1 - b).toFixed(6) },
               { name: "B", model: document.getElementById("x-b").value, share: b }],
      }) });
      location.hash = `#/experiments/${encodeURIComponent(e.name)}`;
    } catch (err) { document.getElementById("create-error").textContent = err.message; }
  };
}

async function experimentPage(name) {
  const g = gen;
  const rep = await api(`/experiments/${encodeURIComponent(name)}`);
  if (g !== gen) return;
  const d = rep.decision, s = rep.srm;
  const dcls = d.action === "stop" ? "ok" : d.action === "investigate" ? "warn" : "";
  const arms = rep.arms;
  const t0 = rep.series.t.length ? rep.series.t[0] : 0;
  const mins = rep.series.t.map((t) => (t - t0) / 60);
  const ctr = arms.map((a) => ({ name: a.arm, x: mins, y: rep.series.ctr[a.arm] }));
  const pv = rep.tests.map((t) => ({ name: `${t.arm} vs ${t.control}`, x: mins, y: t.p_values }));
  const other = Object.entries(rep.other_arms || {});
  $main.innerHTML = `<h1>Experiment ${esc(rep.name)} ${stateBadge(rep.state)}</h1>
    <p class="decision" id="decision"><span class="badge ${dcls}">${esc(d.action)}</span>
      ${d.winner ? `winner <b id="winner">${esc(d.winner)}</b> · ` : ""}${esc(d.reason)}</p>
    ${scope === "admin" && rep.state === "running" ? `<p><button id="stop" class="secondary">Stop experiment</button></p>` : ""}
    <div class="panel">
    ${table(["arm", "model", "share", "users", "exposures", "clicks", "CTR", "95% CI", "conversion", "revenue", "NDCG of clicks"], arms.map((a) => [
      esc(a.arm), esc(a.model || "active"), pct(a.share, 0), int(a.units), int(a.exposures), int(a.clicks),
      `<b>${pct(a.ctr, 2)}</b>`, `[${pct(a.ctr_ci[0], 2)}, ${pct(a.ctr_ci[1], 2)}]`, pct(a.conversion_rate, 2), fmt(a.revenue, 2), fmt(a.ndcg_clicked),
    ]), "arms")}
    ${other.length ? `<p class="error">Served outside their arm: ${other.map(([k, v]) => `${esc(k)}: ${int(v)}`).join(", ")}</p>` : ""}
    </div>
    <div class="grid2">
      <div class="panel"><h2>CTR with 95% intervals</h2>${ciBars(arms)}</div>
      <div class="panel"><h2>Sequential test (mSPRT, always valid)</h2>
        ${table(["arm", "difference", "always-valid CI", "p-value", "α"], rep.tests.map((t) => [
          `${esc(t.arm)} vs ${esc(t.control)}`, (t.difference >= 0 ? "+" : "") + pct(t.difference, 2),
          `[${pct(t.ci[0], 2)}, ${pct(t.ci[1], 2)}]`, `<span id="p-${esc(t.arm)}">${Number(t.p_value).toPrecision(3)}</span>`, t.alpha,
        ]), "tests")}
        <h2>Sample-ratio check</h2>
        <p id="srm"><span class="badge ${s.mismatch ? "warn" : "ok"}">${s.mismatch ? "mismatch" : "ok"}</span>
          χ² = ${fmt(s.chi2, 2)}, p = ${Number(s.p_value).toPrecision(3)} (flagged below ${s.alpha})</p></div>
      <div class="panel"><h2>CTR over time</h2>${lineChart(ctr, { label: "CTR over time", percent: true, xlabel: "minutes since the first exposure", legend: true })}</div>
      <div class="panel"><h2>Always-valid p-value over time</h2>${lineChart(pv, { label: "p-value", ylog: true, ymax: 0, hline: rep.tests.length ? rep.tests[0].alpha : undefined, xlabel: "minutes since the first exposure", legend: true })}</div>
    </div>`;
  const stop = document.getElementById("stop");
  if (stop) stop.onclick = async () => { await api(`/experiments/${encodeURIComponent(name)}/stop`, { method: "POST" }); route(); };
}

async function tryPage() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  $main.innerHTML = `<h1>Try it</h1>
    <form id="try" class="row">
      user <input id="t-user" size="10" value="${esc(params.get("user") || "")}" required>
      n <input id="t-n" type="number" min="1" max="50" value="10" style="width:5em">
      diversity <input id="t-div" type="range" min="0" max="1" step="0.1" value="0"> <span id="t-div-v">0</span>
      <button id="t-go">Recommend</button></form>
    <div class="grid2"><div class="panel"><h2>History (newest first)</h2><div id="t-hist"></div></div>
      <div class="panel"><h2>Recommendations</h2><div id="t-recs"></div></div></div>`;
  const slider = document.getElementById("t-div");
  slider.oninput = () => { document.getElementById("t-div-v").textContent = slider.value; };
  document.getElementById("try").onsubmit = async (ev) => {
    ev.preventDefault();
    const user = encodeURIComponent(document.getElementById("t-user").value);
    const n = document.getElementById("t-n").value, div = slider.value;
    const hOut = document.getElementById("t-hist"), rOut = document.getElementById("t-recs");
    rOut.innerHTML = `<p class="muted">Asking the service…</p>`;
    try {
      const hist = await api(`/users/${user}/history?n=10`).catch(() => ({ events: [] }));
      hOut.innerHTML = hist.events.length ? historyTable(hist) : `<p class="muted">No history: a new user.</p>`;
      const q = `n=${n}&explain=true` + (Number(div) > 0 ? `&diversity=${div}` : "");
      const r = await api(`/users/${user}/recommendations?${q}`);
      const titles = await titlesOf(r.items.map((x) => x.item));
      const tag = r.experiment ? ` · experiment ${esc(r.experiment.name)}, arm ${esc(r.experiment.arm)}` : "";
      rOut.innerHTML = `<p class="muted" id="t-model">model ${esc(r.model)}${r.fallback ? ` (fallback: ${esc(r.fallback)})` : ""}${tag}</p>` +
        table(["#", "item", "title and why"], r.items.map((x, k) => [k + 1, esc(x.item),
          `${esc(titles[x.item])}<div class="why">${esc(x.why ? x.why.sentence : "")}</div>`]), "recs");
    } catch (e) { rOut.innerHTML = `<p class="error">${esc(e.message)}</p>`; }
  };
  if (params.get("user")) document.getElementById("try").requestSubmit();
}

// -- routing -------------------------------------------------------------------------------

const PAGES = { overview: overviewPage, items: itemsPage, models: modelsPage, experiments: experimentsPage, try: tryPage };

async function route() {
  if (!sessionStorage.getItem("lmrec-key")) return loginPage();
  try {
    if (!scope) await whoami();
  } catch (e) {
    sessionStorage.removeItem("lmrec-key");
    return loginPage(e.message);
  }
  gen += 1;
  const path = (location.hash || "#/overview").slice(2).split("?")[0].split("/");
  const page = path[0] || "overview";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
  try {
    if (page === "experiments" && path[1]) await experimentPage(decodeURIComponent(path[1]));
    else await (PAGES[page] || overviewPage)();
  } catch (e) {
    if (e.status === 401) { sessionStorage.removeItem("lmrec-key"); scope = null; return loginPage(e.message); }
    $main.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

document.getElementById("logout").onclick = () => {
  sessionStorage.removeItem("lmrec-key");
  scope = null;
  location.hash = "";
  loginPage();
};
window.addEventListener("hashchange", route);
route();
