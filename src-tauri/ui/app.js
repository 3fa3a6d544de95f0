// The status page: system.info and the sidecar's recent events. Plain script, no bundler, no network:
// it only uses the two shell commands and the event listener its capability grants.
"use strict";

const { invoke } = window.__TAURI__.core;
const { listen } = window.__TAURI__.event;

const MAX_EVENTS = 50;
const $ = (id) => document.getElementById(id);

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
  switch (state && state.state) {
    case "ready": setState(`ready · pid ${state.pid}`, "ready"); break;
    case "restarting": setState(`restarting (attempt ${state.attempt})`, "down"); break;
    case "stopped": setState("stopped", "down"); break;
    case "stopping": setState("stopping…", "down"); break;
    default: setState("starting…");
  }
}

function addEvent(entry) {
  const li = document.createElement("li");
  const time = new Date().toLocaleTimeString();
  if (entry.type === "notification") {
    li.textContent = `${time} ${entry.payload.method} ${JSON.stringify(entry.payload.params)}`;
  } else {
    const { event, ...rest } = entry.payload;
    li.textContent = `${time} [${event}] ${JSON.stringify(rest)}`;
    if (event === "start_failed" || (event === "exited" && !rest.expected)) li.className = "error";
  }
  const list = $("events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
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
