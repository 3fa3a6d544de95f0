"""The one path every STT and TTS call takes, whoever asks (the voice.* commands, `iat-sidecar chat --voice`).

Speech to text: the audio's header is checked first (format, size, duration: a refusal writes nothing); then the
input audio is stored as an asset (kind `input`, its real MIME type; the same bytes stored before are reused) and the
request row is written `running`, in one write, so every call leaves its record whatever happens next. Then the
audio is decoded, resampled to the engine's rate and transcribed (partial texts published as `voice.stt.partial`),
and the row ends `done` with its latency (from the call's start to the transcript) and meta (engine, model, text,
confidence, duration), or `failed` with the error, which is raised to the caller as it was. With a chat session,
recognised text becomes the user's chat message with `voice_asset_id` and the copilot answers it exactly as typed
text (`iat.copilot.chat.send`); no speech recognised makes no message (`meta.reason` says so).

Text to speech: the request row first (`running`), then the engine, its WAV normalised (mono 16-bit PCM through
iat.voice.audio), stored as a `generated` asset with the row `done` (and, for an assistant message, that message's
`voice_asset_id`) in one write. `meta.first_audio_ms` is the engine's time to first audio.

Engines come from stt.ENGINES / tts.ENGINES, one instance per process, built on first use; an engine whose module
cannot be imported is `conflict` saying so.
"""

from __future__ import annotations

import logging
import time

from iat.assets import register
from iat.assets import repo as assets_repo
from iat.assets import store as files
from iat.audit import repo as audit
from iat.clock import utcnow
from iat.errors import Conflict, IATError, InvalidParams, NotFound
from iat.plugins import LazyRegistry
from iat.voice import audio, repo, stt, tts

log = logging.getLogger(__name__)

MAX_TTS_CHARS = 4096  # OpenAI's speech endpoint takes no more; a local engine reading more is a mistake
_REGISTRIES = {"stt": LazyRegistry("speech-to-text engine", stt.ENGINES),
               "tts": LazyRegistry("text-to-speech engine", tts.ENGINES)}


def engine_for(direction: str, code: str):
    """The process's engine `code` for `direction` ("stt" | "tts"), built on first use."""
    registry = _REGISTRIES[direction]
    if code not in registry:
        raise InvalidParams(f"unknown {registry.kind} {code!r}; known: {', '.join(registry.codes())}",
                            details={"engine": code, "known": registry.codes()})
    try:
        return registry.get(code)
    except ImportError as exc:
        raise Conflict(f"the {code} {registry.kind} is not part of this installation ({exc}); install the "
                       f"package it needs", details={"engine": code, "missing": getattr(exc, "name", None)}) from None


def provider_code(engine) -> str:
    """What the request row names: a paid engine's provider account (its ledger rows say the same), else the
    engine's code."""
    return getattr(engine, "provider_code", None) or engine.code


def _grammar(app, handle) -> list[str] | None:
    """The copilot's vocabulary as phrases for a grammar-mode engine (iat.voice.vocabulary), None without it."""
    try:
        from iat.voice import vocabulary
    except ImportError:
        return None
    return vocabulary.phrases(app, handle)


def _ms(started: float) -> int:
    return max(0, round((time.perf_counter() - started) * 1000))


def _error_of(exc: BaseException) -> dict:
    if isinstance(exc, IATError):
        return {"name": exc.name, "message": exc.message, "details": exc.details}
    return {"name": "internal_error", "message": type(exc).__name__}


def _publish(app, handle, name: str, row: dict, **extra) -> None:
    app.events.publish(name, {"project_id": handle.id, "slug": handle.slug, "request_id": row["id"],
                              "status": row["status"], **extra})


def _fail(app, handle, actor_id: str, row: dict, started: float, exc: BaseException, meta: dict) -> None:
    """Ends the request row `failed` with the error (the caller re-raises it)."""
    if not isinstance(exc, IATError):
        log.error("voice %s request %s failed", row["direction"], row["id"], exc_info=exc)
    error = _error_of(exc)

    def write(pid: str) -> dict:
        done = repo.finish_request(pid, row["id"], status="failed", latency_ms=_ms(started),
                                   meta_json={**meta, "error": error})
        audit.record(pid, actor_id, f"voice.{row['direction']}.failed", {"request_id": row["id"],
                                                                         "error": error["name"]})
        return done

    try:
        done = handle.store.write(write, handle.id)
    except IATError as db_exc:  # the project closed under the call: the original error matters more
        log.warning("voice request %s could not be marked failed: %s", row["id"], db_exc.message)
        return
    _publish(app, handle, f"voice.{row['direction']}.done", done, error=error["name"])


# --- speech to text ---


