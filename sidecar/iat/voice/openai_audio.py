"""`openai` speech engines: transcription and speech through the project's `openai_audio` provider account
(iat.providers.openai_audio), every call through the ledger (attempts, retries, cost: `voice.stt` priced per
minute of audio, `voice.tts` per character).

The audio is sent as 16 kHz mono 16-bit WAV (what speech models work at; a third of a 48 kHz file's bytes). There
is no grammar mode: given phrases go as the transcription's `prompt` (vocabulary hints, not a restriction), and the
transcript's meta says so. The speech endpoint speaks the text's own language, so `language` is not sent.
"""

from __future__ import annotations

from typing import Callable, ClassVar

from iat.errors import Conflict
from iat.ledger.ledger import usage_of
from iat.providers import accounts
from iat.voice import audio
from iat.voice.stt import Audio, Transcript
from iat.voice.tts import Speech

PROVIDER = "openai_audio"


def ready_account(app, handle):
    """The project's openai_audio account, secrets decrypted; conflict saying how to set it up when not ready."""
    provider = accounts.provider_of(app, PROVIDER)
    status = provider.status(accounts.account(app, handle, PROVIDER, reveal=False))
    if not status.ready:
        raise Conflict(f"the openai voice engine is not ready: {status.reason}",
                       details={"provider_code": PROVIDER, "reason": status.reason})
    return provider, accounts.account(app, handle, PROVIDER)


class OpenAISpeechToText:
    code: ClassVar[str] = "openai"
    provider_code: ClassVar[str] = PROVIDER
    sample_rate: ClassVar[int] = 16000

    def transcribe(self, app, handle, audio_in: Audio, *, grammar: list[str] | None = None,
                   language: str | None = None, on_partial: Callable[[str], None] | None = None) -> Transcript:
        provider, account = ready_account(app, handle)
        wav = audio.encode_wav(audio.to_rate(audio_in, self.sample_rate))
        prompt = ", ".join(grammar) if grammar else None
        estimate = provider.estimate_transcription(account, audio_in.duration_s)
        result = app.ledger.call(
            handle, account, "voice.stt",
            lambda attempt: provider.transcribe(account, wav, duration_s=audio_in.duration_s, language=language,
                                                prompt=prompt, timeout=attempt.timeout, cancel=attempt.cancel),
            billable=True, usage=usage_of, estimate_usd=estimate.cost_usd,
            meta={"model": account.config.stt_model, "duration_s": round(audio_in.duration_s, 3)})
        meta = {"model": result.model, "provider_code": PROVIDER, "language": result.language,
                "cost_usd": result.usage.get("cost_usd"), "billed_seconds": round(result.duration_s, 3)}
        if grammar:
            meta["grammar"] = "prompt"  # no grammar mode: the phrases were hints only
        return Transcript(result.text.strip(), None, [], meta)


class OpenAITextToSpeech:
    code: ClassVar[str] = "openai"
    provider_code: ClassVar[str] = PROVIDER

    def synthesize(self, app, handle, text: str, *, voice: str | None = None, language: str | None = None,
                   on_first_audio: Callable[[], None] | None = None) -> Speech:
        provider, account = ready_account(app, handle)
        result = app.ledger.call(
            handle, account, "voice.tts",
            lambda attempt: provider.speak(account, text, voice=voice, timeout=attempt.timeout,
                                           on_first_audio=on_first_audio, cancel=attempt.cancel),
            billable=True, usage=usage_of, estimate_usd=provider.estimate_speech(account, text).cost_usd,
            meta={"model": account.config.tts_model, "characters": len(text)})
        decoded, _ = audio.decode(audio.fix_wav_lengths(result.wav))
        return Speech(audio.encode_wav(decoded), decoded.sample_rate, round(decoded.duration_s, 3),
                      {"model": result.model, "voice": result.voice, "provider_code": PROVIDER,
                       "cost_usd": result.usage.get("cost_usd")})
