"""Playing speech (a WAV from voice.tts) on an output device through sounddevice (PortAudio).

`play()` blocks until the sound has been handed to the device. No PortAudio, no output device, or a device that
refuses the sound is `DeviceUnavailable` (a `conflict` with a one-line message): the terminal chat shows it and
goes on in text.
"""

from __future__ import annotations

import io
import wave

import numpy as np

from iat.errors import InvalidParams
from iat.voice.capture import DeviceUnavailable, device_info, sounddevice
from iat.voice.stt import Audio


def read_wav(data: bytes) -> Audio:
    """A WAV's samples, mixed down to mono int16."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise InvalidParams(f"not a PCM WAV file: {exc}") from None
    if width != 2:
        raise InvalidParams(f"a {8 * width}-bit WAV: speech is played as 16-bit PCM")
    samples = np.frombuffer(raw[:len(raw) // (2 * channels) * 2 * channels], dtype="<i2").reshape(-1, channels)
    mono = samples.mean(axis=1).astype(np.int16) if channels > 1 else samples[:, 0].copy()
    return Audio(samples=mono, sample_rate=rate)


def play(wav: bytes, device: int | str | None = None) -> float:
    """Plays `wav` on `device` (index, name or part of one; None: the default output) and returns its duration
    in seconds. A device that does not take the WAV's rate gets it resampled to its own default rate."""
    audio = read_wav(wav)
    sd = sounddevice()
    info = device_info(device, "output")
    try:
        sd.check_output_settings(device=info["index"], samplerate=audio.sample_rate, channels=1, dtype="int16")
    except (ValueError, sd.PortAudioError):
        from iat.voice.audio import to_rate  # soxr: only when the device needs another rate

        audio = to_rate(audio, int(info["default_samplerate"]))
    try:
        sd.play(audio.samples, audio.sample_rate, device=info["index"], blocking=True)
    except (ValueError, sd.PortAudioError) as exc:
        raise DeviceUnavailable(f"cannot play on {info['name']!r}: {exc}", details={"device": info["name"]}) from None
    return audio.duration_s