def _read_asset(handle, asset_id: str) -> tuple[dict, bytes]:
    row = handle.store.read(assets_repo.get_asset, handle.id, str(asset_id))
    if not str(row.get("mime_type") or "").startswith("audio/"):
        raise InvalidParams(f"asset {asset_id} is {row.get('mime_type') or 'of no known type'}, not audio",
                            details={"asset_id": str(asset_id), "mime_type": row.get("mime_type")})
    path = files.abs_path(handle.root, row["storage_uri"])
    try:
        return row, path.read_bytes()
    except OSError as exc:
        raise Conflict(f"asset {asset_id}'s file cannot be read ({exc.strerror or exc})",
                       details={"asset_id": str(asset_id)}) from None


def stt(app, handle, actor_id: str | None, *, audio_bytes: bytes | None = None, asset_id: str | None = None,
        engine: str = "vosk", grammar: bool = False, language: str | None = None,
        session_id: str | None = None) -> dict:
    """Transcribes one audio file: {request, transcript {text, confidence, words, meta}, turn (the chat turn or
    None)}. Typed errors: invalid_params (bad audio, unknown engine), not_found (asset, session), conflict (an
    engine or model missing), the provider errors of a paid engine."""
    from iat.copilot import repo as chat_repo

    started = time.perf_counter()
    if (audio_bytes is None) == (asset_id is None):
        raise InvalidParams("give exactly one of audio_base64 and asset_id")
    eng = engine_for("stt", engine)
    if session_id is not None:
        handle.store.read(chat_repo.get_session, handle.id, str(session_id))
    existing = None
    if asset_id is not None:
        existing, audio_bytes = _read_asset(handle, asset_id)
    info = audio.probe(audio_bytes)  # limits and format before anything is written
    voice_meta = {k: info[k] for k in ("format", "subtype", "channels", "sample_rate", "duration_s")}
    meta: dict = {"engine": eng.code, "language": language, "grammar": bool(grammar), **voice_meta}

    def rows(asset: dict | None, stored=None):
        def write() -> tuple[dict, dict]:
            pid = handle.id
            found = asset
            if found is None:
                found = assets_repo.find_by_sha(pid, stored.sha256, "input")
            if found is None:
                found = assets_repo.insert_asset(pid, "input", stored, {"voice": voice_meta}, utcnow(), actor_id)
            req = repo.insert_request(pid, "stt", provider_code(eng), input_asset_id=str(found["id"]),
                                      session_id=str(session_id) if session_id else None, meta=meta)
            audit.record(pid, actor_id, "voice.stt.started", {"request_id": req["id"],
                                                              "input_asset_id": str(found["id"])})
            return found, req
        return write

    if existing is not None:
        asset, row = handle.store.write(rows(existing))
    else:
        staged = files.stage_bytes(handle.root, audio_bytes)
        asset, row = register.write_with_files(handle, [staged], rows(None, staged.stored))
    _publish(app, handle, "voice.stt.started", row, input_asset_id=str(asset["id"]))

    partials = [0]

    def on_partial(text: str) -> None:
        partials[0] += 1
        app.events.publish("voice.stt.partial", {"project_id": handle.id, "slug": handle.slug,
                                                 "request_id": row["id"], "text": text})

    try:
        decoded, _ = audio.decode(audio_bytes)
        pcm = audio.to_rate(decoded, eng.sample_rate)
        phrases = _grammar(app, handle) if grammar else None
        if grammar:
            meta["grammar_phrases"] = len(phrases) if phrases is not None else None
        transcript = eng.transcribe(app, handle, pcm, grammar=phrases, language=language, on_partial=on_partial)
    except Exception as exc:
        _fail(app, handle, actor_id, row, started, exc, {**meta, "partials": partials[0]})
        raise
    latency_ms = _ms(started)
    text = (transcript.text or "").strip()
    meta.update({"model": transcript.meta.get("model"), "text": text, "confidence": transcript.confidence,
                 "partials": partials[0], "engine_meta": transcript.meta})
    if not text:
        meta["reason"] = "no speech was recognised"
    turn, chat_error = None, None
    if session_id is not None and text:
        from iat.copilot import chat

        try:
            turn = chat.send(app, handle, actor_id, str(session_id), text, voice_asset_id=str(asset["id"]))
        except IATError as exc:  # the transcript stands; the chat turn's error goes to the caller
            chat_error = exc
            meta["chat_error"] = _error_of(exc)
    message_id = str(turn["user_message"]["id"]) if turn else None

    def finish(pid: str) -> dict:
        done = repo.finish_request(pid, row["id"], status="done", latency_ms=latency_ms, meta_json=meta,
                                   message_id=message_id)
        audit.record(pid, actor_id, "voice.stt.done", {"request_id": row["id"], "message_id": message_id})
        return done

    row = handle.store.write(finish, handle.id)
    _publish(app, handle, "voice.stt.done", row, text=text, message_id=message_id)
    if chat_error is not None:
        raise chat_error
    return {"request": row, "transcript": {"text": text, "confidence": transcript.confidence,
                                           "words": list(transcript.words), "meta": dict(transcript.meta)},
            "turn": turn}


