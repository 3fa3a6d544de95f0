"""Speech to text: one small interface, engines by code, built on first use.

An engine turns mono 16-bit PCM (`Audio`, already at `engine.sample_rate`: iat.voice.audio resamples) into a
`Transcript`. `grammar`, when given, restricts recognition to those phrases (short commands: the copilot's
vocabulary, iat.voice.vocabulary); an engine without a grammar mode ignores it and says so in the transcript's
meta. `on_partial` receives partial text while long audio is decoded (the service publishes it as
`voice.stt.partial` events). Paid engines go through the ledger (`app.ledger.call`) with their cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

import numpy as np

ENGINES: dict[str, str] = {
    "vosk": "iat.voice.vosk_engine:VoskEngine",
    "openai": "iat.voice.openai_audio:OpenAISpeechToText",
}


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # int16, mono
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate) if self.sample_rate else 0.0


@dataclass(frozen=True)
class Transcript:
    text: str
    confidence: float | None = None
    words: list[dict[str, Any]] = field(default_factory=list)  # {word, start, end, conf} when the engine gives them
    meta: dict[str, Any] = field(default_factory=dict)  # model, grammar used, partial count, usage/cost, ...


@runtime_checkable
class SpeechToText(Protocol):
    code: ClassVar[str]
    sample_rate: ClassVar[int]  # what transcribe() takes

    def transcribe(self, app, handle, audio: Audio, *, grammar: list[str] | None = None,
                   language: str | None = None, on_partial: Callable[[str], None] | None = None) -> Transcript:
        """Raises typed errors (iat.errors): a missing model or engine is `conflict` with what to install."""
        ...
