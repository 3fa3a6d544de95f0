"""`openai_audio`: OpenAI's speech endpoints (transcription and speech) through the openai SDK, for the copilot's
voice (iat.voice.openai_audio holds the engines that use it).

OpenAI itself (endpoint left out: https://api.openai.com/v1, the `api_key` secret required), or a local server
speaking the same API through `endpoint` (a key optional there; the SDK, which insists on one, gets a placeholder).
`operations = ("transcribe", "speak")`: never a run's image provider. One call is one HTTP request made with the
SDK's own retries off (`max_retries=0`: the ledger retries) and the attempt's time limit:

- transcribe: `audio.transcriptions.create(model=stt_model, file=("audio.wav", wav, "audio/wav"),
  response_format="json" ("verbose_json" for whisper-1, whose json answer has no duration), language, prompt)`.
- speak: `audio.speech.with_streaming_response.create(model=tts_model, voice, input, response_format="wav")`,
  read in chunks so `on_first_audio` fires on the first one.

Cost: transcription per minute of audio (the answer's `usage.seconds` when it reports a duration, else the audio's
own length) at `pricing.usd_per_minute`; speech per million input characters at `pricing.usd_per_1m_chars`. Left
out, OpenAI costs the model's list price (tables below; an unlisted model the table's dearest) and a local endpoint
nothing. Failures map exactly as the image connector's (`openai_images.vendor_error`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import Field

from iat.errors import ProviderError
from iat.providers.base import (
    Account, BaseProvider, CostEstimate, Pricing, ProviderConfig, ProviderStatus, check_cancel,
)
from iat.providers.openai_clients import OPENAI_ENDPOINT, Clients, is_openai, key_status
from iat.providers.openai_images import vendor_error

CODE = "openai_audio"
DEFAULT_STT_MODEL = "gpt-4o-mini-transcribe"
DEFAULT_TTS_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "alloy"
# OpenAI's list prices (openai.com/api/pricing): transcription USD per minute of audio, speech USD per 1M input
# characters (gpt-4o-mini-tts is priced by tokens, about 15 USD per 1M characters of typical text).
STT_USD_PER_MINUTE: dict[str, float] = {"gpt-4o-mini-transcribe": 0.003, "gpt-4o-transcribe": 0.006,
                                        "whisper-1": 0.006}
TTS_USD_PER_1M_CHARS: dict[str, float] = {"gpt-4o-mini-tts": 15.0, "tts-1": 15.0, "tts-1-hd": 30.0}
MAX_PROMPT_CHARS = 1000  # grammar phrases sent as the transcription prompt (vocabulary hints)


class AudioPricing(Pricing):
    """None: OpenAI's list price of the model on api.openai.com, nothing elsewhere. (`usd_per_image` unused.)"""

    usd_per_minute: float | None = Field(None, ge=0, le=1000, description="Transcription, per minute of audio")
    usd_per_1m_chars: float | None = Field(None, ge=0, le=10000, description="Speech, per 1M input characters")


class AudioConfig(ProviderConfig):
    endpoint: str | None = Field(None, max_length=2048, description="Base URL of an OpenAI-compatible API (…/v1); "
                                                                    "left out: api.openai.com")
    model: str | None = Field(None, min_length=1, max_length=256, description="Unused: see stt_model and tts_model")
    stt_model: str = Field(DEFAULT_STT_MODEL, min_length=1, max_length=256, description="Transcription model")
    tts_model: str = Field(DEFAULT_TTS_MODEL, min_length=1, max_length=256, description="Speech model")
    voice: str = Field(DEFAULT_VOICE, min_length=1, max_length=64, description="Speech voice (alloy, ash, coral, "
                                                                               "echo, nova, sage, shimmer...)")
    pricing: AudioPricing = Field(default_factory=AudioPricing)
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Limit of one attempt, in seconds")



def _listed(table: dict[str, float], model: str) -> float:
    known = [n for n in table if model == n or model.startswith(n + "-")]
    return table[max(known, key=len)] if known else max(table.values())


def usd_per_minute(config: AudioConfig) -> float:
    if config.pricing.usd_per_minute is not None:
        return config.pricing.usd_per_minute
    return _listed(STT_USD_PER_MINUTE, config.stt_model) if is_openai(config) else 0.0


def usd_per_1m_chars(config: AudioConfig) -> float:
    if config.pricing.usd_per_1m_chars is not None:
        return config.pricing.usd_per_1m_chars
    return _listed(TTS_USD_PER_1M_CHARS, config.tts_model) if is_openai(config) else 0.0


@dataclass(frozen=True)
class TranscriptionResult:
    text: str
    model: str
    duration_s: float  # what was billed: the vendor's duration when it said, else the audio's
    language: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)  # the ledger's cost event (iat.ledger.usage_of)
    http_status: int | None = None


@dataclass(frozen=True)
class SpeechResult:
    wav: bytes = field(repr=False)
    model: str
    voice: str
    usage: dict[str, Any] = field(default_factory=dict)
    http_status: int | None = None


