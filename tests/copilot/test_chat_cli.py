"""`iat-sidecar chat`: the real command in a subprocess on a data home in tmp, driven through its stdin (a pipe, no
tty); what it did is checked in the project's database afterwards, through an App on the same home."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from iat.app import App
from iat.settings import Settings

from support import Client

BIN = Path(sys.executable).with_name("iat-sidecar")
TIMEOUT_S = 180  # a loaded 2-core machine: the App's start-up and a turn, never slept on

EXPORT = {"instruction_type": "custom", "objective": "Export the project", "inputs": {"action": "export_project"}}
DELETE = {"instruction_type": "custom", "objective": "Delete the project", "inputs": {"action": "delete_project"}}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A data home holding project alpha; no App left open on it."""
    path = tmp_path / "home"
    with_app(path, lambda client: client.call("projects.create", slug="alpha", name="Alpha"))
    return path


def with_app(home: Path, fn):
    """fn(client) with an App on the home, closed afterwards (the chat process must be the only one writing)."""
    app = App(Settings.from_env({}, home=home))
    try:
        return fn(Client(app))
    finally:
        app.close()


def env_for(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IAT_")}
    env["IAT_HOME"] = str(home)
    return env


def chat(home: Path, lines: list[str], *args: str, slug: str = "alpha") -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "chat", "--project", slug, *args], input="".join(f"{x}\n" for x in lines),
                          capture_output=True, text=True, env=env_for(home), timeout=TIMEOUT_S)


def instructions(home: Path) -> list[dict]:
    return with_app(home, lambda c: c.call("agent.instructions.list", slug="alpha", limit=500)["items"])


