"""A loopback OpenAI audio API: what the `openai_audio` provider (the copilot's paid voice) talks to in tests.

Served through `LoopbackServer` (tests/vendors/loopback.py) under /v1. Shapes from the API reference and the openai
SDK's types (src/openai/types/audio/transcription.py, transcription_verbose.py, speech_create_params.py):

- POST /v1/audio/transcriptions, multipart/form-data: `file` (required; its header is decoded with libsndfile, so
  anything that is not real audio is OpenAI's 400 "Invalid file format"), `model` (required, listed), `language`,
  `prompt`, `response_format` (json | text | verbose_json). The text answered is scripted: `state.transcripts`
  is a queue of texts, one per request (an empty queue answers 500, so a test sees an unexpected request). json:
  `{"text", "usage"}`: whisper-1's usage is `{"type": "duration", "seconds"}` (whole seconds, as billed), the
  gpt-4o models' `{"type": "tokens", ...}`; verbose_json adds `task`, `language`, `duration` and one segment.
- POST /v1/audio/speech, JSON: `model`, `input` (required, at most 4096 characters), `voice` (required),
  `response_format` (mp3 | opus | aac | flac | wav | pcm; only wav and pcm are made here), `speed`,
  `instructions`. The answer is a real 24 kHz mono 16-bit WAV of a 220 Hz tone lasting 0.06 s per input
  character (at least 0.3 s), streamed in `state.chunk_bytes` chunks with its RIFF and data sizes 0xFFFFFFFF, as
  a streamed WAV from OpenAI has them (its length is not known when the header goes out); with
  `state.hold_after_first` set, the rest waits for that event after the first chunk.
- GET /v1/models: the list object.
- Errors in OpenAI's body `{"error": {"message", "type", "param", "code"}}`: 401 when the state has a key and the
  Bearer token differs; 404 model_not_found; 400 for a malformed request. 429 and 500: queue
  `openai_chat.rate_limited(...)` / `server_error()` faults on the server.

`state.received` keeps every audio request: path, Authorization, the form fields or JSON body, and for a
transcription the uploaded file's bytes and what libsndfile read of it (format, samplerate, channels, frames).
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from vendors.openai_chat import _authenticate, _error, _invalid

STT_MODELS = ("gpt-4o-mini-transcribe", "gpt-4o-transcribe", "whisper-1")
TTS_MODELS = ("gpt-4o-mini-tts", "tts-1", "tts-1-hd")
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
SPEECH_RATE = 24000
SECONDS_PER_CHAR = 0.06
MIN_SPEECH_S = 0.3
TRANSCRIBE_FIELDS = {"file", "model", "language", "prompt", "response_format", "temperature",
                     "timestamp_granularities[]", "include[]", "chunking_strategy", "stream"}
SPEECH_FIELDS = {"model", "input", "voice", "response_format", "speed", "instructions", "stream_format"}


@dataclass
class AudioState:
    api_key: str | None = None  # None: no key checked (a local server)
    models: tuple[str, ...] = STT_MODELS + TTS_MODELS
    transcripts: deque = field(default_factory=deque)
    chunk_bytes: int = 4096
    # Set: the speech stream sends its first chunk, then waits (at most 10 s) for this event before the rest, so a
    # test can tell that the client had audio before the whole answer arrived.
    hold_after_first: threading.Event | None = None
    chunks_sent: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, *texts: str) -> None:
        """Queues the texts the next transcriptions answer, one each."""
        with self._lock:
            self.transcripts.extend(texts)

    def _next(self) -> str | None:
        with self._lock:
            return self.transcripts.popleft() if self.transcripts else None


def speech_seconds(text: str) -> float:
    return max(MIN_SPEECH_S, SECONDS_PER_CHAR * len(text))


def tone_pcm(seconds: float, rate: int = SPEECH_RATE) -> bytes:
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * 32767 * np.sin(2 * math.pi * 220.0 * t)).astype("<i2").tobytes()


def streamed_wav_header(rate: int = SPEECH_RATE) -> bytes:
    """A PCM16 mono WAV header whose RIFF and data sizes are unknown (0xFFFFFFFF)."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return b"RIFF" + b"\xff\xff\xff\xff" + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" \
        + b"\xff\xff\xff\xff"


def _read_audio(data: bytes) -> dict | None:
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            return {"format": f.format, "samplerate": f.samplerate, "channels": f.channels, "frames": f.frames}
    except Exception:  # noqa: BLE001 - anything libsndfile cannot read is not audio to this server
        return None


