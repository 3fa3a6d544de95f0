// The viewer's logic without the DOM (node's test runner loads this file too: ui-tests/viewer.test.js): run
// badges and order, a running run's progress folded from the sidecar's notifications, the per-job table, the
// contact sheet's data URL. app.js draws what these return.
//
// Notifications (the shell's `sidecar://notification` payloads: {method, params, at, seq}) from the runner, all
// with params.run_id and params.slug:
//   run.queued, run.started {jobs_total, resumed}, run.progress {job_key?, candidate_index?, stage?, jobs_done?,
//   jobs_total?}, candidate.finished {job_key, candidate_index, status}, job.finished {job_key, status,
//   selected_candidate_index}, run.finished {status, jobs, contact_sheet_asset_id, ...}, run.canceling.
"use strict";

(function (root) {
  const TERMINAL = new Set(["done", "failed", "partial"]);
  const FINISHED_JOB = new Set(["done", "failed", "failed_output_guard"]);
  const BADGES = {
    planned: { text: "planned", cls: "planned" },
    running: { text: "running", cls: "running" },
    done: { text: "done", cls: "ready" },
    partial: { text: "partial", cls: "warn" },
    failed: { text: "failed", cls: "down" },
    failed_output_guard: { text: "failed QA", cls: "down" },
  };
  // Methods that change what a project's run list shows.
  const RUN_LIST_METHODS = new Set(["run.queued", "run.planned", "run.started", "run.finished"]);

  function badge(status) {
    return BADGES[status] || { text: String(status || "unknown"), cls: "" };
  }

  function isTerminal(status) {
    return TERMINAL.has(status);
  }

  // Newest first (runs.list already is; a run added from an event must land in the right place too).
  function sortRuns(items) {
    return items.slice().sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1
      : a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  // "2026-11-24 22:45:07" in local time, for an ISO timestamp; "" for none.
  function formatWhen(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    return `${day} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function shortId(id) {
    return String(id || "").slice(0, 8);
  }

  // The run list's entry for a runs.list item.
  function runLabel(run) {
    const mode = run.run_mode === "dry" ? " · plan only" : "";
    return { title: formatWhen(run.created_at) || shortId(run.id),
             detail: `${run.provider_code || "?"} · ${shortId(run.id)}${mode}` };
  }

  // Applies a notification to a run list: {runs, refresh}. `runs` is a new list when a listed run changed
  // status, `refresh` true when the list should be fetched again (a run it does not hold yet).
  function applyToRuns(runs, slug, note) {
    const p = (note && note.params) || {};
    if (!RUN_LIST_METHODS.has(note && note.method) || p.slug !== slug || !p.run_id) return { runs, refresh: false };
    const at = runs.findIndex((r) => r.id === p.run_id);
    if (at === -1) return { runs, refresh: true };
    let status = runs[at].status;
    if (note.method === "run.started" && !isTerminal(status)) status = "running";
    if (note.method === "run.finished" && p.status) status = p.status;
    if (status === runs[at].status) return { runs, refresh: false };
    const next = runs.slice();
    next[at] = { ...runs[at], status };
    return { runs: next, refresh: false };
  }

  // A run's progress, from a snapshot (runs.get, jobs.list, candidates.list) and the notifications about it, in
  // any order: a notification that arrives before the snapshot, or whose effect the snapshot already holds, counts
  // once (candidates and jobs are counted as sets of keys), and a finished run never goes back to running.
  class RunProgress {
    constructor(runId) {
      this.runId = runId;
      this.status = null;
      this.perJob = null; // candidates per job (K), from the run's snapshot
      this.jobsTotal = null;
      this.jobKeys = new Map(); // job id -> job_key (candidates.list names jobs by id)
      this.candidates = new Set(); // "job_key/index" of finished candidates
      this.failed = new Set();
      this.jobs = new Set(); // job_key of finished jobs
      this.current = null; // {job_key, candidate_index, stage} of the latest stage started
      this.outputs = null; // the run.finished params: contact sheet ids and paths
      this.loaded = false;
    }

    setStatus(status) {
      if (!status) return;
      if (isTerminal(this.status) && !isTerminal(status)) return;
      this.status = status;
    }

    // The snapshot: run (runs.get), jobs (jobs.list items), candidates (candidates.list items).
    load(run, jobs, candidates) {
      this.setStatus(run.status);
      const snapshot = run.settings_snapshot_json || {};
      if (typeof snapshot.candidates === "number") this.perJob = snapshot.candidates;
      const counted = Object.values(run.jobs || {}).reduce((a, b) => a + b, 0);
      this.jobsTotal = jobs.length || counted || this.jobsTotal;
      for (const job of jobs) {
        this.jobKeys.set(job.id, job.job_key);
        if (FINISHED_JOB.has(job.status)) this.jobs.add(job.job_key);
      }
      for (const cand of candidates) {
        const key = `${this.jobKeys.get(cand.job_id) || cand.job_id}/${cand.candidate_index}`;
        this.candidates.add(key);
        if (cand.status === "failed") this.failed.add(key);
      }
      this.loaded = true;
    }

    // Folds one notification ({method, params}) in; true when it was about this run.
    apply(note) {
      const p = (note && note.params) || {};
      if (p.run_id !== this.runId) return false;
      switch (note.method) {
        case "run.started":
          this.setStatus("running");
          if (typeof p.jobs_total === "number") this.jobsTotal = p.jobs_total;
          break;
        case "run.progress":
          if (typeof p.jobs_total === "number") this.jobsTotal = p.jobs_total;
          if (p.stage) this.current = { job_key: p.job_key, candidate_index: p.candidate_index, stage: p.stage };
          if (!isTerminal(this.status)) this.setStatus("running");
          break;
        case "candidate.finished": {
          const key = `${p.job_key}/${p.candidate_index}`;
          this.candidates.add(key);
          if (p.status === "failed") this.failed.add(key);
          break;
        }
        case "job.finished":
          this.jobs.add(p.job_key);
          break;
        case "run.finished":
          this.setStatus(p.status || "done");
          this.outputs = p;
          this.current = null;
          break;
        default:
          return false;
      }
      return true;
    }

    // Finished candidates per job_key, and the job of the latest stage started (for the jobs table while running).
    jobProgress() {
      const counts = new Map();
      for (const key of this.candidates) {
        const job = key.slice(0, key.lastIndexOf("/"));
        counts.set(job, (counts.get(job) || 0) + 1);
      }
      return { counts, current: this.current ? this.current.job_key : null, perJob: this.perJob };
    }

    // What the progress panel shows.
    view() {
      const total = this.perJob !== null && this.jobsTotal !== null ? this.perJob * this.jobsTotal : null;
      const done = this.candidates.size;
      const c = this.current;
      return {
        status: this.status,
        finished: isTerminal(this.status),
        candidatesDone: total === null ? done : Math.min(done, total),
        candidatesTotal: total,
        candidatesFailed: this.failed.size,
        jobsDone: this.jobs.size,
        jobsTotal: this.jobsTotal,
        fraction: total ? Math.min(done, total) / total : 0,
        current: c ? `${c.job_key} · candidate ${c.candidate_index} · ${c.stage}` : "",
      };
    }
  }

  // The per-job table: job key, status badge, chosen candidate, candidates (finished, of which not passed).
  // `live` (RunProgress.jobProgress() of a running run) brings the rows up to date between fetches of jobs.list:
  // the candidates finished so far of K, and the job being worked on as running.
  function jobRows(jobs, candidates, live) {
    const byJob = new Map();
    for (const cand of candidates || []) {
      const list = byJob.get(cand.job_id) || [];
      list.push(cand);
      byJob.set(cand.job_id, list);
    }
    return jobs.map((job) => {
      const mine = byJob.get(job.id) || [];
      const failed = mine.filter((c) => c.status !== "done").length;
      let status = job.status;
      let count = failed ? `${mine.length} (${failed} not passed)` : String(mine.length);
      if (live && !FINISHED_JOB.has(status)) {
        const done = Math.max(mine.length, live.counts.get(job.job_key) || 0);
        if (done || live.current === job.job_key) status = "running";
        count = live.perJob ? `${done} / ${live.perJob}` : String(done);
      }
      return {
        job_key: job.job_key,
        status: badge(status),
        chosen: job.selected_candidate_index === null || job.selected_candidate_index === undefined
          ? "—" : `#${job.selected_candidate_index}`,
        candidates: count,
      };
    });
  }

  // The pages of a run's contact sheet, from a run.finished event's params or a runs.outputs answer:
  // [{page, png_asset_id, png_path, html_asset_id, html_path}], [] when the run left none. A sidecar whose runner
  // writes one sheet (no contact_sheet_pages) has the one page of its contact_sheet_* fields.
  function sheetPages(outputs) {
    if (!outputs) return [];
    if (Array.isArray(outputs.contact_sheet_pages) && outputs.contact_sheet_pages.length) {
      return outputs.contact_sheet_pages.map((p, i) => ({ page: i + 1, ...p }));
    }
    if (!outputs.contact_sheet_asset_id) return [];
    return [{ page: 1, png_asset_id: outputs.contact_sheet_asset_id, png_path: outputs.contact_sheet_path || null,
              html_asset_id: outputs.contact_sheet_html_asset_id || null,
              html_path: outputs.contact_sheet_html_path || null }];
  }

  // An <img> source for an assets.read answer.
  function dataUrl(content) {
    return `data:${content.mime_type || "application/octet-stream"};base64,${content.data_base64}`;
  }

  // "1.2 MB" style sizes.
  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  // A small map that forgets the entry used least recently (decoded contact sheets are large).
  class Recent {
    constructor(max = 6) {
      this.max = max;
      this.map = new Map();
    }

    get(key) {
      if (!this.map.has(key)) return undefined;
      const value = this.map.get(key);
      this.map.delete(key);
      this.map.set(key, value);
      return value;
    }

    set(key, value) {
      this.map.delete(key);
      this.map.set(key, value);
      while (this.map.size > this.max) this.map.delete(this.map.keys().next().value);
    }
  }

  const api = {
    RunProgress, Recent, applyToRuns, badge, dataUrl, formatBytes, formatWhen, isTerminal, jobRows, runLabel,
    sheetPages, shortId, sortRuns,
  };
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.IatViewer = api;
})(typeof window === "undefined" ? globalThis : window);