class OpenAIAudioProvider(BaseProvider):
    code = CODE
    config_model = AudioConfig
    optional_secrets = ("api_key",)  # required on api.openai.com only: see status
    operations = ("transcribe", "speak")

    def __init__(self) -> None:
        self._clients = Clients(CODE)

    def status(self, account: Account) -> ProviderStatus:
        return key_status(CODE, account, super().status(account))

    def estimate(self, request: Any = None, account: Account | None = None) -> CostEstimate:
        return CostEstimate(units=0.0, cost_usd=0.0)  # see estimate_transcription / estimate_speech

    def estimate_transcription(self, account: Account, duration_s: float) -> CostEstimate:
        minutes = duration_s / 60.0
        return CostEstimate(units=minutes, cost_usd=round(minutes * usd_per_minute(account.config), 8))

    def estimate_speech(self, account: Account, text: str) -> CostEstimate:
        return CostEstimate(units=float(len(text)),
                            cost_usd=round(len(text) * usd_per_1m_chars(account.config) / 1e6, 8))

    def _secrets(self, account: Account) -> tuple[str, ...]:
        return tuple(v for v in account.secrets.values() if v)

    def _client(self, account: Account):
        return self._clients.get(account)

    def probe(self, account: Account, *, timeout: float) -> dict[str, Any]:
        """GET /models: free, and shows the endpoint answers and takes the key."""
        config: AudioConfig = account.config  # type: ignore[assignment]
        try:
            ids = [m.id for m in self._client(account).models.list(timeout=timeout).data]
        except (ValueError, UnicodeDecodeError):
            raise ProviderError(f"{CODE} answered /models with a body that is not JSON",
                                details={"provider": CODE}) from None
        except BaseException as exc:
            raise vendor_error(exc, self._secrets(account), provider=CODE, expected="a model list") from None
        return {"endpoint": config.endpoint or OPENAI_ENDPOINT, "stt_model": config.stt_model,
                "tts_model": config.tts_model, "stt_model_listed": config.stt_model in ids,
                "tts_model_listed": config.tts_model in ids, "models": ids[:20]}

    def transcribe(self, account: Account, wav: bytes, *, duration_s: float, language: str | None = None,
                   prompt: str | None = None, timeout: float | None = None,
                   cancel: threading.Event | None = None) -> TranscriptionResult:
        """One transcription request of a WAV file."""
        config: AudioConfig = account.config  # type: ignore[assignment]
        check_cancel(cancel)
        verbose = config.stt_model.startswith("whisper")
        request: dict[str, Any] = {"model": config.stt_model, "file": ("audio.wav", wav, "audio/wav"),
                                   "response_format": "verbose_json" if verbose else "json",
                                   "timeout": timeout if timeout is not None else config.timeout_s}
        if language:
            request["language"] = language
        if prompt:
            request["prompt"] = prompt[:MAX_PROMPT_CHARS]
        try:
            raw = self._client(account).audio.transcriptions.with_raw_response.create(**request)
            answer = raw.parse()
        except (ValueError, UnicodeDecodeError):
            raise ProviderError(f"{CODE} answered the transcription with a body that is not JSON",
                                details={"provider": CODE}) from None
        except BaseException as exc:
            raise vendor_error(exc, self._secrets(account), provider=CODE, expected="a transcription") from None
        text = getattr(answer, "text", None)
        if not isinstance(text, str):
            raise ProviderError(f"{CODE} answered the transcription without its text",
                                details={"provider": CODE, "http_status": raw.status_code})
        used = getattr(answer, "usage", None)
        billed, source = duration_s, "pricing"
        vendor_seconds = getattr(used, "seconds", None) if getattr(used, "type", None) == "duration" else None
        if vendor_seconds is None and verbose:
            vendor_seconds = getattr(answer, "duration", None)
        if isinstance(vendor_seconds, (int, float)) and math.isfinite(vendor_seconds) and vendor_seconds >= 0:
            billed, source = float(vendor_seconds), "vendor"
        usage: dict[str, Any] = {"units": round(billed / 60.0, 6),
                                 "cost_usd": round(billed / 60.0 * usd_per_minute(config), 8), "currency": "USD",
                                 "source": source, "unit": "minute", "audio_seconds": round(billed, 3),
                                 "model": config.stt_model}
        if getattr(used, "type", None) == "tokens":
            usage.update({"input_tokens": used.input_tokens, "output_tokens": used.output_tokens,
                          "total_tokens": used.total_tokens})
        return TranscriptionResult(text, config.stt_model, billed, getattr(answer, "language", None) or language,
                                   usage, raw.status_code)

    def speak(self, account: Account, text: str, *, voice: str | None = None, timeout: float | None = None,
              on_first_audio: Callable[[], None] | None = None,
              cancel: threading.Event | None = None) -> SpeechResult:
        """One speech request, streamed: WAV bytes, `on_first_audio` called on the first chunk."""
        config: AudioConfig = account.config  # type: ignore[assignment]
        check_cancel(cancel)
        voice = voice or config.voice
        chunks: list[bytes] = []
        status = None
        try:
            with self._client(account).audio.speech.with_streaming_response.create(
                    model=config.tts_model, voice=voice, input=text, response_format="wav",
                    timeout=timeout if timeout is not None else config.timeout_s) as response:
                status = response.status_code
                for chunk in response.iter_bytes():  # as they arrive: a fixed size would wait to fill it
                    check_cancel(cancel)
                    if chunk:
                        if not chunks and on_first_audio is not None:
                            on_first_audio()
                        chunks.append(chunk)
        except BaseException as exc:
            err = vendor_error(exc, self._secrets(account), provider=CODE, expected="speech audio")
            if isinstance(err, ProviderError) and status is not None:
                err.details.setdefault("http_status", status)
            raise err from None
        wav = b"".join(chunks)
        if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
            raise ProviderError(f"{CODE} answered the speech request with something that is not WAV audio",
                                details={"provider": CODE, "http_status": status})
        usage = {"units": float(len(text)), "cost_usd": round(len(text) * usd_per_1m_chars(config) / 1e6, 8),
                 "currency": "USD", "source": "pricing", "unit": "character", "model": config.tts_model}
        return SpeechResult(wav, config.tts_model, voice, usage, status)
