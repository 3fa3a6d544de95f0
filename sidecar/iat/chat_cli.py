"""`iat-sidecar chat --project SLUG`: a conversation with the copilot in a terminal (or through a pipe).

It opens an App on the data home, as `iat-sidecar run` does, and calls the registry's commands in process through
the one JSON-RPC dispatcher (iat.pipeline.console.local_caller), so the chat gets the validation, guardrails, audit
rows and typed errors of any client. Each line typed is one `chat.messages.send`; the answer is printed, then each
instruction it proposed (short id, type, objective, inputs, status, and why it needs confirmation). A draft that
needs confirmation is asked about (`Confirm? [y/N]`) and confirmed only on yes. The instructions of this chat are
then followed through the event bus (`agent.instruction.status` / `agent.instruction.event`): status changes and
the agent's log lines, results and errors are printed as they come, between turns.

One thread reads stdin into the same queue the event subscriber feeds, and the main thread handles that queue in
order: output never interleaves mid-line, a confirmation's answer is simply the next line, and a pipe (no tty)
works as a terminal does. Plain text only. A command's error prints as one line `error: <name>: <message>` and the
chat goes on; /quit, end of input and Ctrl+C end it with code 0 (instructions still queued or running go on the
next time a sidecar opens the project); an unknown project or session ends it with code 2.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any, Callable, TextIO

from iat.errors import IATError, error_object

HELP = """\
Type a request in plain words (e.g. "run the pipeline for shots s01, s02 at night in the rain"). Commands:
  /help             this help
  /instructions     the project's instructions, newest first
  /confirm ID       confirm a draft instruction (an id prefix is enough when it is unique)
  /cancel ID        cancel an instruction that has not ended
  /quit             leave (also end of input, Ctrl+C)"""

# Statuses in lifecycle order: an event that does not move an instruction forward was already shown.
_RANK = {"draft": 0, "queued": 1, "running": 2, "done": 3, "failed": 3, "canceled": 3}
_FINAL = frozenset({"done", "failed", "canceled"})
_LINE = 160  # longest one-line summary of inputs, a result or a log payload
_EOF = object()


def short(instruction_id: str) -> str:
    return str(instruction_id)[:8]


def _clip(text: str, limit: int = _LINE) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _value(value: Any) -> str:
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            keys = [str(v.get("job_key") or v.get("id") or "?") for v in value]
            return ",".join(keys)
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def inputs_line(inputs: dict) -> str:
    """One line: key=value, lists comma-joined (shots by job key)."""
    return _clip("; ".join(f"{k}={_value(v)}" for k, v in inputs.items()) or "(none)")


def payload_line(payload: dict) -> str:
    """An event payload in one line: its message when it has one (after its error name, if any), else its fields
    as key=value, nested values in braces."""
    message = next((payload[k] for k in ("message", "text", "line") if isinstance(payload.get(k), str)), None)
    if message is not None:
        name = payload.get("name") or payload.get("error")
        return _clip(f"{name}: {message}" if isinstance(name, str) else message)
    return inputs_line(payload) if payload else "(empty)"


class Chat:
    """One chat on one project and session; `run()` is the loop, returning the exit code."""

    def __init__(self, app, call: Callable[..., Any], slug: str, session_id: str, stdin: TextIO, out: TextIO):
        self.app = app
        self.call = call
        self.slug = slug
        self.session_id = session_id
        self.stdin = stdin
        self.out = out
        self.tty = stdin.isatty() and out.isatty()
        self.inbox: queue.Queue = queue.Queue()
        self.known: dict[str, str] = {}  # instruction id -> the last status shown
        self.followed: set[str] = set()  # ids of this chat's instructions that have not ended
        self.pending: str | None = None  # a prompt written and not answered yet (no newline after it)

    # --- output ---

    def say(self, text: str = "") -> None:
        # A line shown while a prompt waits goes over it (a terminal) or under it (a pipe), and the prompt again
        # after it, so the answer still follows its question.
        prompt = self.pending
        if prompt is None:
            self.out.write(text + "\n")
        elif self.tty:
            self.out.write("\r" + text.ljust(len(prompt)) + "\n" + prompt)
        else:
            self.out.write("\n" + text + "\n" + prompt)
        self.out.flush()

    def ask(self, prompt: str) -> None:
        self.out.write(prompt)
        self.out.flush()
        self.pending = prompt

    def error(self, exc: BaseException) -> None:
        """One line; an unexpected failure is logged (with its traceback) to the sidecar log, as a transport does."""
        from iat.rpc.protocol import Dispatcher

        Dispatcher.log_failure("chat", exc)
        obj = error_object(exc)
        self.say(f"error: {obj['data']['name']}: {obj['message']}")

    def prompt(self) -> None:
        if self.tty:
            self.ask("> ")

    # --- input: lines and events through one queue ---

    def _read_lines(self) -> None:
        try:
            for line in self.stdin:
                self.inbox.put(("line", line.rstrip("\r\n")))
        except (OSError, ValueError):  # stdin closed under us
            pass
        self.inbox.put(("eof", None))

    def _on_event(self, name: str, payload: dict) -> None:
        if name in ("agent.instruction.status", "agent.instruction.event") and payload.get("slug") == self.slug:
            self.inbox.put(("event", (name, payload)))

    def _next_line(self) -> object:
        """The next line typed (events meanwhile are shown); _EOF at the end of input."""
        while True:
            kind, item = self.inbox.get()
            if kind == "line":
                self.pending = None
                return item
            if kind == "eof":
                self.inbox.put(("eof", None))  # stays the answer to every later read
                return _EOF
            self._show_event(*item)

    # --- events ---

    def _show_event(self, name: str, payload: dict) -> None:
        iid = str(payload.get("instruction_id"))
        if iid not in self.known:
            return  # not one of this chat's instructions
        if name == "agent.instruction.status":
            status = payload.get("status")
            if _RANK.get(status, -1) <= _RANK.get(self.known[iid], -1):
                return
            self.known[iid] = status
            reason = f" ({payload['reason']})" if payload.get("reason") else ""
            self.say(f"[{short(iid)}] {status}{reason}")
            if status in _FINAL:
                self.followed.discard(iid)
            return
        kind = payload.get("event_type")
        if kind in ("log", "result", "error"):
            self.say(f"[{short(iid)}] {kind}: {payload_line(payload.get('payload') or {})}")

    def _track(self, row: dict) -> None:
        iid = str(row["id"])
        if _RANK.get(row["status"], -1) > _RANK.get(self.known.get(iid), -1):
            self.known[iid] = row["status"]
        if self.known[iid] in _FINAL:
            self.followed.discard(iid)
        else:
            self.followed.add(iid)

    # --- instructions ---

    def _reasons(self, row: dict) -> list[str]:
        reasons = list(row.get("confirmation_reasons") or [])
        if reasons or not row.get("requires_confirmation"):
            return reasons
        # The reasons are recorded on the instruction's first event (its creation).
        events = self.call("agent.instructions.events", slug=self.slug, instruction_id=row["id"], limit=1)["items"]
        return list(events[0]["event_payload_json"].get("confirmation_reasons", [])) if events else []

    def show_instruction(self, row: dict) -> None:
        payload = row.get("payload") or {}
        self.say(f"  [{short(row['id'])}] {row['instruction_type']}: {_clip(payload.get('objective', ''), 120)}")
        self.say(f"      inputs: {inputs_line(payload.get('inputs') or {})}")
        line = f"      status: {row['status']}"
        if row.get("requires_confirmation") and not row.get("confirmed_by_user_id"):
            line += f"; needs confirmation: {'; '.join(self._reasons(row)) or 'yes'}"
        self.say(line)

    def ask_to_confirm(self, row: dict) -> bool:
        """Asks about a draft needing confirmation; confirms it on yes. False when input ended meanwhile."""
        self.ask("Confirm? [y/N] ")
        answer = self._next_line()
        if answer is _EOF:
            self.pending = None
            self.say()
            self.say(f"[{short(row['id'])}] left in draft")
            return False
        if not self.tty:
            self.say(answer)  # a transcript reads as a terminal session would
        if answer.strip().lower() in ("y", "yes"):
            try:
                confirmed = self.call("agent.instructions.confirm", slug=self.slug, instruction_id=row["id"])
            except Exception as exc:  # noqa: BLE001 - any failure is one line; the chat goes on
                self.error(exc)
                return True
            self._track(confirmed)
            self.say(f"[{short(row['id'])}] confirmed: {confirmed['status']}")
        else:
            self.say(f"[{short(row['id'])}] left in draft (/confirm {short(row['id'])} to run it later)")
        return True

    def resolve(self, prefix: str) -> str:
        """The id of the project's one instruction whose id starts with `prefix`."""
        prefix = prefix.strip().lower()
        if not prefix:
            raise _Usage("give an instruction id (or the start of one)")
        found: list[str] = []
        cursor = None
        while True:
            page = self.call("agent.instructions.list", slug=self.slug, limit=500,
                             **({"cursor": cursor} if cursor else {}))
            found += [i["id"] for i in page["items"] if i["id"].lower().startswith(prefix)]
            cursor = page["next_cursor"]
            if cursor is None or len(found) > 1:
                break
        if not found:
            raise _Usage(f"no instruction of project {self.slug} has an id starting with {prefix!r}",
                         name="not_found")
        if len(found) > 1:
            raise _Usage(f"{prefix!r} starts the ids of several instructions; give more of it", name="ambiguous")
        return found[0]

    # --- turns and commands ---

    def turn(self, text: str) -> bool:
        """One message to the copilot; False when input ended during a confirmation."""
        result = self.call("chat.messages.send", slug=self.slug, session_id=self.session_id, text=text)
        answer = result["assistant_message"]["content_text"]
        self.say("copilot: " + (answer.replace("\n", "\n  ") if answer else "(no answer)"))
        for row in result["instructions"]:
            self._track(row)
            self.show_instruction(row)
            if row["status"] == "draft" and row.get("requires_confirmation") and not row.get("confirmed_by_user_id"):
                if not self.ask_to_confirm(row):
                    return False
        return True

    def command(self, line: str) -> bool:
        """A slash command; False to leave."""
        name, _, arg = line.partition(" ")
        name = name.lower()
        if name in ("/quit", "/exit", "/q"):
            return False
        if name in ("/help", "/?"):
            self.say(HELP)
        elif name == "/instructions":
            page = self.call("agent.instructions.list", slug=self.slug, limit=20)
            if not page["items"]:
                self.say("no instructions yet")
            for row in page["items"]:
                mark = " (needs confirmation)" if row["status"] == "draft" and row["requires_confirmation"] else ""
                self.say(f"  [{short(row['id'])}] {row['status']:<8} {row['instruction_type']:<12} "
                         f"{_clip(row['payload']['objective'], 100)}{mark}")
            if page["next_cursor"]:
                self.say("  (older ones not shown)")
        elif name == "/cancel":
            row = self.call("agent.instructions.cancel", slug=self.slug, instruction_id=self.resolve(arg),
                            reason="canceled from the terminal chat")
            self._track(row)
            self.say(f"[{short(row['id'])}] {row['status']}")
        elif name == "/confirm":
            row = self.call("agent.instructions.confirm", slug=self.slug, instruction_id=self.resolve(arg))
            self._track(row)
            self.say(f"[{short(row['id'])}] confirmed: {row['status']}")
        else:
            self.say(f"unknown command {name}; /help lists them")
        return True

    def run(self, greeting: str) -> int:
        unsubscribe = self.app.events.subscribe(self._on_event)
        threading.Thread(target=self._read_lines, name="chat-stdin", daemon=True).start()
        try:
            self.say(greeting)
            self.prompt()
            while True:
                line = self._next_line()
                if line is _EOF:
                    break
                line = line.strip()
                if not line:
                    self.prompt()
                    continue
                try:
                    if line.startswith("/"):
                        if not self.command(line):
                            break
                    elif not self.turn(line):
                        break
                except _Usage as exc:
                    self.say(f"error: {exc.name}: {exc}")
                except Exception as exc:  # noqa: BLE001 - any failure is one line; the chat goes on
                    self.error(exc)
                self.prompt()
        except KeyboardInterrupt:
            self.pending = ""  # ends the line the ^C was typed on
        finally:
            unsubscribe()
        if self.pending is not None:
            self.pending = None
            self.say()
        self._goodbye()
        return 0

    def _goodbye(self) -> None:
        going = sorted(i for i in self.followed if self.known[i] in ("queued", "running"))
        if going:
            ids = ", ".join(short(i) for i in going)
            self.say(f"still going: {ids}; queued and running instructions go on the next time a sidecar opens "
                     f"project {self.slug}")
        self.say("bye")


