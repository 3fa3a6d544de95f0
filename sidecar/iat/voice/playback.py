"""Playing speech (a WAV from voice.tts) on an output device through sounddevice (PortAudio).

`play()` decodes the sound (iat.voice.audio) and blocks until it has been handed to the device. No PortAudio, no
output device, or a device that refuses the sound is `DeviceUnavailable` (a `conflict` with a one-line message):
the terminal chat shows it and goes on in text.
"""

from __future__ import annotations

from iat.voice import audio as audio_files
from iat.voice.capture import DeviceUnavailable, device_info, sounddevice


def play(data: bytes, device: int | str | None = None) -> float:
    """Plays `data` (WAV, FLAC or OGG: what voice.tts stores is a 16-bit mono WAV) on `device` (index, name or part
    of one; None: the default output) and returns its duration in seconds. A device that does not take the sound's
    rate gets it resampled to its own default rate."""
    audio, _ = audio_files.decode(data)
    sd = sounddevice()
    info = device_info(device, "output")
    try:
        sd.check_output_settings(device=info["index"], samplerate=audio.sample_rate, channels=1, dtype="int16")
    except (ValueError, sd.PortAudioError):
        audio = audio_files.to_rate(audio, int(info["default_samplerate"]))
    try:
        sd.play(audio.samples, audio.sample_rate, device=info["index"], blocking=True)
    except (ValueError, sd.PortAudioError) as exc:
        raise DeviceUnavailable(f"cannot play on {info['name']!r}: {exc}", details={"device": info["name"]}) from None
    return audio.duration_s