class Live:
    """The chat as a terminal user has it: lines written one at a time, its output read as it comes."""

    def __init__(self, home: Path, *args: str):
        self.proc = subprocess.Popen([str(BIN), "chat", "--project", "alpha", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(home))
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def expect(self, pattern: str) -> re.Match:
        """Reads output until a line matches `pattern`; fails on the end of output or the time limit."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matched {pattern!r} within {TIMEOUT_S}s; output:\n" + "\n".join(self.seen))
            if line is None:
                pytest.fail(f"the chat ended before a line matched {pattern!r}; output:\n" + "\n".join(self.seen)
                            + "\nstderr:\n" + self.proc.stderr.read())
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.stdin.close()
        try:
            return self.proc.wait(TIMEOUT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


# --- the project and session ---


def test_an_unknown_project_is_a_clear_message_and_exit_code_2(home: Path):
    out = chat(home, ["hello"], slug="nope")
    assert out.returncode == 2
    assert "error: not_found: project 'nope' not found" in out.stderr and str(home) in out.stderr
    assert "Traceback" not in out.stderr + out.stdout and out.stdout == ""


def test_a_session_is_created_or_continued(home: Path):
    first = chat(home, ["/quit"], "--title", "night shots")
    assert first.returncode == 0, first.stderr
    sessions = with_app(home, lambda c: c.call("chat.sessions.list", slug="alpha")["items"])
    assert [s["title"] for s in sessions] == ["night shots"]
    assert f"session {sessions[0]['id'][:8]}" in first.stdout

    again = chat(home, ["/quit"], "--session", sessions[0]["id"])
    assert again.returncode == 0 and f"session {sessions[0]['id'][:8]}" in again.stdout
    assert len(with_app(home, lambda c: c.call("chat.sessions.list", slug="alpha")["items"])) == 1

    missing = chat(home, [], "--session", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 2 and "error: not_found: chat session" in missing.stderr
    assert "Traceback" not in missing.stderr


# --- slash commands ---


def test_instructions_cancel_by_prefix_and_quit(home: Path):
    def setup(c: Client):
        export = c.call("agent.instructions.create", slug="alpha", queue=False, **EXPORT)
        delete = c.call("agent.instructions.create", slug="alpha", **DELETE)
        return export, delete

    export, delete = with_app(home, setup)
    assert export["status"] == delete["status"] == "draft" and delete["requires_confirmation"]

    prefix = export["id"][:6]
    out = chat(home, ["/help", "/instructions", f"/cancel {prefix}", "/cancel zzzz", f"/cancel {prefix}",
                      "/instructions", "/nonsense", "/quit", "this line is never sent"])

    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "/cancel ID" in text  # the help
    listing = text.split("/cancel ID", 1)[1]
    assert re.search(rf"\[{delete['id'][:8]}\] draft\s+custom\s+Delete the project \(needs confirmation\)", listing)
    assert re.search(rf"\[{export['id'][:8]}\] draft\s+custom\s+Export the project\n", listing)
    assert f"[{export['id'][:8]}] canceled\n" in text
    assert "error: not_found: no instruction of project alpha has an id starting with 'zzzz'" in text
    # Canceling again is the lifecycle's refusal, one line, and the chat goes on.
    assert f"error: illegal_transition: instruction {export['id']} is canceled" in text
    assert re.search(rf"\[{export['id'][:8]}\] canceled\s+custom\s+Export the project", text)
    assert "unknown command /nonsense" in text
    assert text.rstrip().endswith("bye") and "Traceback" not in out.stderr

    rows = {r["id"]: r for r in instructions(home)}
    assert rows[export["id"]]["status"] == "canceled" and rows[delete["id"]]["status"] == "draft"
    messages = with_app(home, lambda c: [m for s in c.call("chat.sessions.list", slug="alpha")["items"]
                                         for m in c.call("chat.messages.list", slug="alpha",
                                                         session_id=s["id"])["items"]])
    assert messages == []  # slash commands are not messages, and nothing after /quit was read


def test_end_of_input_ends_the_chat_cleanly(home: Path):
    out = chat(home, ["/instructions"])
    assert out.returncode == 0 and "no instructions yet" in out.stdout and out.stdout.rstrip().endswith("bye")


def test_ctrl_c_ends_the_chat_cleanly(home: Path):
    live = Live(home)
    try:
        live.expect(r"^chat with the copilot in Alpha")
        live.proc.send_signal(signal.SIGINT)
        live.expect(r"^bye$")
        assert live.close() == 0
    finally:
        live.close()
    assert "Traceback" not in live.proc.stderr.read()
    assert with_app(home, lambda c: c.call("projects.get", slug="alpha"))["slug"] == "alpha"


# --- turns with the copilot (the offline parser) ---


def test_a_destructive_request_asks_to_confirm_and_no_leaves_it_in_draft(home: Path):
    out = chat(home, ["delete the project", "n", "/instructions"])

    assert out.returncode == 0, out.stderr
    rows = instructions(home)
    assert len(rows) == 1
    row = rows[0]
    assert row["instruction_type"] == "custom" and row["payload"]["inputs"] == {"action": "delete_project"}
    assert row["status"] == "draft" and row["requires_confirmation"] and row["confirmed_by_user_id"] is None
    text = out.stdout
    assert "copilot: " in text
    assert f"[{row['id'][:8]}] custom: " in text
    assert "inputs: action=delete_project" in text
    assert "needs confirmation: it deletes the whole project" in text
    assert "Confirm? [y/N] n\n" in text
    assert f"[{row['id'][:8]}] left in draft" in text
    assert with_app(home, lambda c: c.call("projects.get", slug="alpha"))["slug"] == "alpha"


def test_a_proposed_instruction_is_shown_and_followed_to_its_end(home: Path):
    live = Live(home)
    try:
        live.send("export the project")
        short = live.expect(r"^  \[([0-9a-f]{8})\] custom: ").group(1)
        live.expect(r"^      inputs: action=export_project")
        live.expect(r"^      status: (queued|running|done)$")
        live.expect(rf"^\[{short}\] running")
        live.expect(rf"^\[{short}\] log: .*exports\.create")  # the agent's steps, as they happen
        ended = live.expect(rf"^\[{short}\] (done|failed|canceled)")
        assert ended.group(1) == "done", "\n".join(live.seen)
        live.expect(rf"^\[{short}\] result: action=export_project; export=\{{id=")
        live.send("/quit")
        assert live.close() == 0
    finally:
        live.close()
    rows = instructions(home)
    assert [(r["id"][:8], r["status"]) for r in rows] == [(short, "done")]
    exports = with_app(home, lambda c: c.call("exports.list", slug="alpha")["items"])
    assert len(exports) == 1


def test_confirm_by_prefix_queues_a_draft_and_its_progress_is_shown(home: Path, tmp_path: Path):
    src = tmp_path / "in"
    src.mkdir()
    from PIL import Image

    Image.new("RGB", (16, 16), (200, 10, 10)).save(src / "a.png")

    def setup(c: Client):
        c.call("projects.update", slug="alpha", settings_json={"import_roots": [str(src)]})
        asset = c.call("assets.import", slug="alpha", paths=[str(src / "a.png")])["items"][0]
        row = c.call("agent.instructions.create", slug="alpha", instruction_type="custom",
                     objective="Delete the red square", inputs={"action": "delete_asset", "asset_id": asset["id"]})
        return asset, row

    asset, row = with_app(home, setup)
    assert row["status"] == "draft" and row["requires_confirmation"]
    live = Live(home)
    try:
        live.send(f"/confirm {row['id'][:5]}")
        live.expect(rf"^\[{row['id'][:8]}\] confirmed: (queued|running|done)$")
        ended = live.expect(rf"^\[{row['id'][:8]}\] (done|failed|canceled)")
        assert ended.group(1) == "done", "\n".join(live.seen)
        live.send("/quit")
        assert live.close() == 0
    finally:
        live.close()
    done = {r["id"]: r for r in instructions(home)}[row["id"]]
    assert done["status"] == "done" and done["confirmed_by_user_id"] is not None
    err = with_app(home, lambda c: c.error("assets.get", slug="alpha", asset_id=asset["id"]))
    assert err.name == "not_found"
