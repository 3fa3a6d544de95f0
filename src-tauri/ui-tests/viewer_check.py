#!/usr/bin/env python3
"""Checks the viewer (src-tauri/ui) in WebKitGTK 4.1 against a real sidecar: the page's `sidecar_call` goes to a
`<sidecar> serve --stdio` process and its notifications come back as the shell forwards them ({method, params,
at, seq}), through a stand-in for the shell's two commands and its event channel.

    python3 src-tauri/ui-tests/viewer_check.py OUT_DIR SIDECAR   (a display, e.g. Xvfb; python3-gi, WebKit2 4.1)

SIDECAR is the frozen `iat-sidecar` (or `.venv/bin/iat-sidecar`). On a throwaway home, `SIDECAR demo --quick`
makes a project with a finished run first. Then:
1. the page lists the project, selects it and its newest run, and shows that run's contact sheet (the PNG the
   sidecar stored, at its own size) and its jobs with their chosen candidates (as jobs.list says); Fit keeps the
   sheet inside its frame, 100% shows it at its size;
2. a run of 9 shots x 2 candidates is started (runs.start, as another client would); the check holds the
   notifications back until the page, refreshed, has selected the run and read its state mid-run, then lets them
   through: the progress bar never goes back, never passes the total, shows a state strictly between 0 and the
   total with the current job and stage, and counts no candidate twice;
3. when the run finishes the contact sheet appears without a reload (the run.finished notification names it),
   the run's badge says done, the jobs table holds all nine jobs; a sheet of several pages (the runner's pages of
   eight jobs) shows each page's PNG on its button;
4. a run whose run.finished notification is dropped (as the shell drops for a webview that lags) still turns
   into its sheet: the page reads a running run's status again every few seconds.
Uncaught errors and Content Security Policy violations fail the check. Writes OUT_DIR/viewer-running.png and
OUT_DIR/viewer.png (the window). scripts/test-app runs it.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from page_check import Gtk, Page  # noqa: E402

SHOTS = [
    {"job_key": f"{i + 1:02d}-{name}", "scene": scene, "characters": chars, "time_of_day": tod, "weather": weather}
    for i, (name, scene, chars, tod, weather) in enumerate([
        ("quay", "Mira on the quay at dawn", ["mira"], "dawn", "fog"),
        ("stalls", "Mira and Bolt at the market stalls", ["mira", "bolt"], "day", "clear"),
        ("road", "Bolt on the lighthouse road", ["bolt"], "dusk", "rain"),
        ("lamp", "Bolt lights the lamp", ["bolt"], "night", "clear"),
        ("boats", "Mira watches the boats come in", ["mira"], "day", "clear"),
        ("sea", "Mira and Bolt look at the sea", ["mira", "bolt"], "night", "snow"),
        ("gulls", "Gulls over the harbour wall", [], "day", "clear"),
        ("steps", "Mira runs down the harbour steps", ["mira"], "dusk", "clear"),
        ("light", "The lighthouse beam over the water", [], "night", "fog"),
    ])
]
CANDIDATES = 2
TOTAL = len(SHOTS) * CANDIDATES

# The shell as the page sees it: sidecar_call posts to the check, which answers through __bridge.settle;
# notifications arrive through __bridge.emit, as the shell's events do.
STUB = """
(() => {
  const READY = %(ready)s;
  const bridge = {next: 1, pending: new Map(), listeners: {},
    settle(id, ok, value) {
      const p = this.pending.get(id);
      this.pending.delete(id);
      if (p) (ok ? p.resolve : p.reject)(value);
    },
    emit(name, payload) { const cb = this.listeners[name]; if (cb) cb({payload}); },
  };
  window.__bridge = bridge;
  window.__TAURI__ = {
    core: {invoke: (cmd, args) => {
      if (cmd === "sidecar_status") {
        return Promise.resolve({state: {state: "ready", generation: 1, pid: READY.pid, ready_at_ms: READY.at},
                                program: "viewer_check", recent: [{type: "status", payload:
                                  {event: "ready", generation: 1, pid: READY.pid, ready_at_ms: READY.at,
                                   at: READY.at, seq: 0}}]});
      }
      if (cmd !== "sidecar_call") return Promise.reject({kind: "not_allowed", message: cmd});
      const id = bridge.next++;
      return new Promise((resolve, reject) => {
        bridge.pending.set(id, {resolve, reject});
        window.webkit.messageHandlers.iat.postMessage(
          JSON.stringify({id, method: args.method, params: args.params || {}}));
      });
    }},
    event: {listen: async (name, cb) => { bridge.listeners[name] = cb; return () => {}; }},
  };
})();
"""


class Sidecar:
    """`serve --stdio` of the sidecar under test; lines read on a thread, handled on the GTK thread (`poll`)."""

    def __init__(self, exe: str, home: Path, log: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("IAT_")}
        env["IAT_HOME"] = str(home)
        self.proc = subprocess.Popen([exe, "serve", "--stdio"], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(log, "wb"))
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.lines.get(timeout=60)
        if first is None or first.get("method") != "sidecar.ready":
            raise AssertionError(f"the sidecar did not start: {first!r}; log {log}")
        self.ready = first["params"]
        self.ready_at = int(time.time() * 1000)
        self.page: Page | None = None
        self.seq = 0
        self.hold = False
        self.drop: set[str] = set()  # methods not forwarded (as a shell that drops for a lagging webview)
        self.held: list[dict] = []
        self.delivered: list[dict] = []  # notifications the page got, as it got them
        self.answers: dict[str, dict] = {}  # answers to the check's own calls
        self.page_calls: list[str] = []

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, message: dict) -> None:
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def from_page(self, message: dict) -> None:
        self.page_calls.append(message["method"])
        self.send({"jsonrpc": "2.0", "id": message["id"], "method": message["method"], "params": message["params"]})

    def deliver(self, note: dict) -> None:
        self.seq += 1
        payload = {"method": note["method"], "params": note.get("params", {}), "at": int(time.time() * 1000),
                   "seq": self.seq}
        self.delivered.append(payload)
        self.page.js(f"(window.__bridge.emit('sidecar://notification', {json.dumps(payload)}), 1)")

    def release(self) -> None:
        self.hold = False
        held, self.held = self.held, []
        for note in held:
            self.deliver(note)

    def poll(self) -> None:
        while True:
            try:
                msg = self.lines.get_nowait()
            except queue.Empty:
                return
            if msg is None:
                raise AssertionError("the sidecar exited")
            if "id" not in msg:
                if msg.get("method") in self.drop:
                    continue
                if self.hold:
                    self.held.append(msg)
                else:
                    self.deliver(msg)
            elif isinstance(msg["id"], str):
                self.answers[msg["id"]] = msg
            else:
                ok = "error" not in msg
                value = msg["result"] if ok else {"kind": "rpc", **msg["error"]}
                self.page.js(f"(window.__bridge.settle({msg['id']}, {json.dumps(ok)}, {json.dumps(value)}), 1)")

    def call(self, method: str, **params):
        """The check's own call (string ids: the page's are numbers)."""
        key = f"check-{len(self.answers)}-{method}"
        self.send({"jsonrpc": "2.0", "id": key, "method": method, "params": params})
        end = time.monotonic() + 60
        while key not in self.answers:
            if time.monotonic() > end:
                raise AssertionError(f"no answer to {method}")
            self.page.pump(0.02) if self.page else time.sleep(0.02)
            if self.page is None:
                self.poll()
        msg = self.answers[key]
        if "error" in msg:
            raise AssertionError(f"{method}: {msg['error']}")
        return msg["result"]

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - a stuck sidecar is killed
            self.proc.kill()
            self.proc.wait()


class BridgedPage(Page):
    def __init__(self, sidecar: Sidecar):
        stub = STUB % {"ready": json.dumps({"pid": sidecar.ready["pid"], "at": sidecar.ready_at})}
        self.sidecar = sidecar
        super().__init__(stub, size=(1200, 780), on_message=sidecar.from_page)
        sidecar.page = self

    def pump(self, seconds: float) -> None:
        from gi.repository import GLib

        end = time.monotonic() + seconds
        ctx = GLib.MainContext.default()
        while time.monotonic() < end:
            ctx.iteration(False)
            self.sidecar.poll()
            time.sleep(0.005)


def sheet_state(page: Page) -> dict:
    return page.js("""(() => {
      const img = document.getElementById('sheet-img'), frame = document.getElementById('sheet-frame');
      const sheet = document.getElementById('sheet');
      return {shown: !sheet.hidden, complete: img.complete && img.naturalWidth > 0, src: (img.src || '').slice(0, 22),
              natural: [img.naturalWidth, img.naturalHeight], width: img.getBoundingClientRect().width,
              frame: frame.clientWidth, info: document.getElementById('sheet-info').textContent,
              error: document.getElementById('run-error').textContent};
    })()""")


def jobs_table(page: Page) -> list[list[str]]:
    return page.js("[...document.querySelectorAll('#jobs tbody tr')]"
                   ".map((tr) => [...tr.cells].map((td) => td.textContent))")


def check_jobs(page: Page, sidecar: Sidecar, slug: str, run_id: str, what: str) -> None:
    jobs = sidecar.call("jobs.list", slug=slug, run_id=run_id)["items"]
    expected = [[j["job_key"], "—" if j["selected_candidate_index"] is None else f"#{j['selected_candidate_index']}"]
                for j in jobs]
    end = time.monotonic() + 30
    while True:
        rows = jobs_table(page)
        if [[r[0], r[2]] for r in rows] == expected:
            break
        if time.monotonic() > end:
            raise AssertionError(f"{what}: the jobs table shows {rows}, jobs.list says {expected}")
        page.pump(0.1)
    print(f"viewer_check: {what}: jobs table {rows}")


def check_sheet(page: Page, sidecar: Sidecar, slug: str, run_id: str, what: str) -> None:
    outputs = sidecar.call("runs.outputs", slug=slug, run_id=run_id)
    asset = sidecar.call("assets.get", slug=slug, asset_id=outputs["contact_sheet_asset_id"])
    size = [asset["width"], asset["height"]]
    page.wait_js(f"""(() => {{ const img = document.getElementById('sheet-img');
      return !document.getElementById('sheet').hidden && img.complete &&
             img.naturalWidth === {size[0]} && img.naturalHeight === {size[1]}; }})()""",
                 f"{what}: the contact sheet {size[0]}x{size[1]}", timeout=30)
    state = sheet_state(page)
    assert state["src"].startswith("data:image/png;base64"), state
    assert state["width"] <= state["frame"] + 0.5, f"{what}: Fit leaves the sheet wider than its frame: {state}"
    assert f"{size[0]} × {size[1]} px" in state["info"], state
    print(f"viewer_check: {what}: contact sheet {size[0]}x{size[1]} shown ({state['info']}), "
          f"{state['width']:.0f} px wide in a {state['frame']} px frame")


def check_pages(page: Page, sidecar: Sidecar, slug: str, run_id: str) -> None:
    pages = sidecar.call("runs.outputs", slug=slug, run_id=run_id)["contact_sheet_pages"]
    buttons = page.js("[...document.querySelectorAll('#sheet-pages button')].map((b) => b.textContent)")
    if len(pages) == 1:
        assert buttons == [], f"one page, but page buttons {buttons}"
        print("viewer_check: the sheet has one page: no page buttons")
        return
    assert buttons == [str(p["page"]) for p in pages], f"page buttons {buttons} for {len(pages)} pages"
    for p in reversed(pages):
        asset = sidecar.call("assets.get", slug=slug, asset_id=p["png_asset_id"])
        page.js(f"(document.querySelector('#sheet-pages button[data-page=\"{p['page']}\"]').click(), 1)")
        page.wait_js(f"""(() => {{ const img = document.getElementById('sheet-img');
          const b = document.querySelector('#sheet-pages button[data-page="{p['page']}"]');
          return img.complete && img.naturalWidth === {asset['width']} && img.naturalHeight === {asset['height']}
            && b.getAttribute('aria-pressed') === 'true'; }})()""", f"page {p['page']} of the sheet")
    print(f"viewer_check: the sheet's {len(pages)} pages each show their PNG on their button")


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, exe = Path(sys.argv[1]), sys.argv[2]
    out.mkdir(parents=True, exist_ok=True)
    if not Gtk.init_check(sys.argv)[0]:
        print("viewer_check: FAILED: no display (run it under Xvfb)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="iat-viewer-check-"))
    home = work / "home"
    started = time.monotonic()
    demo = subprocess.run([exe, "demo", "--quick", "--home", str(home)], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if not k.startswith("IAT_")})
    if demo.returncode != 0:
        print(f"viewer_check: FAILED: {exe} demo --quick exited {demo.returncode}\n{demo.stderr[-3000:]}",
              file=sys.stderr)
        return 1
    print(f"viewer_check: demo --quick made a project with a finished run in {time.monotonic() - started:.1f} s")
    sidecar = Sidecar(exe, home, work / "sidecar.log")
    page = None
    try:
        page = BridgedPage(sidecar)
        slug = sidecar.call("projects.list")["items"][0]["slug"]
        first = sidecar.call("runs.list", slug=slug)["items"][0]

        # 1. The project, its run, the run's sheet and jobs, without a click.
        page.wait_js(f"""(() => {{ const b = document.querySelector('#projects button[data-slug="{slug}"]');
          const r = document.querySelector('#runs button[data-run-id="{first['id']}"]');
          return b && b.getAttribute('aria-current') === 'true' && r && r.getAttribute('aria-current') === 'true'
            && r.textContent.includes('done'); }})()""", "the project and its run selected")
        print(f"viewer_check: the project {slug} and its run {first['id'][:8]} (done) are listed and selected")
        check_sheet(page, sidecar, slug, first["id"], "the demo's run")
        check_jobs(page, sidecar, slug, first["id"], "the demo's run")
        page.js("(document.getElementById('zoom-actual').click(), 1)")
        page.pump(0.2)
        actual = sheet_state(page)
        assert abs(actual["width"] - actual["natural"][0]) < 0.5, f"100% does not show the sheet at its size: {actual}"
        page.js("(document.getElementById('zoom-fit').click(), 1)")
        page.pump(0.2)
        fit = sheet_state(page)
        assert fit["width"] <= fit["frame"] + 0.5, f"Fit after 100%: {fit}"
        print(f"viewer_check: 100% shows it {actual['width']:.0f} px wide, Fit {fit['width']:.0f} px")

        # 2. A run in progress: the page selects it mid-run, then its notifications arrive.
        page.js("(window.__no_reload = 1)")
        sidecar.hold = True
        run = sidecar.call("runs.start", slug=slug, shots=SHOTS, candidates=CANDIDATES, seed=11)
        run_id = run["id"]
        page.js("(document.getElementById('reload').click(), 1)")
        page.wait_js(f"!!document.querySelector('#runs button[data-run-id=\"{run_id}\"]')", "the new run listed")
        page.js(f"(document.querySelector('#runs button[data-run-id=\"{run_id}\"]').click(), 1)")
        page.wait_js("!document.getElementById('progress').hidden && "
                     "document.getElementById('progress-text').textContent.includes('/')",
                     "the progress of the selected run")
        held = len(sidecar.held)
        sidecar.release()
        seen: list[float] = []
        middle = None
        finished_keys: set[tuple] = set()
        deadline = time.monotonic() + 240
        while True:
            page.pump(0.03)
            state = page.js("""(() => { const bar = document.getElementById('progress-bar');
              return {hidden: document.getElementById('progress').hidden, value: bar.value, max: bar.max,
                      text: document.getElementById('progress-text').textContent,
                      now: document.getElementById('progress-current').textContent}; })()""")
            for note in sidecar.delivered:
                p = note["params"]
                if note["method"] == "candidate.finished" and p.get("run_id") == run_id:
                    finished_keys.add((p["job_key"], p["candidate_index"]))
            if state["hidden"]:
                break
            assert state["max"] == TOTAL, f"the bar's total is {state['max']}, not {len(SHOTS)} x {CANDIDATES}"
            assert not seen or state["value"] >= seen[-1], f"the bar went back: {seen[-1]} -> {state['value']}"
            assert state["value"] <= TOTAL
            assert state["value"] >= len(finished_keys), (
                f"the bar shows {state['value']}, but {len(finished_keys)} candidates finished were delivered")
            assert state["text"].startswith(f"{int(state['value'])} / {TOTAL} candidates"), state
            seen.append(state["value"])
            if middle is None and 0 < state["value"] < TOTAL and state["now"].startswith("now: "):
                middle = state
                page.screenshot(out / "viewer-running.png")
            if time.monotonic() > deadline:
                raise AssertionError(f"the run did not finish on the page: {state}")
        assert middle is not None, f"no state between 0 and {TOTAL} was shown: {sorted(set(seen))}"
        assert any(s["job_key"] in middle["now"] for s in SHOTS), middle
        assert len(finished_keys) == TOTAL, f"{len(finished_keys)} distinct candidates finished"
        print(f"viewer_check: the page read the run with {held} notifications held back, then followed it live: "
              f"{len(set(seen))} distinct bar values up to {max(seen)}/{TOTAL}, e.g. "
              f"{middle['text']!r} {middle['now']!r}")

        # 3. The end: the sheet appears without a reload.
        check_sheet(page, sidecar, slug, run_id, "the live run")
        check_jobs(page, sidecar, slug, run_id, "the live run")
        assert page.js("window.__no_reload === 1"), "the page reloaded"
        check_pages(page, sidecar, slug, run_id)
        page.wait_js(f"document.querySelector('#runs button[data-run-id=\"{run_id}\"]').textContent.includes('done')"
                     " && document.getElementById('run-status').textContent === 'done'", "the badges saying done")
        # 4. A run.finished the shell dropped: the page reads the run again and still shows its sheet.
        sidecar.hold, sidecar.drop = True, {"run.finished"}
        small = sidecar.call("runs.start", slug=slug, shots=SHOTS[:2], candidates=1, seed=12)["id"]
        page.js("(document.getElementById('reload').click(), 1)")
        page.wait_js(f"!!document.querySelector('#runs button[data-run-id=\"{small}\"]')", "the small run listed")
        page.js(f"(document.querySelector('#runs button[data-run-id=\"{small}\"]').click(), 1)")
        page.wait_js("document.getElementById('run-meta').textContent.includes('%s')" % small, "the small run shown")
        sidecar.release()
        end = time.monotonic() + 120
        while sidecar.call("runs.get", slug=slug, run_id=small)["status"] not in ("done", "partial", "failed"):
            assert time.monotonic() < end, "the small run did not finish"
            page.pump(0.2)
        dropped_at = time.monotonic()
        check_sheet(page, sidecar, slug, small, "a run whose run.finished was dropped")
        assert not any(n["method"] == "run.finished" and n["params"]["run_id"] == small for n in sidecar.delivered)
        page.wait_js(f"document.querySelector('#runs button[data-run-id=\"{small}\"]').textContent.includes('done')"
                     " && document.getElementById('run-status').textContent === 'done'", "its badges saying done")
        print(f"viewer_check: ... shown {time.monotonic() - dropped_at:.1f} s after the run ended, without the "
              "notification")
        sidecar.drop = set()
        page.js(f"(document.querySelector('#runs button[data-run-id=\"{run_id}\"]').click(), 1)")
        check_sheet(page, sidecar, slug, run_id, "the live run again")

        errors = page.errors()
        assert not errors, f"the page reported errors: {errors}"
        # The policy is in force here: the same page refuses an inline style.
        page.js("(document.body.setAttribute('style', 'outline: 1px solid red'), 1)")
        page.pump(0.2)
        assert any("CSP refused" in e for e in page.errors()), "the CSP is not applied in this check"
        page.js("(document.body.removeAttribute('style'), window.__errors.length = 0, 1)")
        page.pump(0.3)
        page.screenshot(out / "viewer.png")
        calls = sorted(set(sidecar.page_calls))
        print(f"viewer_check: the page called {calls}; screenshots {out / 'viewer-running.png'}, {out / 'viewer.png'}"
              f" ({time.monotonic() - started:.0f} s)")
    except AssertionError as e:
        if page is not None:
            try:
                page.screenshot(out / "viewer.png")
            except Exception:  # noqa: BLE001 - the failure is what matters
                pass
        print(f"viewer_check: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        sidecar.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
