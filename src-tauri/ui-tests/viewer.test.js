// The viewer's logic (ui/viewer.js) on a real run's answers and notifications (fixtures/run.json, recorded by
// capture_run.py from an in-process run): node --test src-tauri/ui-tests/
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const V = require("../ui/viewer.js");

const fixture = JSON.parse(fs.readFileSync(path.join(__dirname, "fixtures", "run.json"), "utf8"));
const { answers, notifications, run_id: RUN, slug: SLUG } = fixture;
const notes = notifications.map(({ method, params }) => ({ method, params }));
const jobs = answers["jobs.list"].items;
const candidates = answers["candidates.list"].items;
const K = answers["runs.get"].settings_snapshot_json.candidates;
const TOTAL = jobs.length * K;

// The snapshot a viewer gets when it selects the run before it starts: its jobs planned, no candidates.
const atStart = () => ({
  run: answers["runs.start"],
  jobs: jobs.map((j) => ({ ...j, status: "planned", selected_candidate_index: null, final_asset_id: null })),
  candidates: [],
});

test("the fixture is a whole real run", () => {
  assert.equal(notes.filter((n) => n.method === "candidate.finished").length, TOTAL);
  assert.equal(notes.at(-1).method, "run.finished");
  assert.ok(notes.every((n) => n.params.run_id === RUN && n.params.slug === SLUG));
  assert.equal(answers["runs.get"].status, "done");
});

test("progress follows the notifications: candidates done of jobs x K, never backwards, done at the end", () => {
  const p = new V.RunProgress(RUN);
  const s = atStart();
  p.load(s.run, s.jobs, s.candidates);
  assert.deepEqual([p.view().candidatesDone, p.view().candidatesTotal, p.view().status], [0, TOTAL, "planned"]);
  let finished = 0;
  let last = 0;
  let sawMiddle = false;
  for (const note of notes) {
    assert.equal(p.apply(note), note.method !== "run.queued", note.method);
    if (note.method === "candidate.finished") finished += 1;
    const v = p.view();
    assert.equal(v.candidatesDone, finished);
    assert.ok(v.candidatesDone >= last && v.candidatesDone <= TOTAL);
    last = v.candidatesDone;
    if (note.method === "run.progress" && note.params.stage) {
      const { job_key: job, candidate_index: index, stage } = note.params;
      assert.equal(v.current, `${job} · candidate ${index} · ${stage}`);
      assert.equal(v.status, "running");
      assert.equal(v.finished, false);
    }
    if (v.candidatesDone > 0 && v.candidatesDone < TOTAL) {
      sawMiddle = true;
      assert.ok(v.fraction > 0 && v.fraction < 1);
    }
  }
  assert.ok(sawMiddle);
  const v = p.view();
  assert.deepEqual([v.candidatesDone, v.jobsDone, v.jobsTotal, v.fraction, v.status, v.finished, v.current],
                   [TOTAL, jobs.length, jobs.length, 1, "done", true, ""]);
  // The sheet to show is the one the run.finished event names, the same runs.outputs answers later.
  assert.equal(p.outputs.contact_sheet_asset_id, answers["runs.outputs"].contact_sheet_asset_id);
});

test("a snapshot that already holds some notifications' effects counts each candidate once", () => {
  for (const cut of [0, 5, 12, notes.length - 1, notes.length]) {
    const p = new V.RunProgress(RUN);
    for (const note of notes.slice(0, cut)) p.apply(note); // arrived while the snapshot loaded
    p.load(answers["runs.get"], jobs, candidates); // read after the run finished
    for (const note of notes.slice(cut)) p.apply(note); // and the rest, again
    const v = p.view();
    assert.deepEqual([v.candidatesDone, v.candidatesTotal, v.jobsDone, v.status], [TOTAL, TOTAL, jobs.length, "done"],
                     `cut at ${cut}`);
  }
});

test("a finished run does not go back to running when an older snapshot arrives after its end", () => {
  const p = new V.RunProgress(RUN);
  for (const note of notes) p.apply(note);
  p.load({ ...answers["runs.get"], status: "running" }, jobs, candidates.slice(0, 1));
  assert.equal(p.view().status, "done");
  assert.equal(p.view().finished, true);
  assert.equal(p.view().candidatesDone, TOTAL);
});

test("another run's notifications are not this run's", () => {
  const p = new V.RunProgress("some-other-run");
  for (const note of notes) assert.equal(p.apply(note), false);
  assert.equal(p.view().candidatesDone, 0);
  assert.equal(p.view().status, null);
});

test("failed candidates count as finished and are shown apart", () => {
  const p = new V.RunProgress(RUN);
  const s = atStart();
  p.load(s.run, s.jobs, s.candidates);
  p.apply({ method: "candidate.finished", params: { run_id: RUN, job_key: jobs[0].job_key, candidate_index: 0,
                                                     status: "failed" } });
  assert.deepEqual([p.view().candidatesDone, p.view().candidatesFailed], [1, 1]);
});

