"""Command line: `iat-sidecar serve|demo|run|chat|doctor|schema` (also `python -m iat`).

Imports stay inside the subcommands: `serve --stdio` must answer its first ping before anything heavy loads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iat-sidecar", description="IAT Toolkit sidecar")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve JSON-RPC over stdio, a localhost socket and/or HTTP")
    serve.add_argument("--stdio", action="store_true", help="newline-delimited JSON-RPC on stdin/stdout")
    serve.add_argument("--tcp", type=int, metavar="PORT", help="newline-delimited JSON-RPC on 127.0.0.1:PORT (0: any)")
    serve.add_argument("--http", type=int, metavar="PORT", help="REST + /rpc + /ws on 127.0.0.1:PORT (0: any)")
    serve.add_argument("--home", help="data folder (default: $IAT_HOME or the user data dir)")

    demo = sub.add_parser("demo", help="run the offline demo on the embedded defaults")
    demo.add_argument("--home", help="keep the demo's data here (default: a temporary folder)")
    demo.add_argument("--quick", action="store_true", help="two shots of two candidates (a smoke test)")

    run = sub.add_parser("run", help="run a shot list (CSV) in a project, with a progress bar")
    run.add_argument("--project", required=True, metavar="SLUG", help="the project (see projects.list)")
    run.add_argument("--shots", required=True, metavar="CSV", help="shot list: job_key, scene, characters, "
                     "time_of_day, weather, cutout")
    run.add_argument("--candidates", type=int, default=4, metavar="K", help="candidates per shot (1-16)")
    run.add_argument("--stages", help="comma-separated stages, default style_lock,light_time,weather_effects")
    run.add_argument("--provider", default="preview")
    run.add_argument("--style-guide", metavar="ID", help="default: the project's default style guide")
    run.add_argument("--seed", type=int)
    run.add_argument("--upscale", type=int, choices=(2, 3, 4))
    run.add_argument("--no-color-correct", action="store_true")
    run.add_argument("--home", help="data folder (default: $IAT_HOME or the user data dir, as the desktop app)")

    chat = sub.add_parser("chat", help="talk with the project's copilot in this terminal (or through a pipe)")
    chat.add_argument("--project", required=True, metavar="SLUG", help="the project (see projects.list)")
    chat.add_argument("--session", metavar="ID", help="continue this chat session (default: a new one)")
    chat.add_argument("--title", help="the new session's title")
    chat.add_argument("--home", help="data folder (default: $IAT_HOME or the user data dir, as the desktop app)")
    voice = chat.add_argument_group("push to talk (--voice)", description=(
        "A terminal cannot see a key being released, so on a terminal Enter starts a recording and Enter stops it "
        "(holding SPACE would rest on the keyboard's repeat delay and a raw-mode terminal); /talk does the same "
        "(the next line stops it) and /talk SECONDS records that long, also through a pipe. What was said goes "
        "through voice.stt into this chat, the answer is printed and spoken (voice.tts). Typed lines still work. "
        "No input device: one line, and the chat goes on typed; a device named here that does not exist ends it "
        "with code 2."))
    voice.add_argument("--voice", action="store_true", help="push to talk: speak requests, hear the answers")
    voice.add_argument("--input-device", metavar="N|NAME", help="microphone: index or (part of a) name; "
                       "default: the system's (/devices lists them)")
    voice.add_argument("--output-device", metavar="N|NAME", help="speaker: index or (part of a) name")
    voice.add_argument("--stt-engine", choices=("vosk", "openai"), help="speech to text (default: the project's "
                       "settings_json.voice.stt_engine, else vosk)")
    voice.add_argument("--tts-engine", choices=("local", "openai"), help="text to speech (default: the project's "
                       "settings_json.voice.tts_engine, else local)")
    voice.add_argument("--grammar", action="store_true", help="recognise only the copilot's vocabulary (short "
                       "commands, vosk)")
    voice.add_argument("--language", metavar="CODE", help="language of speech heard and spoken (e.g. en, ko)")
    voice.add_argument("--tts-voice", metavar="VOICE", help="voice the answers are spoken with")
    voice.add_argument("--no-speak", action="store_true", help="print the answers only, do not speak them")

    doctor = sub.add_parser("doctor", help="check this installation: data folder, databases, bundled libraries")
    doctor.add_argument("--home")
    doctor.add_argument("--json", action="store_true", help="print one JSON object")

    schema = sub.add_parser("schema", help="write or check schema/ (DDL of both engines, openapi.json)")
    schema.add_argument("--check", action="store_true", help="fail when schema/ differs from the code")
    schema.add_argument("--dir", default="schema")
    schema.add_argument("--pg-dsn", help="PostgreSQL server to build the PostgreSQL DDL on")
    # Hidden: the frozen build's check that its keyring backend stores and reads secrets (iat.secrets.selftest).
    selftest = sub.add_parser("secrets-selftest")
    selftest.add_argument("--home")
    selftest.add_argument("--project", metavar="SLUG")
    selftest.add_argument("--provider", default="selftest")
    selftest.add_argument("--name", default="probe")
    selftest.add_argument("--expect-sha256")
    return parser


def _settings(home: str | None):
    from iat.settings import Settings

    return Settings.from_env(**({"home": Path(home).resolve()} if home else {}))


def serve(args: argparse.Namespace) -> int:
    if not (args.stdio or args.tcp is not None or args.http is not None):
        print("serve needs --stdio, --tcp PORT and/or --http PORT", file=sys.stderr)
        return 2
    from iat.rpc.stdio import LineWriter, claim_stdout

    out = LineWriter(claim_stdout())
    settings = _settings(args.home)
    from iat.app import App
    from iat.logs import setup_logging
    from iat.server import Sidecar

    app = App(settings)
    setup_logging(settings.log_level, settings.logs_dir, app.redactor)
    sidecar = Sidecar(app, stdio_in=sys.stdin.buffer if args.stdio else None, out=out, tcp_port=args.tcp,
                      http_port=args.http)
    code = sidecar.run()
    import logging
    import os

    logging.shutdown()
    # Worker threads may still sit in a call that outlived the stop budget: everything committed is on disk.
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "demo":
        from iat.demo import run_demo

        return run_demo(args.home, quick=args.quick)
    if args.command == "run":
        from iat.pipeline.console import run_from_cli

        return run_from_cli(args, _settings(args.home))
    if args.command == "chat":
        from iat.chat_cli import run_chat

        return run_chat(args, _settings(args.home))
    if args.command == "doctor":
        from iat.doctor import run_doctor

        return run_doctor(_settings(args.home), as_json=args.json)
    if args.command == "secrets-selftest":
        from iat.secrets.selftest import run_selftest

        return run_selftest(args, _settings)
    if args.command == "schema":
        from iat.schema_files import run_schema

        return run_schema(args.dir, check=args.check, pg_dsn=args.pg_dsn)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