def make_app(state: AudioState) -> web.Application:
    app = web.Application(client_max_size=32 * 1024 * 1024)

    async def transcriptions(request: web.Request) -> web.Response:
        record: dict[str, Any] = {"path": request.path, "authorization": request.headers.get("Authorization")}
        with state._lock:
            state.received.append(record)
        if (denied := _authenticate(state, request)) is not None:
            return denied
        if not request.content_type.startswith("multipart/form-data"):
            return _invalid("Expected multipart/form-data.", None, None)
        form = await request.post()
        fields = {k: (v if isinstance(v, str) else f"<file {getattr(v, 'filename', '')}>") for k, v in form.items()}
        record["fields"] = fields
        for name in form:
            if name not in TRANSCRIBE_FIELDS:
                return _error(400, f"Unrecognized request argument supplied: {name}", "invalid_request_error")
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _invalid("Missing required parameter: 'file'.", "file", "missing_required_parameter")
        model = form.get("model")
        if not isinstance(model, str) or not model:
            return _invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
        if model not in state.models or model not in STT_MODELS:
            return _error(404, f"The model `{model}` does not exist or you do not have access to it.",
                          "invalid_request_error", None, "model_not_found")
        fmt = form.get("response_format", "json")
        if fmt not in ("json", "text", "verbose_json") or (fmt == "verbose_json" and model != "whisper-1"):
            return _invalid(f"response_format '{fmt}' is not compatible with model '{model}'.", "response_format",
                            "unsupported_value")
        data = upload.file.read()
        record["file"] = data
        record["audio"] = read = _read_audio(data)
        if read is None:
            return _invalid("Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', "
                            "'oga', 'ogg', 'wav', 'webm']", "file", "invalid_value")
        text = state._next()
        if text is None:
            return _error(500, "no scripted transcript left for this request", "server_error")
        duration = read["frames"] / read["samplerate"]
        if fmt == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        if model == "whisper-1":
            usage: dict[str, Any] = {"type": "duration", "seconds": math.ceil(duration)}
        else:
            audio_tokens = math.ceil(duration * 10)
            text_tokens = math.ceil(len(form.get("prompt", "") or "") / 4)
            usage = {"type": "tokens", "input_tokens": audio_tokens + text_tokens,
                     "output_tokens": math.ceil(len(text) / 4),
                     "total_tokens": audio_tokens + text_tokens + math.ceil(len(text) / 4),
                     "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": text_tokens}}
        body: dict[str, Any] = {"text": text, "usage": usage}
        if fmt == "verbose_json":
            body.update({"task": "transcribe", "language": form.get("language") or "english",
                         "duration": round(duration, 3),
                         "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": round(duration, 3), "text": text,
                                       "tokens": [], "temperature": 0.0, "avg_logprob": -0.2,
                                       "compression_ratio": 1.0, "no_speech_prob": 0.01}]})
        return web.json_response(body, headers={"x-request-id": "req_loopback"})

    async def speech(request: web.Request) -> web.StreamResponse:
        record: dict[str, Any] = {"path": request.path, "authorization": request.headers.get("Authorization")}
        with state._lock:
            state.received.append(record)
        if (denied := _authenticate(state, request)) is not None:
            return denied
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _invalid("We could not parse the JSON body of your request.", None, None)
        record["body"] = body
        if not isinstance(body, dict):
            return _invalid("Invalid type for request body: expected an object.", None, "invalid_type")
        for name in body:
            if name not in SPEECH_FIELDS:
                return _error(400, f"Unrecognized request argument supplied: {name}", "invalid_request_error")
        for name in ("model", "input", "voice"):
            if not isinstance(body.get(name), str) or not body[name]:
                return _invalid(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
        if body["model"] not in state.models or body["model"] not in TTS_MODELS:
            return _error(404, f"The model `{body['model']}` does not exist or you do not have access to it.",
                          "invalid_request_error", None, "model_not_found")
        if len(body["input"]) > 4096:
            return _invalid("[{'type': 'string_too_long', 'loc': ('body', 'input'), 'msg': 'String should have at "
                            "most 4096 characters'}]", "input", "string_above_max_length")
        if body["voice"] not in VOICES:
            return _invalid(f"Invalid value for 'voice': '{body['voice']}'.", "voice")
        fmt = body.get("response_format", "mp3")
        if fmt not in ("wav", "pcm"):
            return _invalid(f"response_format '{fmt}' is not made by this loopback server.", "response_format",
                            "unsupported_value")
        pcm = tone_pcm(speech_seconds(body["input"]))
        payload = (streamed_wav_header() + pcm) if fmt == "wav" else pcm
        response = web.StreamResponse(headers={"Content-Type": "audio/wav" if fmt == "wav" else "audio/pcm",
                                               "x-request-id": "req_loopback"})
        await response.prepare(request)
        state.chunks_sent = 0
        for n, start in enumerate(range(0, len(payload), state.chunk_bytes)):
            if n == 1 and state.hold_after_first is not None:
                for _ in range(1000):
                    if state.hold_after_first.is_set():
                        break
                    await asyncio.sleep(0.01)
            await response.write(payload[start:start + state.chunk_bytes])
            state.chunks_sent += 1
        await response.write_eof()
        return response

    async def models(request: web.Request) -> web.Response:
        if (denied := _authenticate(state, request)) is not None:
            return denied
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1_745_000_000, "owned_by": "system"} for m in state.models]})

    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_get("/v1/models", models)
    return app

