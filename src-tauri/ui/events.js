// The status page's event list, without the DOM (node's test runner loads this file too: ui-tests/).
// Every event carries `at` (when it happened, ms since the epoch, stamped by the shell; a ready event's is the
// sidecar's handshake) and `seq` (the shell's order across both channels). The page shows `at`, never the time it
// received the event, so a reload that replays the shell's recent events shows them as they happened.
"use strict";

(function (root) {
  const MAX_EVENTS = 50;

  // When the entry happened, or null when the shell did not say.
  function entryTime(entry) {
    const p = entry.payload || {};
    if (typeof p.at === "number") return p.at;
    if (typeof p.ready_at_ms === "number") return p.ready_at_ms;
    return null;
  }

  function formatTime(ms) {
    return ms === null ? "--:--:--" : new Date(ms).toLocaleTimeString();
  }

  // {time, text, error} for one entry ({type: "notification" | "status", payload}).
  function describe(entry) {
    const time = formatTime(entryTime(entry));
    if (entry.type === "notification") {
      return { time, text: `${entry.payload.method} ${JSON.stringify(entry.payload.params)}`, error: false };
    }
    // at/seq/ready_at_ms are shown as the time already.
    const { event, at, seq, ready_at_ms, ...rest } = entry.payload;
    const error = event === "start_failed" || (event === "exited" && !rest.expected);
    return { time, text: `[${event}] ${JSON.stringify(rest)}`, error };
  }

  // The newest `max` entries in the shell's order, each once: live events and the replayed `recent` list may
  // overlap (an event between `listen` and `sidecar_status`) and may arrive in either order.
  class EventLog {
    constructor(max = MAX_EVENTS) {
      this.max = max;
      this.items = []; // {seq, entry}, newest first
    }

    // Adds one entry; false when it is already there or older than everything kept in a full log.
    add(entry) {
      const seq = entry.payload && entry.payload.seq;
      if (typeof seq !== "number") {
        this.items.unshift({ seq: null, entry }); // the shell always sends one; newest, should it not
      } else {
        if (this.items.some((item) => item.seq === seq)) return false;
        const at = this.items.findIndex((item) => item.seq !== null && item.seq < seq);
        if (at !== -1) {
          this.items.splice(at, 0, { seq, entry });
        } else if (this.items.length < this.max) {
          this.items.push({ seq, entry });
        } else {
          return false;
        }
      }
      if (this.items.length > this.max) this.items.length = this.max;
      return true;
    }

    entries() {
      return this.items.map((item) => item.entry);
    }
  }

  // The state badge's text and class for `sidecar_status().state`.
  function describeState(state) {
    switch (state && state.state) {
      case "ready": {
        const since = typeof state.ready_at_ms === "number" ? ` · since ${formatTime(state.ready_at_ms)}` : "";
        return { text: `ready · pid ${state.pid}${since}`, cls: "ready" };
      }
      case "restarting": return { text: `restarting (attempt ${state.attempt})`, cls: "down" };
      case "stopped": return { text: "stopped", cls: "down" };
      case "stopping": return { text: "stopping…", cls: "down" };
      default: return { text: "starting…", cls: "" };
    }
  }

  const api = { MAX_EVENTS, EventLog, describe, describeState, entryTime, formatTime };
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.IatEvents = api;
})(typeof window === "undefined" ? globalThis : window);
