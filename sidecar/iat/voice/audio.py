"""Audio in and out of the voice engines: WAV, FLAC and OGG (Vorbis or Opus) decoded through libsndfile
(soundfile), mono 16-bit PCM resampled with soxr, and WAV written with the standard library.

`probe` reads only the container's header: the format (told by its first bytes, not by a name), channels, rate and
length, so the limits (bytes, duration) refuse a file before anything is decoded or stored. `decode` then reads the
samples and mixes the channels down to mono (`Audio` is mono int16 at the file's own rate); `to_rate` brings it to
the rate an engine takes (`SpeechToText.sample_rate`). Anything that is not one of the three formats, or a file
libsndfile cannot read, is invalid_params naming what it is.
"""

from __future__ import annotations

import io
import wave

import numpy as np

from iat.errors import InvalidParams, PayloadTooLarge
from iat.voice.stt import Audio

MAX_BYTES = 20 * 1024 * 1024  # one request's audio file
MAX_DURATION_S = 600.0  # ten minutes: push-to-talk commands are seconds long; longer audio is a mistake or abuse
MIN_RATE, MAX_RATE = 1000, 384_000
# The container formats accepted, by what libsndfile calls them, with their MIME types.
MIME_TYPES = {"WAV": "audio/wav", "FLAC": "audio/flac", "OGG": "audio/ogg"}


def sniff_format(data: bytes) -> str | None:
    """WAV, FLAC or OGG from the first bytes; None for anything else."""
    if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        return "WAV"
    if data[:4] == b"fLaC":
        return "FLAC"
    if data[:4] == b"OggS":
        return "OGG"
    return None


def _describe(data: bytes) -> str:
    """What a refused file looks like, for the error message."""
    from iat.assets.sniff import ContentMismatch, sniff

    try:
        found = sniff(data[:4096]).mime_type
    except ContentMismatch as exc:  # a broken image header: what it starts like is enough to say
        found = exc.actual
    return "unrecognised binary data" if found == "application/octet-stream" else found


def probe(data: bytes) -> dict:
    """{format, mime_type, subtype, channels, sample_rate, frames, duration_s} from the header; the limits and the
    format checked. Raises invalid_params (payload_too_large over MAX_BYTES)."""
    import soundfile

    if len(data) > MAX_BYTES:
        raise PayloadTooLarge(f"the audio is {len(data)} bytes; at most {MAX_BYTES} are taken",
                              details={"size_bytes": len(data), "max_bytes": MAX_BYTES})
    fmt = sniff_format(data)
    if fmt is None:
        found = _describe(data)
        raise InvalidParams(f"unsupported audio format ({found}): send WAV, FLAC or OGG (Vorbis or Opus)",
                            details={"format": found, "supported": sorted(MIME_TYPES)})
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            info = {"format": f.format, "subtype": f.subtype, "channels": f.channels, "sample_rate": f.samplerate,
                    "frames": f.frames}
    except (RuntimeError, ValueError, TypeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        raise InvalidParams(f"the {fmt} audio cannot be read: {exc}", details={"format": fmt}) from None
    if info["format"] != fmt:  # e.g. RIFF/WAVE magic in front of something libsndfile reads as another container
        raise InvalidParams(f"the audio claims {fmt} but reads as {info['format']}", details={"format": fmt})
    if not MIN_RATE <= info["sample_rate"] <= MAX_RATE or info["channels"] < 1:
        raise InvalidParams(f"the {fmt} audio has an implausible header ({info['channels']} channel(s) at "
                            f"{info['sample_rate']} Hz)", details={"format": fmt})
    if info["frames"] <= 0:
        raise InvalidParams(f"the {fmt} audio holds no samples", details={"format": fmt})
    duration = info["frames"] / info["sample_rate"]
    if duration > MAX_DURATION_S:
        raise InvalidParams(f"the audio lasts {duration:.1f} s; at most {MAX_DURATION_S:g} s are taken",
                            details={"format": fmt, "duration_s": round(duration, 3), "max_duration_s": MAX_DURATION_S})
    return {**info, "mime_type": MIME_TYPES[fmt], "duration_s": round(duration, 3)}


def decode(data: bytes) -> tuple[Audio, dict]:
    """The audio as mono int16 at its own rate, and its probe info (format, channels, sample_rate, duration_s...)."""
    import soundfile

    info = probe(data)
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise InvalidParams(f"the {info['format']} audio cannot be decoded: {exc}",
                            details={"format": info["format"]}) from None
    if samples.size == 0:
        raise InvalidParams(f"the {info['format']} audio holds no samples", details={"format": info["format"]})
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return Audio(_to_int16(mono), int(rate)), info


def _to_int16(samples: np.ndarray) -> np.ndarray:
    # libsndfile reads 16-bit PCM as v / 32768: the same scale back gives the same samples.
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def to_rate(audio: Audio, rate: int) -> Audio:
    """Mono int16 at `rate` (soxr's high quality resampler); the same Audio when it is there already."""
    samples = np.asarray(audio.samples)
    if samples.ndim > 1:
        samples = samples.mean(axis=1).astype(np.int16)
    if samples.dtype != np.int16:
        samples = _to_int16(samples.astype(np.float32)) if samples.dtype.kind == "f" else samples.astype(np.int16)
    if audio.sample_rate == rate:
        return Audio(samples, rate)
    import soxr

    return Audio(soxr.resample(samples, audio.sample_rate, rate, quality="HQ").astype(np.int16, copy=False), rate)


def fix_wav_lengths(data: bytes) -> bytes:
    """A streamed WAV (its sizes written before its length was known: 0 or 0xFFFFFFFF, as OpenAI's speech stream
    sends them) with its RIFF and data chunk sizes set to what the bytes hold; any other file unchanged."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if cid == b"data":
            held = len(data) - pos - 8
            if size == held and int.from_bytes(data[4:8], "little") == len(data) - 8:
                return data
            held -= held % 2  # whole 16-bit samples only (a cut stream)
            return (data[:4] + (pos + held).to_bytes(4, "little") + data[8:pos + 4] + held.to_bytes(4, "little")
                    + data[pos + 8:pos + 8 + held])
        pos += 8 + size + (size & 1)
    return data


def encode_wav(audio: Audio) -> bytes:
    """A 16-bit mono PCM WAV file (the same samples always give the same bytes)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(audio.sample_rate))
        w.writeframes(np.asarray(audio.samples, dtype="<i2").tobytes())
    return buf.getvalue()


def rms_dbfs(audio: Audio) -> float:
    """Loudness of the whole clip in dB below full scale (-inf for digital silence): what tells speech from none."""
    samples = np.asarray(audio.samples, dtype=np.float64) / 32768.0
    rms = float(np.sqrt(np.mean(samples ** 2))) if samples.size else 0.0
    return 20 * np.log10(rms) if rms > 0 else float("-inf")