test("the run list changes a listed run's badge in place and asks for a refetch for a new run", () => {
  const runs = answers["runs.list"].items.map((r) => ({ ...r, status: "planned" }));
  const started = notes.find((n) => n.method === "run.started");
  let out = V.applyToRuns(runs, SLUG, started);
  assert.equal(out.refresh, false);
  assert.equal(out.runs[0].status, "running");
  assert.equal(runs[0].status, "planned", "the old list is not changed");
  out = V.applyToRuns(out.runs, SLUG, notes.at(-1));
  assert.equal(out.runs[0].status, "done");
  const same = V.applyToRuns(out.runs, SLUG, notes.at(-1));
  assert.equal(same.runs, out.runs, "nothing changed: the same list");
  assert.equal(V.applyToRuns([], SLUG, notes[0]).refresh, true, "run.queued of a run not listed yet");
  assert.equal(V.applyToRuns(runs, "another-project", started).refresh, false);
  assert.equal(V.applyToRuns(runs, SLUG, notes.find((n) => n.method === "run.progress")).refresh, false);
});

test("runs newest first", () => {
  const a = { id: "a", created_at: "2026-01-01T10:00:00.000001Z" };
  const b = { id: "b", created_at: "2026-01-02T09:00:00Z" };
  const c = { id: "c", created_at: "2026-01-02T09:00:00Z" };
  assert.deepEqual(V.sortRuns([a, b, c]).map((r) => r.id), ["c", "b", "a"]);
});

test("the jobs table names each job's chosen candidate", () => {
  const rows = V.jobRows(jobs, candidates);
  assert.deepEqual(rows.map((r) => r.job_key), jobs.map((j) => j.job_key));
  for (const [i, row] of rows.entries()) {
    assert.equal(row.chosen, `#${jobs[i].selected_candidate_index}`);
    assert.equal(row.status.text, "done");
    assert.equal(row.candidates, String(K));
  }
  const unchosen = V.jobRows([{ ...jobs[0], status: "failed_output_guard", selected_candidate_index: null }],
                             candidates.map((c) => ({ ...c, status: "failed_output_guard" })));
  assert.equal(unchosen[0].chosen, "—");
  assert.deepEqual(unchosen[0].status, { text: "failed QA", cls: "down" });
  assert.equal(unchosen[0].candidates, `${K} (${K} not passed)`);
});

test("labels, data URLs, sizes, and the small cache", () => {
  const label = V.runLabel(answers["runs.get"]);
  assert.match(label.title, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
  assert.equal(label.detail, `preview · ${RUN.slice(0, 8)}`);
  assert.equal(V.dataUrl({ mime_type: "image/png", data_base64: "iVBO" }), "data:image/png;base64,iVBO");
  assert.equal(V.formatBytes(560050), "547 KB");
  assert.equal(V.badge("partial").cls, "warn");
  const cache = new V.Recent(2);
  cache.set("a", 1);
  cache.set("b", 2);
  cache.get("a");
  cache.set("c", 3);
  assert.deepEqual([cache.get("a"), cache.get("b"), cache.get("c")], [1, undefined, 3]);
});

test("the contact sheet's pages: from the run.finished event, from runs.outputs, from a single-sheet runner", () => {
  const fromEvent = V.sheetPages(notes.at(-1).params);
  const fromAnswer = V.sheetPages(answers["runs.outputs"]);
  assert.ok(fromEvent.length >= 1);
  assert.deepEqual(fromEvent, fromAnswer, "the event and a later runs.outputs name the same pages");
  assert.equal(fromEvent[0].page, 1);
  assert.equal(fromEvent[0].png_asset_id, answers["runs.outputs"].contact_sheet_asset_id);
  const single = { contact_sheet_asset_id: "png-1", contact_sheet_path: "/x.png", contact_sheet_html_asset_id: "h-1",
                   contact_sheet_html_path: "/x.html" };
  assert.deepEqual(V.sheetPages(single), [
    { page: 1, png_asset_id: "png-1", png_path: "/x.png", html_asset_id: "h-1", html_path: "/x.html" }]);
  const two = { contact_sheet_pages: [{ png_asset_id: "a" }, { png_asset_id: "b" }] };
  assert.deepEqual(V.sheetPages(two).map((p) => [p.page, p.png_asset_id]), [[1, "a"], [2, "b"]]);
  assert.deepEqual(V.sheetPages({ contact_sheet_asset_id: null, contact_sheet_pages: [] }), []);
  assert.deepEqual(V.sheetPages(null), []);
});

test("while a run runs, the jobs table counts each job's candidates from the notifications", () => {
  const p = new V.RunProgress(RUN);
  const s = atStart();
  p.load(s.run, s.jobs, s.candidates);
  const firstJob = jobs[0].job_key;
  const upTo = notes.findIndex((n) => n.method === "candidate.finished" && n.params.job_key === firstJob);
  for (const note of notes.slice(0, upTo + 1)) p.apply(note);
  const rows = V.jobRows(s.jobs, s.candidates, p.jobProgress());
  assert.equal(rows[0].candidates, `1 / ${K}`);
  assert.equal(rows[0].status.text, "running");
  assert.deepEqual([rows[1].candidates, rows[1].status.text], [`0 / ${K}`, "planned"]);
  // A finished job's row is jobs.list's: its status and its candidates.
  const done = V.jobRows(jobs, candidates, p.jobProgress());
  assert.deepEqual([done[0].status.text, done[0].candidates], ["done", String(K)]);
});
