"""Text to speech: one small interface, engines by code, built on first use.

An engine turns text into WAV bytes (`Speech`). `local` speaks through pyttsx3, which uses each OS's own voices
(SAPI5 on Windows, NSSpeechSynthesizer on macOS, eSpeak NG on Linux); `openai` calls the speech endpoint through
the openai SDK and the ledger. `on_first_audio` is called once, when the first audio is available (time to first
audio is what the benchmark measures).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

ENGINES: dict[str, str] = {
    "local": "iat.voice.local_tts:LocalSpeech",
    "openai": "iat.voice.openai_audio:OpenAITextToSpeech",
}


@dataclass(frozen=True)
class Speech:
    wav: bytes = field(repr=False)  # a complete WAV file
    sample_rate: int = 0
    duration_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)  # voice, model, usage/cost, ...


@runtime_checkable
class TextToSpeech(Protocol):
    code: ClassVar[str]

    def synthesize(self, app, handle, text: str, *, voice: str | None = None, language: str | None = None,
                   on_first_audio: Callable[[], None] | None = None) -> Speech:
        """Raises typed errors (iat.errors): no speech engine on this machine is `conflict` saying what to
        install."""
        ...
