// The status page's event logic (ui/events.js), with node's test runner: node --test src-tauri/ui-tests/
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { EventLog, describe, describeState, entryTime, formatTime } = require("../ui/events.js");

const READY_AT = Date.UTC(2001, 1, 3, 4, 5, 6);
const ready = (seq, at = READY_AT) => ({
  type: "status",
  payload: { event: "ready", generation: 1, pid: 42, ready_at_ms: at, info: { pid: 42 }, at, seq },
});
const note = (seq, at) => ({
  type: "notification",
  payload: { method: "project.created", params: { slug: `p${seq}` }, at, seq },
});
const seqs = (log) => log.entries().map((e) => e.payload.seq);

test("an event shows the time the shell stamped on it, however late the page renders it", () => {
  const shown = describe(ready(1));
  assert.equal(shown.time, new Date(READY_AT).toLocaleTimeString());
  assert.notEqual(shown.time, new Date().toLocaleTimeString());
  assert.equal(describe(note(2, READY_AT + 60_000)).time, new Date(READY_AT + 60_000).toLocaleTimeString());
});

test("a ready event without `at` falls back to its handshake time, an unstamped one shows no time", () => {
  const entry = ready(1);
  delete entry.payload.at;
  assert.equal(entryTime(entry), READY_AT);
  assert.equal(entryTime({ type: "notification", payload: { method: "x", params: {} } }), null);
  assert.equal(formatTime(null), "--:--:--");
});

test("the text leaves out the stamps and flags failures", () => {
  const shown = describe(ready(7));
  assert.equal(shown.text, '[ready] {"generation":1,"pid":42,"info":{"pid":42}}');
  assert.equal(shown.error, false);
  assert.equal(describe(note(3, READY_AT)).text, 'project.created {"slug":"p3"}');
  const exited = (expected) => ({ type: "status", payload: { event: "exited", pid: 1, expected, at: 1, seq: 9 } });
  assert.equal(describe(exited(false)).error, true);
  assert.equal(describe(exited(true)).error, false);
  assert.equal(describe({ type: "status", payload: { event: "start_failed", error: "x", at: 1, seq: 2 } }).error, true);
});

test("the log is newest first by seq, whatever the arrival order, and holds each event once", () => {
  const log = new EventLog();
  // A reload: a live event arrives between `listen` and `sidecar_status`, then the replay includes it too.
  assert.equal(log.add(note(4, READY_AT + 4000)), true);
  for (const entry of [ready(1), note(2, READY_AT + 2000), note(3, READY_AT + 3000), note(4, READY_AT + 4000)]) {
    log.add(entry);
  }
  assert.deepEqual(seqs(log), [4, 3, 2, 1]);
  assert.equal(log.add(note(3, READY_AT + 3000)), false);
  assert.deepEqual(seqs(log), [4, 3, 2, 1]);
  // Reloading again renders the same times: nothing depends on when the page saw the events.
  const again = new EventLog();
  for (const entry of [ready(1), note(2, READY_AT + 2000), note(3, READY_AT + 3000), note(4, READY_AT + 4000)]) {
    again.add(entry);
  }
  assert.deepEqual(again.entries().map(describe), log.entries().map(describe));
});

test("a full log keeps the newest entries", () => {
  const log = new EventLog(3);
  for (let seq = 1; seq <= 5; seq++) log.add(note(seq, seq));
  assert.deepEqual(seqs(log), [5, 4, 3]);
  assert.equal(log.add(note(2, 2)), false, "older than everything kept");
  assert.equal(log.add(note(7, 7)), true);
  assert.deepEqual(seqs(log), [7, 5, 4]);
});

test("the badge says since when the sidecar is ready", () => {
  const state = { state: "ready", pid: 42, generation: 1, ready_at_ms: READY_AT };
  assert.deepEqual(describeState(state), {
    text: `ready · pid 42 · since ${new Date(READY_AT).toLocaleTimeString()}`,
    cls: "ready",
  });
  assert.equal(describeState({ state: "restarting", attempt: 2 }).text, "restarting (attempt 2)");
  assert.equal(describeState(undefined).text, "starting…");
});
