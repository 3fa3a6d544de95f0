// The status page: system.info and the sidecar's recent events. Plain script, no bundler, no network:
// it only uses the two shell commands and the event listener its capability grants. The event list's logic
// (times, order, duplicates) is in events.js.
"use strict";

const { invoke } = window.__TAURI__.core;
const { listen } = window.__TAURI__.event;
const { EventLog, describe, describeState } = window.IatEvents;

const $ = (id) => document.getElementById(id);
const log = new EventLog();

function describeError(err) {
  if (err && err.kind === "rpc") {
    const name = err.data && err.data.name ? ` ${err.data.name}` : "";
    return `sidecar error ${err.code}${name}: ${err.message}`;
  }
  if (err && err.kind) return `${err.kind}: ${err.message}`;
  return String(err);
}

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
    const li = document.createElement("li");
    const stamp = document.createElement("time");
    stamp.textContent = time;
    li.append(stamp, ` ${text}`);
    if (error) li.className = "error";
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
    const info = await invoke("sidecar_call", { method: "system.info", params: {} });
    dl.replaceChildren();
    for (const [key, value] of Object.entries(info)) {
      const dt = document.createElement("dt");
      dt.textContent = key;
      const dd = document.createElement("dd");
      dd.textContent = typeof value === "string" ? value : JSON.stringify(value);
      dl.append(dt, dd);
    }
  } catch (err) {
    dl.replaceChildren();
    const dd = document.createElement("dd");
    dd.className = "error";
    dd.textContent = describeError(err);
    dl.append(dd);
  }
}

async function ping() {
  const out = $("ping-result");
  const started = performance.now();
  try {
    await invoke("sidecar_call", { method: "system.ping", params: {} });
    out.textContent = `pong in ${(performance.now() - started).toFixed(1)} ms`;
    out.className = "muted";
  } catch (err) {
    out.textContent = describeError(err);
    out.className = "error";
  }
}

async function main() {
  $("refresh").addEventListener("click", refreshInfo);
  $("ping").addEventListener("click", ping);
  await listen("sidecar://notification", (e) => addEvent({ type: "notification", payload: e.payload }));
  await listen("sidecar://status", (e) => {
    addEvent({ type: "status", payload: e.payload });
    if (e.payload.event === "ready") refreshInfo();
    invoke("sidecar_status").then((s) => showState(s.state));
  });
  const status = await invoke("sidecar_status");
  for (const entry of status.recent) addEvent(entry);
  showState(status.state);
  await refreshInfo(); // waits for the sidecar if it is still starting
  showState((await invoke("sidecar_status")).state);
}

main().catch((err) => setState(describeError(err), "down"));