class _Usage(Exception):
    def __init__(self, message: str, name: str = "invalid_params"):
        super().__init__(message)
        self.name = name


def run_chat(args, settings, stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    """`iat-sidecar chat`: opens the App, checks the project and session, then the chat loop."""
    from iat.app import App
    from iat.pipeline.console import local_caller

    stdin = stdin or sys.stdin
    out = out or sys.stdout
    app = App(settings)
    _log_to_file(app, settings)
    try:
        call = local_caller(app)
        try:
            project = call("projects.get", slug=args.project)
        except IATError as exc:
            hint = f" in {settings.home} (projects.list names them)" if exc.name == "not_found" else ""
            print(f"error: {exc.name}: {exc.message}{hint}", file=sys.stderr)
            return 2
        try:
            if args.session:
                session = call("chat.sessions.get", slug=args.project, session_id=args.session)
            else:
                session = call("chat.sessions.create", slug=args.project, title=args.title or "terminal chat")
        except IATError as exc:
            print(f"error: {exc.name}: {exc.message}", file=sys.stderr)
            return 2
        return Chat(app, call, project["slug"], session["id"], stdin, out).run(
            f"chat with the copilot in {project['name']} ({project['slug']}), session {short(session['id'])}; "
            "/help for commands")
    except KeyboardInterrupt:
        return 0
    finally:
        app.close()


def _log_to_file(app, settings) -> None:
    """The sidecar's logging (redacted, the rotating log file) without its stderr handler: the terminal is the
    chat's, and a failure shows there as one line."""
    import logging

    from iat.logs import setup_logging

    setup_logging(settings.log_level, settings.logs_dir, app.redactor)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
