"""The local speech engine: real eSpeak NG speech through pyttsx3 (the Debian packages espeak-ng and libespeak-ng1,
scripts/apt-packages.txt), and the audio module that normalises it (decode, resample, WAV)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import soundfile

from iat.errors import Conflict, InvalidParams
from iat.voice import audio, local_tts
from iat.voice.local_tts import LocalSpeech
from iat.voice.stt import Audio
from support import missing_real_part


@pytest.fixture(scope="module")
def engine() -> LocalSpeech:
    try:
        local_tts.voices()
    except Conflict as exc:
        missing_real_part(f"a local speech engine (eSpeak NG): {exc.message}")
    return LocalSpeech()


def speak(engine: LocalSpeech, text: str, **kw) -> tuple[np.ndarray, int, dict]:
    fired: list[bool] = []
    speech = engine.synthesize(None, None, text, on_first_audio=lambda: fired.append(True), **kw)
    samples, rate = soundfile.read(io.BytesIO(speech.wav), dtype="int16")
    assert fired == [True] and rate == speech.sample_rate and samples.ndim == 1
    assert len(samples) / rate == pytest.approx(speech.duration_s, abs=0.01)
    return samples, rate, speech.meta


def voiced_seconds(samples: np.ndarray, rate: int) -> float:
    """How long the clip is loud (20 ms frames above -40 dBFS): speech, not silence or a click."""
    frame = rate // 50
    frames = samples[:len(samples) // frame * frame].astype(np.float64).reshape(-1, frame) / 32768.0
    return float((np.sqrt((frames ** 2).mean(axis=1)) > 0.01).sum()) / 50


def test_espeak_speaks_english_and_longer_text_takes_longer(engine):
    short, rate, meta = speak(engine, "Export the project.", language="en")
    long, _, _ = speak(engine, "Export the project as a zip file, then render shots one, two and three at dusk "
                               "in the rain.", language="en")
    assert meta["voice"] == "gmw/en" and meta["model"] == "pyttsx3:espeak"
    assert 0.6 < len(short) / rate < 4.0  # three words at eSpeak's 200 words per minute
    assert voiced_seconds(short, rate) > 0.4
    assert len(long) > 2.5 * len(short) and voiced_seconds(long, rate) > 2.5 * voiced_seconds(short, rate)


def test_a_korean_voice_speaks_korean(engine):
    samples, rate, meta = speak(engine, "프로젝트를 압축 파일로 내보내", language="ko")
    assert meta["voice"] == "ko" and meta["voice_name"] == "Korean"
    assert voiced_seconds(samples, rate) > 0.8
    by_name, _, named = speak(engine, "하나 둘 셋", voice="Korean")
    assert named["voice"] == "ko" and voiced_seconds(by_name, rate) > 0.5


def test_voices_by_id_name_and_language_and_what_is_missing():
    voices = [{"id": "gmw/en", "name": "English (Great Britain)", "languages": ["en-gb"]},
              {"id": "gmw/en-us", "name": "English (America)", "languages": ["en-us"]},
              {"id": "ko", "name": "Korean", "languages": ["ko"]}]
    assert local_tts.pick_voice(voices, None, None) is None
    assert local_tts.pick_voice(voices, "GMW/EN-US", None)["id"] == "gmw/en-us"
    assert local_tts.pick_voice(voices, "korean", "en")["id"] == "ko"  # a named voice wins over the language
    assert local_tts.pick_voice(voices, None, "en")["id"] == "gmw/en"
    assert local_tts.pick_voice(voices, None, "en-US")["id"] == "gmw/en-us"
    assert local_tts.pick_voice(voices, None, "ko")["id"] == "ko"
    with pytest.raises(Conflict, match="espeak-ng"):
        local_tts.pick_voice(voices, None, "sw")
    with pytest.raises(Conflict, match="espeak-ng"):
        local_tts.pick_voice(voices, "nobody", None)


# --- the audio module ---


def sweep(seconds: float, rate: int, channels: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    left = 0.5 * np.sin(2 * math.pi * 440 * t)
    return np.stack([left, 0.25 * np.sin(2 * math.pi * 660 * t)], axis=1)[:, :channels] if channels > 1 else left


@pytest.mark.parametrize("fmt,subtype,rate,channels", [
    ("WAV", "PCM_16", 44100, 2), ("WAV", "PCM_24", 8000, 1), ("WAV", "FLOAT", 22050, 1),
    ("FLAC", "PCM_16", 48000, 2), ("OGG", "VORBIS", 44100, 1), ("OGG", "OPUS", 48000, 2)])
def test_decode_and_resample_each_format(fmt, subtype, rate, channels):
    data = io.BytesIO()
    soundfile.write(data, sweep(1.25, rate, channels), rate, format=fmt, subtype=subtype)
    decoded, info = audio.decode(data.getvalue())
    assert (info["format"], info["channels"], info["sample_rate"]) == (fmt, channels, rate)
    assert info["mime_type"] == {"WAV": "audio/wav", "FLAC": "audio/flac", "OGG": "audio/ogg"}[fmt]
    assert decoded.sample_rate == rate and decoded.samples.dtype == np.int16 and decoded.samples.ndim == 1
    assert decoded.duration_s == pytest.approx(1.25, abs=0.03)
    resampled = audio.to_rate(decoded, 16000)
    assert resampled.sample_rate == 16000 and resampled.samples.dtype == np.int16
    assert len(resampled.samples) == pytest.approx(1.25 * 16000, abs=0.03 * 16000)
    # The 440 Hz tone survives (the mono mix of stereo holds the 660 Hz one too): its peak in the spectrum.
    spectrum = np.abs(np.fft.rfft(resampled.samples.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(resampled.samples), 1 / 16000)
    assert abs(freqs[int(np.argmax(spectrum))] - 440) < 5
    again, _ = audio.decode(audio.encode_wav(resampled))
    assert np.array_equal(again.samples, resampled.samples) and again.sample_rate == 16000


def test_limits_and_refusals():
    with pytest.raises(InvalidParams, match="lasts"):
        buf = io.BytesIO()
        soundfile.write(buf, np.zeros(8000 * 601, dtype=np.int16), 8000, format="WAV", subtype="PCM_16")
        audio.probe(buf.getvalue())
    with pytest.raises(InvalidParams, match="no samples"):
        buf = io.BytesIO()
        soundfile.write(buf, np.zeros(0, dtype=np.int16), 16000, format="WAV", subtype="PCM_16")
        audio.probe(buf.getvalue())
    with pytest.raises(InvalidParams, match="unsupported audio format"):
        audio.probe(b"fake mp3 \x00\x01")
    with pytest.raises(InvalidParams, match="OGG audio cannot be read"):
        audio.probe(b"OggS" + b"\x00" * 200)


def test_a_streamed_wav_gets_its_sizes():
    pcm = (np.arange(1000, dtype=np.int16) * 7).astype("<i2").tobytes()
    header = audio.encode_wav(Audio(np.zeros(0, np.int16), 24000))  # 44 bytes: RIFF, fmt and an empty data
    streamed = header[:4] + b"\xff\xff\xff\xff" + header[8:40] + b"\xff\xff\xff\xff" + pcm + b"\x01"  # a cut sample
    fixed = audio.fix_wav_lengths(streamed)
    decoded, info = audio.decode(fixed)
    assert info["frames"] == 1000 and np.array_equal(decoded.samples, np.frombuffer(pcm, "<i2"))
    assert audio.fix_wav_lengths(fixed) == fixed
