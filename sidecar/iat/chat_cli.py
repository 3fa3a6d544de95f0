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

With --voice (push to talk), a recording (iat.voice.capture) goes to `voice.stt` with this chat's session, the one
path that stores the audio, records the voice request and sends the recognised text as a chat turn: "you said: ..."
and the answer are printed as for a typed line, then the answer is spoken (`voice.tts` on the assistant message,
played by iat.voice.playback) unless --no-speak. A terminal cannot see a key being released, so Enter (an empty
line) starts a recording and the next Enter stops it; /talk does the same through a pipe (the next line, whatever it
holds, stops it; Ctrl+C or the end of input drops it) and /talk SECONDS records that long. No input device: one
line, the chat goes on typed; an --input-device or --output-device named that does not exist ends it with code 2 (a
typo, not a missing device); no output device: the answers are printed only. A missing engine or model is the voice
command's one-line error.
"""

from __future__ import annotations

import base64
import queue
import signal
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

VOICE_HELP = """\
Push to talk (--voice): Enter (an empty line) starts recording, Enter again stops it (a terminal cannot see a key
being released, so the key is pressed twice). Typed lines still work.
  /talk             record until the next line (any line stops it)
  /talk SECONDS     record that long
  /devices          the input and output devices"""

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

    def __init__(self, app, call: Callable[..., Any], slug: str, session_id: str, stdin: TextIO, out: TextIO,
                 voice: Voice | None = None):
        self.app = app
        self.voice = voice
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
            if kind == "interrupt":
                if self.pending is not None:
                    self.pending = ""  # ends the line the ^C was typed on
                self.inbox.put(("eof", None))
                return _EOF
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
        return self.show_turn(self.call("chat.messages.send", slug=self.slug, session_id=self.session_id, text=text))

    def show_turn(self, result: dict) -> bool:
        """The answer of a turn (typed or spoken) and its instructions; False when input ended during a
        confirmation."""
        answer = result["assistant_message"]["content_text"]
        self.say("copilot: " + (answer.replace("\n", "\n  ") if answer else "(no answer)"))
        if self.voice and answer:
            self.voice.speak(self, result["assistant_message"]["id"])
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
            if self.voice:
                self.say(VOICE_HELP)
        elif name == "/talk" and self.voice:
            return self.talk(arg)
        elif name == "/devices" and self.voice:
            self.voice.show_devices(self)
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
        # Ctrl+C ends the chat like the end of input: a message in the queue rather than a KeyboardInterrupt raised
        # wherever the main thread happens to be (inside a command, holding a lock the closing App then waits on).
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, lambda *_: self.inbox.put(("interrupt", None)))
        try:
            self.say(greeting)
            self.prompt()
            while True:
                line = self._next_line()
                if line is _EOF:
                    break
                line = line.strip()
                if not line and not (self.voice and self.tty):
                    self.prompt()
                    continue
                try:
                    if not line:  # Enter on a terminal in voice mode: push to talk
                        if not self.talk(""):
                            break
                    elif line.startswith("/"):
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

    def talk(self, arg: str) -> bool:
        """Records (until the next line, or for SECONDS), then the recording as a spoken turn; False when input
        ended during a confirmation."""
        from iat.voice import audio as audio_files
        from iat.voice import capture

        voice = self.voice
        if not voice.can_record:
            raise _Usage(f"no recording: {voice.no_input}", name="conflict")
        seconds = None
        if arg.strip():
            try:
                seconds = float(arg)
            except ValueError:
                raise _Usage("/talk takes a number of seconds (or nothing: the next line stops it)") from None
            if not 0 < seconds <= capture.MAX_SECONDS:
                raise _Usage(f"/talk takes 0 to {capture.MAX_SECONDS:g} seconds")
        if seconds is not None:
            self.say(f"recording {seconds:g} s...")
            audio = voice.record(seconds=seconds)
        else:
            self.say("recording... press Enter to stop" if self.tty else "recording... (the next line stops it)")
            audio, line = voice.record_until(self._next_line)
            if line is _EOF:  # Ctrl+C or the end of input: leaving, not asking
                self.say("recording dropped")
                return True
        self.say(f"recorded {audio.duration_s:.1f} s")
        if audio.duration_s == 0:
            return True
        wav = audio_files.encode_wav(audio)
        result = self.call("voice.stt", slug=self.slug, session_id=self.session_id,
                           audio_base64=base64.b64encode(wav).decode("ascii"), **voice.stt_params)
        transcript = result["transcript"]
        if not transcript.get("text"):
            reason = (transcript.get("meta") or {}).get("reason") or "no speech recognised"
            self.say(f"you said: (nothing: {reason})")
            return True
        self.say(f"you said: {transcript['text']}")
        return self.show_turn(result["turn"]) if result.get("turn") else True

    def _goodbye(self) -> None:
        going = sorted(i for i in self.followed if self.known[i] in ("queued", "running"))
        if going:
            ids = ", ".join(short(i) for i in going)
            self.say(f"still going: {ids}; queued and running instructions go on the next time a sidecar opens "
                     f"project {self.slug}")
        self.say("bye")


class Voice:
    """Push to talk's devices and engine choices (the --voice options), checked once at the start."""

    def __init__(self, args):
        from iat.voice import capture

        self.input = args.input_device
        self.output = args.output_device
        self.stt_params = {k: v for k, v in (("engine", args.stt_engine), ("language", args.language)) if v}
        self.stt_params["grammar"] = bool(args.grammar)
        self.tts_params = {k: v for k, v in (("engine", args.tts_engine), ("language", args.language),
                                             ("voice", args.tts_voice)) if v}
        self.notes: list[str] = []
        self.no_input: str | None = None
        self.speaking = not args.no_speak
        try:
            capture.device_info(self.input, "input")
        except capture.DeviceUnavailable as exc:
            if self.input is not None:
                raise
            self.no_input = exc.message
            self.notes.append(f"voice: {exc.message}; type your requests")
        if self.speaking:
            try:
                capture.device_info(self.output, "output")
            except capture.DeviceUnavailable as exc:
                if self.output is not None:
                    raise
                self.speaking = False
                self.notes.append(f"voice: {exc.message}; answers are printed, not spoken")

    @property
    def can_record(self) -> bool:
        return self.no_input is None

    def record(self, seconds: float):
        from iat.voice import capture

        return capture.record(self.input, seconds=seconds)

    def record_until(self, next_line: Callable[[], object]):
        """Records on a thread until next_line() returns (a line or the end of input); (the audio, what it
        returned)."""
        from iat.voice import capture

        stop = threading.Event()
        got: dict[str, Any] = {}

        def run() -> None:
            try:
                got["audio"] = capture.record(self.input, stop=stop)
            except BaseException as exc:  # noqa: BLE001 - raised again on the chat's thread
                got["error"] = exc
            stop.set()

        worker = threading.Thread(target=run, name="chat-record", daemon=True)
        worker.start()
        line = next_line()
        stop.set()
        worker.join()
        if "error" in got:
            raise got["error"]
        return got["audio"], line

    def speak(self, chat: Chat, message_id: str) -> None:
        """voice.tts on the assistant message, then played; a failure is one line and the chat goes on (no output
        device: answers are no longer spoken)."""
        from iat.voice import capture, playback

        if not self.speaking:
            return
        try:
            spoken = chat.call("voice.tts", slug=chat.slug, message_id=message_id, **self.tts_params)
            data = chat.call("assets.read", slug=chat.slug, asset_id=spoken["asset"]["id"])
            playback.play(base64.b64decode(data["data_base64"]), self.output)
        except capture.DeviceUnavailable as exc:
            self.speaking = False
            chat.say(f"voice: {exc.message}; answers are printed, not spoken")
        except Exception as exc:  # noqa: BLE001 - any failure is one line; the chat goes on
            chat.error(exc)

    def show_devices(self, chat: Chat) -> None:
        from iat.voice import capture

        for kind in ("input", "output"):
            found = capture.devices(kind)
            chat.say(f"{kind} devices:" + ("" if found else " none"))
            for d in found:
                chat.say(f"  {d['index']}: {d['name']} ({d['channels']} ch, {d['default_samplerate']:g} Hz)")


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
        voice = None
        if getattr(args, "voice", False):
            from iat.voice.capture import DeviceUnavailable

            try:
                voice = Voice(args)
            except DeviceUnavailable as exc:
                print(f"error: {exc.name}: {exc.message}", file=sys.stderr)
                return 2
        chat = Chat(app, call, project["slug"], session["id"], stdin, out, voice=voice)
        greeting = (f"chat with the copilot in {project['name']} ({project['slug']}), session "
                    f"{short(session['id'])}; /help for commands")
        if voice:
            lines = [*voice.notes] + (["push to talk: Enter starts a recording and Enter stops it; /talk [SECONDS] "
                                       "too"] if voice.can_record else [])
            greeting += "".join("\n" + line for line in lines)
        return chat.run(greeting)
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