# --- text to speech ---


def _assistant_message(project_id: str, message_id: str) -> dict:
    from iat.db.models import ChatMessage, ChatSession

    msg = (ChatMessage.select(ChatMessage).join(ChatSession, on=(ChatMessage.session_id == ChatSession.id))
           .where(ChatSession.project_id == project_id, ChatMessage.id == str(message_id)).dicts().first())
    if msg is None:
        raise NotFound(f"chat message {message_id} not found", details={"message_id": str(message_id)})
    if msg["role"] != "assistant":
        raise InvalidParams(f"message {message_id} is a {msg['role']} message; only the assistant's answers are "
                            f"spoken", details={"message_id": str(message_id), "role": msg["role"]})
    return msg


def tts(app, handle, actor_id: str | None, *, text: str | None = None, message_id: str | None = None,
        engine: str = "local", voice: str | None = None, language: str | None = None) -> dict:
    """Speaks `text` (or an assistant message's text, then linked to it): {request, asset}."""
    from iat.copilot import repo as chat_repo

    started = time.perf_counter()
    if (text is None) == (message_id is None):
        raise InvalidParams("give exactly one of text and message_id")
    eng = engine_for("tts", engine)
    session_id = None
    if message_id is not None:
        msg = handle.store.read(_assistant_message, handle.id, message_id)
        text, session_id = msg["content_text"], str(msg["session_id"])
    text = text.strip()
    if not text:
        raise InvalidParams("there is no text to speak", details={"message_id": message_id and str(message_id)})
    if len(text) > MAX_TTS_CHARS:
        raise InvalidParams(f"the text has {len(text)} characters; at most {MAX_TTS_CHARS} are spoken at once",
                            details={"characters": len(text), "max_characters": MAX_TTS_CHARS})
    meta: dict = {"engine": eng.code, "voice": voice, "language": language, "characters": len(text)}

    def start(pid: str) -> dict:
        req = repo.insert_request(pid, "tts", provider_code(eng), session_id=session_id,
                                  message_id=str(message_id) if message_id else None, meta=meta)
        audit.record(pid, actor_id, "voice.tts.started", {"request_id": req["id"]})
        return req

    row = handle.store.write(start, handle.id)
    first: list[float] = []

    def on_first_audio() -> None:
        if not first:
            first.append(time.perf_counter())

    try:
        speech = eng.synthesize(app, handle, text, voice=voice, language=language, on_first_audio=on_first_audio)
        decoded, info = audio.decode(audio.fix_wav_lengths(speech.wav))
        wav = audio.encode_wav(decoded)
        staged = files.stage_bytes(handle.root, wav)
    except Exception as exc:
        _fail(app, handle, actor_id, row, started, exc, meta)
        raise
    latency_ms = _ms(started)
    meta.update({k: v for k, v in speech.meta.items() if k not in meta or meta[k] is None})
    meta.update({"sample_rate": decoded.sample_rate, "duration_s": round(decoded.duration_s, 3),
                 "first_audio_ms": round((first[0] - started) * 1000) if first else None,
                 "engine_meta": dict(speech.meta)})

    def rows() -> tuple[dict, dict]:
        pid = handle.id
        asset = assets_repo.insert_asset(pid, "generated", staged.stored, {"voice": {
            "request_id": row["id"], "engine": eng.code, "voice": meta.get("voice"), "sample_rate":
            decoded.sample_rate, "duration_s": round(decoded.duration_s, 3), "text": text[:200]}}, utcnow(), actor_id)
        if message_id is not None:
            chat_repo.update_message(str(message_id), voice_asset_id=asset["id"])
        done = repo.finish_request(pid, row["id"], status="done", latency_ms=latency_ms, meta_json=meta,
                                   output_asset_id=asset["id"])
        audit.record(pid, actor_id, "voice.tts.done", {"request_id": row["id"], "output_asset_id": asset["id"],
                                                       **({"message_id": str(message_id)} if message_id else {})})
        return asset, done

    try:
        asset, row = register.write_with_files(handle, [staged], rows)
    except Exception as exc:
        _fail(app, handle, actor_id, row, started, exc, meta)
        raise
    _publish(app, handle, "voice.tts.done", row, output_asset_id=asset["id"],
             message_id=str(message_id) if message_id else None)
    return {"request": row, "asset": asset}
