#!/usr/bin/env python3
"""Checks the status page (src-tauri/ui) in WebKitGTK 4.1, the engine the Linux app runs it in, with a stand-in
for the two shell commands: the sidecar became ready long ago and the shell kept 50 events.

    python3 src-tauri/ui-tests/page_check.py OUT_DIR      (needs a display, e.g. Xvfb; python3-gi, WebKit2 4.1)

1. times: every event shows the time the shell stamped on it (`at`); the ready event and the state badge show the
   handshake's time, also after a reload (the page replays the shell's recent events then);
2. a live event the page already has from the replay (same `seq`) is not listed twice;
3. the event list's markers are not clipped at its left edge: the list's visible rows (their left part) are
   captured as drawn, then again with the list's clipping turned off; the two must be the same pixels (a clipped
   marker appears only in the second).
Writes OUT_DIR/status-page.png (the window) and exits non-zero on any failure. scripts/test-app runs it.

The page is served as the app serves it: from one origin (here the scheme iat://app/) under the Content Security
Policy of tauri.conf.json (as a meta tag), so what the policy refuses (an inline style, an image that is not a
data: URL) fails here too; violations and uncaught errors are collected and fail the check.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gtk", "3.0")
gi.require_version("Gdk", "3.0")
gi.require_version("WebKit2", "4.1")
from gi.repository import Gdk, Gio, GLib, Gtk, WebKit2  # noqa: E402

UI = Path(__file__).resolve().parent.parent / "ui"
TAURI_CONF = UI.parent / "tauri.conf.json"
SCHEME = "iat"
MIME = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
READY_AT = 981173106000  # 2001-02-03T04:05:06Z: no reload can happen then
EVENTS = 50

# The shell as the page sees it (window.__TAURI__): sidecar_status with the recent events, system.info, listen.
STUB = """
(() => {
  const READY_AT = %(ready_at)d, N = %(n)d;
  const recent = [{type: "status", payload: {event: "ready", generation: 1, pid: 4242, ready_at_ms: READY_AT,
                                             info: {pid: 4242, version: "0.0.0"}, at: READY_AT, seq: 1}}];
  for (let i = 2; i <= N; i++) {
    recent.push({type: "notification",
                 payload: {method: "project.created", params: {slug: "p" + i}, at: READY_AT + i * 1000, seq: i}});
  }
  window.__stub = {READY_AT, recent, listeners: {}};
  window.__TAURI__ = {
    core: {invoke: async (cmd, args) => {
      if (cmd === "sidecar_status") {
        return {state: {state: "ready", generation: 1, pid: 4242, ready_at_ms: READY_AT, info: {}},
                program: "/stub", recent: JSON.parse(JSON.stringify(recent))};
      }
      if (cmd === "sidecar_call" && args.method === "system.info") return {version: "0.0.0", stub: true};
      if (cmd === "sidecar_call" && args.method === "projects.list") return {items: []};
      if (cmd === "sidecar_call") return {pong: true};
      throw {kind: "not_allowed", message: cmd};
    }},
    event: {listen: async (name, cb) => { window.__stub.listeners[name] = cb; return () => {}; }},
  };
})();
""" % {"ready_at": READY_AT, "n": EVENTS}


# Collects what would otherwise pass silently: uncaught errors, rejected promises, CSP violations.
WATCH = """
(() => {
  window.__errors = [];
  window.addEventListener("error", (e) => window.__errors.push("error: " + e.message));
  window.addEventListener("unhandledrejection", (e) => window.__errors.push("rejection: " + JSON.stringify(e.reason)));
  document.addEventListener("securitypolicyviolation",
    (e) => window.__errors.push("CSP refused " + e.blockedURI + " (" + e.violatedDirective + ")"));
})();
"""


def app_csp() -> str:
    return json.loads(TAURI_CONF.read_text())["app"]["security"]["csp"]


def _serve_ui(request) -> None:
    """iat://app/<file>: the files of ui/, index.html with the app's CSP as a meta tag."""
    name = request.get_path().lstrip("/") or "index.html"
    path = (UI / name).resolve()
    if not path.is_relative_to(UI) or not path.is_file():
        request.finish_error(GLib.Error.new_literal(GLib.file_error_quark(), f"no {name}", GLib.FileError.NOENT))
        return
    data = path.read_bytes()
    if path.name == "index.html":
        meta = f'<meta http-equiv="Content-Security-Policy" content="{app_csp()}">'
        data = data.replace(b"<head>", b"<head>\n  " + meta.encode(), 1)
    stream = Gio.MemoryInputStream.new_from_bytes(GLib.Bytes.new(data))
    request.finish(stream, len(data), MIME.get(path.suffix, "application/octet-stream"))


