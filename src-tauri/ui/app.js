// The desktop window: the projects and their runs, a running run's progress live from the sidecar's
// notifications, a finished run's contact sheet and jobs; beside them the sidecar panel (state, system.info, the
// recent events). Plain script, no bundler, no network: everything comes through the two shell commands and the
// event listener its capability grants. The logic is in events.js (the event list) and viewer.js (runs,
// progress, jobs); this file draws.
"use strict";

const { invoke } = window.__TAURI__.core;
const { listen } = window.__TAURI__.event;
const { EventLog, describe, describeState } = window.IatEvents;
const V = window.IatViewer;

const $ = (id) => document.getElementById(id);
const log = new EventLog();
const sheets = new V.Recent(6); // asset id -> assets.read answer

const view = {
  projects: [],
  slug: null,
  runs: [],
  runId: null,
  run: null, // runs.get of the selected run
  progress: null, // V.RunProgress of the selected run
  token: 0, // bumped on every selection: answers for an older one are dropped
  sheetAsset: null, // the asset id shown
  pages: [], // the contact sheet's pages (V.sheetPages)
  jobs: null, // {jobs, candidates}: the last jobs.list and candidates.list of the selected run
};

function call(method, params = {}) {
  return invoke("sidecar_call", { method, params });
}

function describeError(err) {
  if (err && err.kind === "rpc") {
    const name = err.data && err.data.name ? ` ${err.data.name}` : "";
    return `sidecar error ${err.code}${name}: ${err.message}`;
  }
  if (err && err.kind) return `${err.kind}: ${err.message}`;
  return String(err);
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function badgeEl(status) {
  const { text, cls } = V.badge(status);
  return el("span", { class: `badge ${cls}` }, text);
}

// Calls `fn` at most once per `ms`, the last request winning (bursts of events ask for one refetch).
function throttled(fn, ms) {
  let timer = null;
  return () => {
    if (timer === null) timer = setTimeout(() => { timer = null; fn(); }, ms);
  };
}

// ---------------------------------------------------------------- the sidecar panel

function setState(text, cls) {
  const badge = $("state");
  badge.textContent = text;
  badge.className = `badge ${cls || ""}`;
}

function showState(state) {
  const { text, cls } = describeState(state);
  setState(text, cls);
}

function renderEvents() {
  const items = log.entries().map((entry) => {
    const { time, text, error } = describe(entry);
    const li = el("li", error ? { class: "error" } : {}, el("time", {}, time), ` ${text}`);
    return li;
  });
  $("events").replaceChildren(...items);
}

function addEvent(entry) {
  if (log.add(entry)) renderEvents();
}

async function refreshInfo() {
  const dl = $("info");
  try {
    const info = await call("system.info");
    dl.replaceChildren();
    for (const [key, value] of Object.entries(info)) {
      dl.append(el("dt", {}, key), el("dd", {}, typeof value === "string" ? value : JSON.stringify(value)));
    }
  } catch (err) {
    dl.replaceChildren(el("dd", { class: "error" }, describeError(err)));
  }
}

async function ping() {
  const out = $("ping-result");
  const started = performance.now();
  try {
    await call("system.ping");
    out.textContent = `pong in ${(performance.now() - started).toFixed(1)} ms`;
    out.className = "muted";
  } catch (err) {
    out.textContent = describeError(err);
    out.className = "error";
  }
}

// ---------------------------------------------------------------- projects and runs

function renderProjects() {
  const list = $("projects");
  if (!view.projects.length) {
    list.replaceChildren(el("li", { class: "muted" }, "No projects yet (iat-sidecar demo makes one)."));
    return;
  }
  list.replaceChildren(...view.projects.map((p) => el("li", {},
    el("button", { type: "button", class: "item", dataset: { slug: p.slug },
                   "aria-current": String(p.slug === view.slug), onclick: () => selectProject(p.slug) },
       el("span", { class: "title" }, p.name),
       el("span", { class: "detail" }, p.slug),
       p.status !== "active" ? badgeEl(p.status) : null))));
}

function renderRuns() {
  const list = $("runs");
  $("runs-of").textContent = view.slug ? `of ${view.slug}` : "";
  if (!view.slug) {
    list.replaceChildren();
    return;
  }
  if (!view.runs.length) {
    list.replaceChildren(el("li", { class: "muted" }, "No runs yet."));
    return;
  }
  list.replaceChildren(...view.runs.map((run) => {
    const { title, detail } = V.runLabel(run);
    return el("li", {},
      el("button", { type: "button", class: "item", dataset: { runId: run.id },
                     "aria-current": String(run.id === view.runId), onclick: () => selectRun(run.id) },
         el("span", { class: "title" }, title, " ", badgeEl(run.status)),
         el("span", { class: "detail" }, detail)));
  }));
}

async function loadProjects() {
  try {
    const { items } = await call("projects.list");
    view.projects = items.filter((p) => p.status !== "deleted");
  } catch (err) {
    $("projects").replaceChildren(el("li", { class: "error" }, describeError(err)));
    return;
  }
  renderProjects();
  const keep = view.projects.some((p) => p.slug === view.slug);
  if (!keep) {
    const first = view.projects.find((p) => p.status === "active") || view.projects[0];
    await selectProject(first ? first.slug : null);
  } else {
    await loadRuns();
  }
}

async function selectProject(slug) {
  if (slug !== view.slug) {
    view.slug = slug;
    view.runs = [];
    clearRun();
  }
  renderProjects();
  await loadRuns({ selectNewest: true });
}

// Fetches the selected project's runs; with selectNewest, shows the newest when no run is selected.
async function loadRuns({ selectNewest = false } = {}) {
  const slug = view.slug;
  if (!slug) return renderRuns();
  try {
    const { items } = await call("runs.list", { slug, limit: 100 });
    if (slug !== view.slug) return;
    view.runs = V.sortRuns(items);
  } catch (err) {
    if (slug === view.slug) $("runs").replaceChildren(el("li", { class: "error" }, describeError(err)));
    return;
  }
  renderRuns();
  if (selectNewest && !view.runId && view.runs.length) await selectRun(view.runs[0].id);
}

const refreshRuns = throttled(() => loadRuns(), 300);
const refreshProjects = throttled(() => loadProjects(), 300);

// ---------------------------------------------------------------- one run

function clearRun() {
  view.token += 1;
  view.runId = null;
  view.run = null;
  view.progress = null;
  view.sheetAsset = null;
  view.pages = [];
  view.jobs = null;
  $("run-view").hidden = true;
  $("run-empty").hidden = false;
}

function showError(text) {
  const p = $("run-error");
  p.textContent = text || "";
  p.hidden = !text;
}

async function selectRun(runId) {
  clearRun();
  const token = view.token;
  view.runId = runId;
  // Listening already: notifications about this run fold into its progress while the snapshot loads.
  view.progress = new V.RunProgress(runId);
  renderRuns();
  $("run-empty").hidden = true;
  $("run-view").hidden = false;
  $("run-title").textContent = "…";
  $("run-meta").textContent = "";
  $("progress").hidden = true;
  $("sheet").hidden = true;
  $("jobs").tBodies[0].replaceChildren();
  showError("");
  const slug = view.slug;
  try {
    const [run, jobs, candidates] = await Promise.all([
      call("runs.get", { slug, run_id: runId }),
      call("jobs.list", { slug, run_id: runId }),
      call("candidates.list", { slug, run_id: runId }),
    ]);
    if (token !== view.token) return;
    view.run = run;
    view.progress.load(run, jobs.items, candidates.items);
    renderRun();
    renderJobs(jobs.items, candidates.items);
    if (view.progress.view().finished) await showSheet(token);
  } catch (err) {
    if (token === view.token) showError(describeError(err));
  }
}

function renderRun() {
  const run = view.run;
  if (!run) return;
  const p = view.progress.view();
  const status = p.status || run.status;
  $("run-title").textContent = `Run ${V.runLabel(run).title}`;
  $("run-status").replaceWith(Object.assign(badgeEl(status), { id: "run-status" }));
  const snap = run.settings_snapshot_json || {};
  const parts = [run.provider_code, run.run_mode === "dry" ? "plan only" : null,
                 snap.candidates ? `${snap.candidates} candidates per shot` : null,
                 Array.isArray(snap.stages) ? snap.stages.join(" → ") : null, run.id];
  $("run-meta").textContent = parts.filter(Boolean).join(" · ");
  renderProgress();
}

function renderProgress() {
  const p = view.progress.view();
  const live = view.run && view.run.run_mode === "run" && !p.finished;
  $("progress").hidden = !live;
  if (!live) return;
  const bar = $("progress-bar");
  bar.max = p.candidatesTotal || 1;
  bar.value = p.candidatesDone;
  const total = p.candidatesTotal === null ? "?" : p.candidatesTotal;
  const failed = p.candidatesFailed ? `, ${p.candidatesFailed} failed` : "";
  $("progress-text").textContent = p.status === "planned"
    ? "queued" : `${p.candidatesDone} / ${total} candidates${failed}`;
  $("progress-jobs").textContent = p.jobsTotal ? `· ${p.jobsDone} / ${p.jobsTotal} jobs` : "";
  $("progress-current").textContent = p.current ? `now: ${p.current}` : "";
}

function renderJobs(jobs, candidates) {
  if (jobs) view.jobs = { jobs, candidates };
  if (!view.jobs) return;
  const p = view.progress;
  const running = p && p.loaded && !p.view().finished && view.run && view.run.run_mode === "run";
  const live = running ? p.jobProgress() : null;
  const rows = V.jobRows(view.jobs.jobs, view.jobs.candidates, live).map((row) => el("tr", {},
    el("td", {}, row.job_key),
    el("td", {}, el("span", { class: `badge ${row.status.cls}` }, row.status.text)),
    el("td", {}, row.chosen),
    el("td", {}, row.candidates)));
  $("jobs").tBodies[0].replaceChildren(...rows);
}

// One redraw of the jobs table per frame, however many notifications arrive in it.
let jobsFrame = null;
function jobsSoon() {
  if (jobsFrame === null) jobsFrame = requestAnimationFrame(() => { jobsFrame = null; renderJobs(); });
}

async function refreshJobs(token) {
  const slug = view.slug;
  const runId = view.runId;
  const [jobs, candidates] = await Promise.all([
    call("jobs.list", { slug, run_id: runId }),
    call("candidates.list", { slug, run_id: runId }),
  ]);
  if (token === view.token) renderJobs(jobs.items, candidates.items);
}

// Shows the selected finished run's contact sheet (the pages the run.finished event named, else runs.outputs').
async function showSheet(token) {
  const slug = view.slug;
  let outputs = view.progress.outputs;
  if (!V.sheetPages(outputs).length) {
    outputs = await call("runs.outputs", { slug, run_id: view.runId });
    if (token !== view.token) return;
  }
  view.pages = V.sheetPages(outputs);
  $("sheet").hidden = false;
  $("sheet-paths").textContent = outputs.results_dir
    ? `results: ${outputs.results_dir} (contact_sheet.html, run.jsonl, <job>/final.png)` : "";
  if (!view.pages.length) {
    $("sheet-pages").replaceChildren();
    $("sheet-info").textContent = "this run left no contact sheet";
    $("sheet-img").removeAttribute("src");
    return;
  }
  await showPage(token, 1);
}

// Shows page `number` of the selected run's contact sheet.
async function showPage(token, number) {
  const page = view.pages.find((p) => p.page === number) || view.pages[0];
  const buttons = view.pages.length > 1 ? view.pages.map((p) => el("button", {
    type: "button", "aria-pressed": String(p.page === page.page), dataset: { page: String(p.page) },
    onclick: () => showPage(view.token, p.page) }, String(p.page))) : [];
  $("sheet-pages").replaceChildren(...(buttons.length ? ["page ", ...buttons] : []));
  const assetId = page.png_asset_id;
  if (view.sheetAsset === assetId) return;
  $("sheet-info").textContent = "loading…";
  let content = sheets.get(assetId);
  if (!content) {
    try {
      content = await call("assets.read", { slug: view.slug, asset_id: assetId });
    } catch (err) {
      if (token !== view.token) return;
      $("sheet-info").textContent = "";
      const where = page.png_path ? ` (the file: ${page.png_path})` : "";
      showError(`cannot show the contact sheet: ${describeError(err)}${where}`);
      return;
    }
    sheets.set(assetId, content);
  }
  if (token !== view.token) return;
  view.sheetAsset = assetId;
  const img = $("sheet-img");
  img.onload = () => {
    $("sheet-info").textContent = `${img.naturalWidth} × ${img.naturalHeight} px · ${V.formatBytes(content.size)}`;
  };
  img.src = V.dataUrl(content);
}

function setZoom(mode) {
  $("sheet-frame").classList.toggle("fit", mode === "fit");
  $("sheet-frame").classList.toggle("actual", mode === "actual");
  $("zoom-fit").setAttribute("aria-pressed", String(mode === "fit"));
  $("zoom-actual").setAttribute("aria-pressed", String(mode === "actual"));
}

// ---------------------------------------------------------------- notifications

function onNotification(payload) {
  addEvent({ type: "notification", payload });
  const note = { method: payload.method, params: payload.params || {} };
  if (note.method.startsWith("project.")) refreshProjects();
  if (view.slug) {
    const { runs, refresh } = V.applyToRuns(view.runs, view.slug, note);
    if (refresh) refreshRuns();
    else if (runs !== view.runs) {
      view.runs = runs;
      renderRuns();
    }
  }
  const progress = view.progress;
  if (!progress || !progress.apply(note) || !progress.loaded) return;
  const token = view.token;
  renderRun();
  if (note.method === "candidate.finished" || (note.method === "run.progress" && note.params.stage)) jobsSoon();
  if (note.method === "job.finished") refreshJobs(token).catch((err) => showError(describeError(err)));
  if (note.method === "run.finished") finishShown(token);
}

// The selected run ended: its final state, its jobs with their chosen candidates, its sheet (without a reload).
function finishShown(token) {
  call("runs.get", { slug: view.slug, run_id: view.runId }).then((run) => {
    if (token !== view.token) return;
    view.run = run;
    view.progress.setStatus(run.status);
    renderRun();
    // its badge in the list too (from the run.finished event already, unless the event was lost)
    view.runs = view.runs.map((r) => (r.id === run.id && r.status !== run.status ? { ...r, status: run.status } : r));
    renderRuns();
  }).catch(() => {});
  refreshJobs(token).catch((err) => showError(describeError(err)));
  showSheet(token).catch((err) => { if (token === view.token) showError(describeError(err)); });
}

// A notification the shell dropped (it drops for a webview that lags) must not leave a run shown as running for
// ever: while one is shown, its status is read again now and then.
const RESYNC_MS = 5000;
async function resync() {
  const token = view.token;
  const progress = view.progress;
  if (!progress || !progress.loaded || progress.view().finished || !view.run || view.run.run_mode !== "run") return;
  try {
    const run = await call("runs.get", { slug: view.slug, run_id: view.runId });
    if (token !== view.token || !V.isTerminal(run.status) || progress.view().finished) return;
    progress.setStatus(run.status);
    finishShown(token);
  } catch (err) {
    // the sidecar may be restarting; the next round asks again
  }
}

async function main() {
  $("refresh").addEventListener("click", refreshInfo);
  $("ping").addEventListener("click", ping);
  $("reload").addEventListener("click", () => loadProjects());
  $("zoom-fit").addEventListener("click", () => setZoom("fit"));
  $("zoom-actual").addEventListener("click", () => setZoom("actual"));
  await listen("sidecar://notification", (e) => onNotification(e.payload));
  await listen("sidecar://status", (e) => {
    addEvent({ type: "status", payload: e.payload });
    if (e.payload.event === "ready") {
      refreshInfo();
      loadProjects(); // a restarted sidecar: the lists may have changed meanwhile
      // and a run shown as running may have moved on (or resumed) without us: read it again
      if (view.runId && view.progress && !view.progress.view().finished) selectRun(view.runId);
    }
    invoke("sidecar_status").then((s) => showState(s.state));
  });
  const status = await invoke("sidecar_status");
  for (const entry of status.recent) addEvent(entry);
  showState(status.state);
  await Promise.all([refreshInfo(), loadProjects()]); // both wait for the sidecar if it is still starting
  showState((await invoke("sidecar_status")).state);
  setInterval(resync, RESYNC_MS);
}

main().catch((err) => setState(describeError(err), "down"));
