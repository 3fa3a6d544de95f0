"""Microphone capture through sounddevice (PortAudio): what push to talk records.

`record()` opens an int16 mono `sounddevice.InputStream` and appends blocks of ~50 ms to a list until `stop` is
set, `seconds` of audio were captured, or `max_seconds` (a guard on memory) is reached. The length is counted in
captured frames, not wall time: with a microphone both are the same, and a device that is not paced by a clock
(ALSA's `file` plugin over `null`, which the tests use as a microphone) still yields exactly `seconds` of audio.

PortAudio is loaded on first use: a machine without it (no libportaudio2) or without an input device gets
`DeviceUnavailable`, a `conflict` whose message says what is missing, never a traceback.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from iat.errors import Conflict
from iat.voice.stt import Audio

BLOCK_S = 0.05
MAX_SECONDS = 120.0  # one push to talk; 2 minutes of 16 kHz int16 is under 4 MB


class DeviceUnavailable(Conflict):
    """No PortAudio, no such device, or a device that cannot record/play as asked."""


def sounddevice():
    """The sounddevice module; DeviceUnavailable when PortAudio cannot be loaded."""
    try:
        import sounddevice as sd
    except OSError as exc:  # sounddevice raises OSError when it cannot load the PortAudio library
        raise DeviceUnavailable(f"no audio: PortAudio could not be loaded ({exc}); install libportaudio2 "
                                "(Debian/Ubuntu) or portaudio") from None
    return sd


def _device_arg(device: int | str | None) -> int | str | None:
    """A device given on the command line: a number is an index, anything else a name (or part of one)."""
    if isinstance(device, str) and device.strip().lstrip("-").isdigit():
        return int(device)
    return device


def device_info(device: int | str | None, kind: str) -> dict[str, Any]:
    """The PortAudio device `device` (index, name or part of a name; None: the default) for `kind` "input" or
    "output"; DeviceUnavailable naming what is wrong and the devices there are."""
    sd = sounddevice()
    try:
        info = sd.query_devices(_device_arg(device), kind) if device is not None else sd.query_devices(kind=kind)
    except (ValueError, sd.PortAudioError) as exc:
        found = devices(kind)
        if not found:
            message = f"no audio {kind} device on this machine (PortAudio lists none)"
        else:
            names = ", ".join(f"{d['index']}: {d['name']}" for d in found)
            what = f"no {kind} device {device!r}" if device is not None else f"no default {kind} device ({exc})"
            message = f"{what}; {kind} devices: {names}"
        raise DeviceUnavailable(message, details={"device": device, "kind": kind}) from None
    channels = info[f"max_{kind}_channels"]
    if channels < 1:
        raise DeviceUnavailable(f"device {info['name']!r} has no {kind} channels", details={"device": device})
    return dict(info)


def devices(kind: str = "input") -> list[dict[str, Any]]:
    """The devices that can record (kind "input") or play ("output"): index, name, channels, default rate."""
    sd = sounddevice()
    return [{"index": d["index"], "name": d["name"], "channels": d[f"max_{kind}_channels"],
             "default_samplerate": d["default_samplerate"]}
            for d in sd.query_devices() if d[f"max_{kind}_channels"] > 0]


def record(device: int | str | None = None, rate: int = 16000, stop: threading.Event | None = None, *,
           seconds: float | None = None, max_seconds: float = MAX_SECONDS) -> Audio:
    """Records mono int16 audio at `rate` from `device` until `stop` is set or `seconds` (else `max_seconds`) of
    audio were captured. DeviceUnavailable when the device cannot be opened."""
    sd = sounddevice()
    info = device_info(device, "input")
    limit = int(rate * min(seconds if seconds is not None else max_seconds, max_seconds))
    blocks: list[np.ndarray] = []
    got = 0
    full = threading.Event()
    trouble: list[str] = []

    def on_block(indata, frames, _time, status) -> None:
        nonlocal got
        if status.input_overflow:
            trouble.append("input overflow")
        if full.is_set():
            return
        take = min(frames, limit - got)
        blocks.append(indata[:take, 0].copy())
        got += take
        if got >= limit:
            full.set()
            raise sd.CallbackStop

    try:
        stream = sd.InputStream(device=info["index"], samplerate=rate, channels=1, dtype="int16",
                                blocksize=max(1, int(rate * BLOCK_S)), callback=on_block)
    except (ValueError, sd.PortAudioError) as exc:
        raise DeviceUnavailable(f"cannot record from {info['name']!r} at {rate} Hz mono: {exc}",
                                details={"device": info["name"], "rate": rate}) from None
    with stream:
        while not full.wait(0.02):
            if stop is not None and stop.is_set():
                break
            if not stream.active:  # the device went away
                break
    samples = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int16)
    return Audio(samples=samples.astype(np.int16, copy=False), sample_rate=rate)


def level(audio: Audio) -> float:
    """Peak level in 0..1 (0: silence), to tell a user that nothing was heard."""
    return float(np.abs(audio.samples.astype(np.int32)).max()) / 32768.0 if len(audio.samples) else 0.0
