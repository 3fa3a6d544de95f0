"""voice.*: speech to text and text to speech for the copilot (SPEC 2.6.1-2, 5.6 voice_requests, 9.1 Voice).

Every call is a `voice_requests` row (direction, engine or provider, input and output assets, status, latency in
ms, meta) readable with `voice.requests.get`; a failed call keeps its row (`failed`, with the error) and, for STT,
its stored input audio, as its record, and nothing else. Paid engines (`openai`, the project's `openai_audio`
provider account) go through the ledger with their cost. Events: `voice.stt.started`, `voice.stt.partial` (text
recognised so far, long audio), `voice.stt.done`, `voice.tts.done` (status done or failed), and the chat's own.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from iat.commands.agent import instruction_out
from iat.commands.assets import AssetOut
from iat.commands.chat import TurnOut, _message_out
from iat.commands.common import ProjectRef, exactly_one_of, require_exactly_one
from iat.errors import (
    BudgetExhausted, EngineError, GuardrailDenied, InvalidParams, PayloadTooLarge, ProviderError,
)
from iat.lazy import lazy_import
from iat.registry import Result, command

service = lazy_import("iat.voice.service")
repo = lazy_import("iat.voice.repo")
projects_repo = lazy_import("iat.projects.repo")

MAX_AUDIO_BYTES = 20 * 1024 * 1024  # iat.voice.audio.MAX_BYTES (the transport's message limit may come first)
MAX_AUDIO_BASE64 = 4 * math.ceil(MAX_AUDIO_BYTES / 3)
MAX_TTS_CHARS = 4096  # iat.voice.service.MAX_TTS_CHARS
STT_ENGINES = ("vosk", "openai")
TTS_ENGINES = ("local", "openai")

Language = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}$"),
                     Field(description="BCP 47 language, e.g. en, ko, en-US")]


class VoiceRequestOut(Result):
    id: str
    project_id: str
    session_id: str | None
    message_id: str | None = Field(description="stt: the user chat message the text became; tts: the assistant "
                                                "message spoken")
    direction: Literal["stt", "tts"]
    provider_code: str = Field(description="The engine (vosk, local) or, for a paid engine, its provider account "
                                           "(openai_audio)")
    input_asset_id: str | None
    output_asset_id: str | None
    status: Literal["queued", "running", "done", "failed"]
    latency_ms: int | None = Field(description="stt: from the call to the transcript; tts: to the stored audio")
    meta_json: dict = Field(description="engine, model, language, audio format/duration; stt: text, confidence, "
                                        "grammar, partials, reason when nothing was recognised; tts: voice, "
                                        "characters, first_audio_ms; failed: error {name, message, details}")
    created_at: datetime


class TranscriptOut(Result):
    text: str = Field(description="Empty when no speech was recognised (the request's meta_json.reason says so)")
    confidence: float | None
    words: list[dict[str, Any]] = Field(description="{word, start, end, conf} when the engine gives them")
    meta: dict


class SttOut(Result):
    request: VoiceRequestOut
    transcript: TranscriptOut
    turn: TurnOut | None = Field(description="With session_id and recognised text: the chat turn (the user's "
                                             "message with voice_asset_id, the copilot's answer, instructions)")


class TtsOut(Result):
    request: VoiceRequestOut
    asset: AssetOut = Field(description="The speech, a 16-bit mono WAV (kind generated)")


class SttParams(ProjectRef):
    model_config = ConfigDict(json_schema_extra=exactly_one_of("audio_base64", "asset_id"))

    audio_base64: str | None = Field(None, min_length=4, max_length=MAX_AUDIO_BASE64,
                                     pattern=r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
                                     description="The audio file (WAV, FLAC or OGG Vorbis/Opus), base64 with "
                                                 "padding; or give asset_id")
    asset_id: uuid.UUID | None = Field(None, description="An audio asset of the project to transcribe")
    engine: Literal["vosk", "openai"] | None = Field(None, description=(
        "vosk (local, offline: a model from the models folder) or openai (the openai_audio provider, paid); "
        "default: the project's settings_json.voice.stt_engine, else vosk"))
    grammar: bool = Field(False, strict=True, description="Recognise only the copilot's vocabulary (short commands: "
                                                          "vosk; openai takes it as hints)")
    language: Language | None = None
    session_id: uuid.UUID | None = Field(None, description="A chat session of the project: the text becomes the "
                                                           "user's message there and the copilot answers it")

    @model_validator(mode="after")
    def _one_source(self) -> "SttParams":
        require_exactly_one(self, "audio_base64", "asset_id")
        return self


class TtsParams(ProjectRef):
    model_config = ConfigDict(json_schema_extra=exactly_one_of("text", "message_id"))

    text: str | None = Field(None, min_length=1, max_length=MAX_TTS_CHARS,
                             pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*\S[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$",
                             description="What to say (not only white space); or give message_id")
    message_id: uuid.UUID | None = Field(None, description="An assistant chat message of the project: its text is "
                                                           "spoken and the audio linked to it (voice_asset_id)")
    engine: Literal["local", "openai"] | None = Field(None, description=(
        "local (the OS's voices through pyttsx3: eSpeak NG, SAPI5, NSSpeechSynthesizer) or openai (the "
        "openai_audio provider, paid); default: the project's settings_json.voice.tts_engine, else local"))
    voice: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$",
                              description="local: a voice id or name (default: by language, else the system's); "
                                          "openai: alloy, coral, ... (default: the account's)")
    language: Language | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "TtsParams":
        require_exactly_one(self, "text", "message_id")
        return self


class RequestRef(ProjectRef):
    request_id: uuid.UUID


def request_out(row: dict) -> VoiceRequestOut:
    ids = ("id", "project_id", "session_id", "message_id", "input_asset_id", "output_asset_id")
    return VoiceRequestOut(**{**row, **{k: str(row[k]) if row[k] else None for k in ids}})


def _default_engine(handle, key: str, allowed: tuple[str, ...], fallback: str) -> str:
    settings = handle.store.read(projects_repo.get_project, handle.id)["settings_json"] or {}
    voice = settings.get("voice") if isinstance(settings.get("voice"), dict) else {}
    code = voice.get(key)
    if code is None:
        return fallback
    if code not in allowed:
        raise InvalidParams(f"the project's settings_json.voice.{key} {code!r} names no engine; one of "
                            f"{', '.join(allowed)}, or give engine", details={"setting": f"voice.{key}"})
    return code


@command("voice.stt", params=SttParams, result=SttOut, route=("POST", "/api/projects/{slug}/voice/stt"),
         mutating=True, errors=(PayloadTooLarge, ProviderError, BudgetExhausted, EngineError, GuardrailDenied))
def speech_to_text(ctx, p: SttParams) -> SttOut:
    """Transcribes speech; with session_id the text is the user's chat message and the copilot answers it.

    The input audio is stored as an asset (kind input) and the request recorded before the engine runs; a failed
    call keeps both as its record (the request failed, with its error) and writes nothing else. Unsupported or
    unreadable audio, or audio over the limits (20 MiB, 10 minutes), is invalid_params and writes nothing. A
    missing engine or model is conflict saying what to install; an openai_audio account that is not set up is
    conflict saying what it needs."""
    data = None
    if p.audio_base64 is not None:
        try:
            data = base64.b64decode(p.audio_base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParams("audio_base64 is not base64 (RFC 4648, with padding)") from None
    with ctx.app.projects.lease(p.slug) as handle:
        engine = p.engine or _default_engine(handle, "stt_engine", STT_ENGINES, "vosk")
        out = service.stt(ctx.app, handle, ctx.app.current_user()["id"], audio_bytes=data,
                          asset_id=str(p.asset_id) if p.asset_id else None, engine=engine, grammar=p.grammar,
                          language=p.language, session_id=str(p.session_id) if p.session_id else None)
        turn = out["turn"]
        return SttOut(request=request_out(out["request"]), transcript=TranscriptOut(**out["transcript"]),
                      turn=TurnOut(user_message=_message_out(turn["user_message"]),
                                   assistant_message=_message_out(turn["assistant_message"]),
                                   instructions=[instruction_out(ctx.app, handle, r) for r in turn["instructions"]])
                      if turn else None)


@command("voice.tts", params=TtsParams, result=TtsOut, route=("POST", "/api/projects/{slug}/voice/tts"),
         mutating=True, errors=(ProviderError, BudgetExhausted, EngineError))
def text_to_speech(ctx, p: TtsParams) -> TtsOut:
    """Speaks text, or an assistant message (then linked to it as its voice_asset_id), into a stored WAV asset.

    A missing speech engine or voice is conflict saying what to install; an openai_audio account that is not set
    up is conflict saying what it needs. A failed call keeps its request row (failed, with its error)."""
    with ctx.app.projects.lease(p.slug) as handle:
        engine = p.engine or _default_engine(handle, "tts_engine", TTS_ENGINES, "local")
        out = service.tts(ctx.app, handle, ctx.app.current_user()["id"], text=p.text,
                          message_id=str(p.message_id) if p.message_id else None, engine=engine, voice=p.voice,
                          language=p.language)
        return TtsOut(request=request_out(out["request"]), asset=AssetOut(**out["asset"]))


@command("voice.requests.get", params=RequestRef, result=VoiceRequestOut,
         route=("GET", "/api/projects/{slug}/voice/requests/{request_id}"))
def get_request(ctx, p: RequestRef) -> VoiceRequestOut:
    """Returns one voice request of the project (another project's is not_found)."""
    handle = ctx.app.projects.open(p.slug)
    return request_out(handle.store.read(repo.get_request, handle.id, str(p.request_id)))