_SCHEME_REGISTERED = False


class Page:
    """The ui/ page in a WebKitGTK window, with `stub` (a script standing in for window.__TAURI__) run first.
    `on_message(dict)` receives what the page posts to window.webkit.messageHandlers.iat (JSON text)."""

    def __init__(self, stub: str = STUB, size: tuple[int, int] = (960, 680), on_message=None) -> None:
        global _SCHEME_REGISTERED
        if not _SCHEME_REGISTERED:
            WebKit2.WebContext.get_default().register_uri_scheme(SCHEME, _serve_ui)
            _SCHEME_REGISTERED = True
        content = WebKit2.UserContentManager()
        for script in (WATCH, stub):
            content.add_script(WebKit2.UserScript(script, WebKit2.UserContentInjectedFrames.TOP_FRAME,
                                                  WebKit2.UserScriptInjectionTime.START, None, None))
        if on_message is not None:
            def received(_manager, result) -> None:
                value = result.get_js_value() if hasattr(result, "get_js_value") else result
                on_message(json.loads(value.to_string()))

            content.connect("script-message-received::iat", received)
            content.register_script_message_handler("iat")
        self.view = WebKit2.WebView.new_with_user_content_manager(content)
        # Drawn into the X window (not a GL surface), so the window's pixels can be read back.
        self.view.get_settings().set_hardware_acceleration_policy(WebKit2.HardwareAccelerationPolicy.NEVER)
        self.window = Gtk.Window()
        self.window.set_default_size(*size)
        self.window.add(self.view)
        self.window.show_all()
        self.view.load_uri(f"{SCHEME}://app/index.html")

    def errors(self) -> list[str]:
        return self.js("window.__errors || []")

    def screenshot(self, path: Path) -> None:
        self.capture(0, 0, *self.window.get_size()).savev(str(path), "png", [], [])

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        ctx = GLib.MainContext.default()
        while time.monotonic() < end:
            ctx.iteration(False)
            time.sleep(0.005)

    def js(self, script: str, timeout: float = 10):
        """Evaluates `script` (an expression) in the page; returns its JSON-decoded value."""
        box: dict = {}

        def done(view, result):
            try:
                box["value"] = view.evaluate_javascript_finish(result).to_json(0)
            except GLib.Error as e:
                box["error"] = e.message

        self.view.evaluate_javascript(script, -1, None, None, None, done)
        end = time.monotonic() + timeout
        while "value" not in box and "error" not in box:
            if time.monotonic() > end:
                raise AssertionError(f"no answer from the page for {script[:60]!r}")
            GLib.MainContext.default().iteration(False)
            time.sleep(0.002)
        if "error" in box:
            raise AssertionError(f"the page failed on {script[:60]!r}: {box['error']}")
        return json.loads(box["value"]) if box["value"] is not None else None

    def wait_js(self, script: str, what: str, timeout: float = 20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                value = self.js(script)
            except AssertionError:
                value = None  # the page is between documents
            if value:
                return value
            self.pump(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def capture(self, x: int, y: int, w: int, h: int):
        self.pump(0.3)  # let WebKit paint what the last script changed
        pixbuf = Gdk.pixbuf_get_from_window(self.window.get_window(), x, y, w, h)
        if pixbuf is None:
            raise AssertionError("cannot read the window's pixels")
        return pixbuf


def check_times(page: Page, when: str) -> None:
    got = page.js("""(() => {
      const items = [...document.querySelectorAll('#events li')].map((li) => li.textContent);
      const expected = window.__stub.recent.slice().reverse().map((e) => new Date(e.payload.at).toLocaleTimeString());
      return {count: items.length, ready: items.find((text) => text.includes('[ready]')) || null,
              wrong: items.filter((text, i) => !text.startsWith(expected[i] + ' ')).slice(0, 3),
              expected: new Date(window.__stub.READY_AT).toLocaleTimeString(),
              badge: document.getElementById('state').textContent};
    })()""")
    assert got["count"] == EVENTS, f"{when}: {got['count']} events listed, expected {EVENTS}"
    assert got["ready"] and got["ready"].startswith(got["expected"] + " [ready]"), (
        f"{when}: the ready event shows {got['ready']!r}, not its handshake time {got['expected']}")
    assert not got["wrong"], f"{when}: events without the shell's time, or out of order: {got['wrong']}"
    assert f"since {got['expected']}" in got["badge"], f"{when}: the badge says {got['badge']!r}"
    print(f"page_check: {when}: the ready event and the badge show {got['expected']} (the handshake), "
          f"all {got['count']} events their own times")


def check_marker(page: Page) -> None:
    # Page scrollbars would move the list when its clipping is turned off: keep the page itself from scrolling.
    page.js("(document.documentElement.style.overflow = 'hidden', 1)")
    rect = page.js("""(() => {
      const ol = document.getElementById('events').getBoundingClientRect();
      const li = document.querySelector('#events li').getBoundingClientRect();
      const bottom = Math.min(ol.bottom, window.innerHeight);
      return {left: ol.left, top: li.top, height: bottom - li.top, right: ol.right, dpr: window.devicePixelRatio};
    })()""")
    assert rect["dpr"] == 1, f"device pixel ratio {rect['dpr']}: the capture assumes 1"
    x = max(0, int(rect["left"]) - 48)
    y, h = int(rect["top"]), max(1, int(rect["height"]))
    w = min(int(rect["right"]), int(rect["left"]) + 120) - x
    drawn = page.capture(x, y, w, h).get_pixels()
    if len(set(drawn[i:i + 3] for i in range(0, len(drawn), 3))) < 3:
        raise AssertionError("the list's rows are blank in the capture: nothing to compare")
    page.js("(() => { const ol = document.getElementById('events'); ol.style.overflow = 'visible';"
            " ol.style.maxHeight = 'none'; return 1; })()")
    unclipped = page.capture(x, y, w, h).get_pixels()
    page.js("(() => { const ol = document.getElementById('events'); ol.style.overflow = '';"
            " ol.style.maxHeight = ''; return 1; })()")
    assert drawn == unclipped, (
        "the event list is clipped at its left edge: with the list's clipping off its rows draw "
        f"differently (region x {x}..{x + w}, y {y}..{y + h}; the list starts at x {rect['left']:.0f})")
    print(f"page_check: the list's markers are inside it (region {w}x{h} at {x},{y} the same unclipped)")


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    out.mkdir(parents=True, exist_ok=True)
    if not Gtk.init_check(sys.argv)[0]:
        print("page_check: FAILED: no display (run it under Xvfb)", file=sys.stderr)
        return 1
    page = Page()
    try:
        page.wait_js("document.querySelectorAll('#events li').length === %d && "
                     "document.getElementById('state').textContent.startsWith('ready')" % EVENTS, "the page")
        check_times(page, "first load")
        page.js("(window.__before_reload = 1)")
        page.view.reload()
        page.wait_js("!window.__before_reload && document.querySelectorAll('#events li').length === %d && "
                     "document.getElementById('state').textContent.startsWith('ready')" % EVENTS, "the reload")
        check_times(page, "after a reload")

        # The replay overlaps live events: the same seq arriving live again is not a second entry.
        got = page.js("""(() => {
          const last = window.__stub.recent[window.__stub.recent.length - 1];
          window.__stub.listeners['sidecar://notification']({payload: last.payload});
          return document.querySelectorAll('#events li').length;
        })()""")
        assert got == EVENTS, f"a live event the page already had is listed twice ({got} events)"
        print("page_check: a live event already replayed is listed once")

        check_marker(page)
        errors = page.errors()
        assert not errors, f"the page reported errors: {errors}"
        page.screenshot(out / "status-page.png")
        print(f"page_check: screenshot {out / 'status-page.png'}")
    except AssertionError as e:
        try:
            page.capture(0, 0, *page.window.get_size()).savev(str(out / "status-page.png"), "png", [], [])
        except Exception:  # the failure is what matters
            pass
        print(f"page_check: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
