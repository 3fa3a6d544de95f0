"""Push to talk (`iat-sidecar chat --voice`) with real parts: speech made by eSpeak NG through pyttsx3 is fed to
PortAudio (sounddevice) from an ALSA `file` device standing in for a microphone (tests/voice/alsa/asoundrc.in,
written as ~/.asoundrc of a temporary HOME for the subprocess), recognised by vosk with the Korean test model in
grammar mode through voice.stt, answered by the copilot, and the answer spoken back through voice.tts to an ALSA
file device standing in for a speaker. What the chat did is checked afterwards through an App on the same home."""

from __future__ import annotations

import os
import re
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from iat.app import App
from iat.settings import Settings

from support import Client
from tests.voice.conftest import install_vosk_model

BIN = Path(sys.executable).with_name("iat-sidecar")
ASOUNDRC = Path(__file__).with_name("alsa") / "asoundrc.in"
TIMEOUT_S = 240  # a loaded 2-core machine: start-up, the vosk model's load, a turn and speech, never slept on
RATE = 16000  # what push to talk records; the test microphone's file is written at this rate (see asoundrc.in)
PAD_S = 8  # silence after the speech: longer than any recording here, so the file never runs out


@pytest.fixture
def speech(speak_ko):
    """speech(text) -> int16 mono samples at RATE of `text` spoken by eSpeak NG's Korean voice through pyttsx3
    (at its own 22050 Hz, resampled)."""
    from iat.voice import audio

    def make(text: str) -> np.ndarray:
        decoded, _ = audio.decode(speak_ko(text))
        return audio.to_rate(decoded, RATE).samples

    return make


def sound_home(tmp_path: Path, samples: np.ndarray, pad_s: float = PAD_S) -> tuple[Path, Path]:
    """A HOME whose ~/.asoundrc defines iat_test_mic (reading `samples`) and iat_test_speaker; (home, the file
    the speaker writes)."""
    home = tmp_path / "user"
    home.mkdir()
    infile, outfile = tmp_path / "mic.raw", tmp_path / "speaker.raw"
    padded = np.concatenate([np.asarray(samples, dtype=np.int16), np.zeros(int(RATE * pad_s), np.int16)])
    infile.write_bytes(padded.astype("<i2").tobytes())
    text = ASOUNDRC.read_text().replace("@INFILE@", str(infile)).replace("@OUTFILE@", str(outfile))
    (home / ".asoundrc").write_text(text.replace("@RATE@", str(RATE)))
    return home, outfile


def env_for(iat_home: Path, user_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IAT_", "ALSA_"))}
    env.update(IAT_HOME=str(iat_home), HOME=str(user_home))
    return env


def with_app(home: Path, fn):
    app = App(Settings.from_env({}, home=home))
    try:
        return fn(app, Client(app))
    finally:
        app.close()


@pytest.fixture
def iat_home(tmp_path: Path, vosk_model_dir: Path) -> Path:
    """A data home with the Korean vosk model in its models folder and project alpha named 서울 ("Seoul": the
    project's name is part of the grammar voice.stt holds vosk to)."""
    home = tmp_path / "iat"
    def setup(app, c: Client) -> None:
        install_vosk_model(app, vosk_model_dir)
        c.call("projects.create", slug="alpha", name="서울")

    with_app(home, setup)
    return home


def chat(iat_home: Path, user_home: Path, lines: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "chat", "--project", "alpha", "--voice", *args],
                          input="".join(f"{x}\n" for x in lines), capture_output=True, text=True,
                          env=env_for(iat_home, user_home), timeout=TIMEOUT_S)


def test_portaudio_records_speech_from_the_alsa_file_device(tmp_path: Path, speech):
    said = speech("서울")
    user_home, outfile = sound_home(tmp_path, said)
    code = (
        "import json, sys, numpy as np, sounddevice\n"
        "from iat.voice import audio, capture, playback\n"
        "names = [d['name'] for d in sounddevice.query_devices()]\n"
        "rec = capture.record('iat_test_mic', rate=16000, seconds=2.0)\n"
        "np.save(sys.argv[1], rec.samples)\n"
        "played = playback.play(audio.encode_wav(rec), 'iat_test_speaker')\n"
        "print(json.dumps({'names': names, 'rate': rec.sample_rate, 'played': played}))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "rec.npy")], capture_output=True, text=True,
                         env=env_for(tmp_path / "unused", user_home), timeout=TIMEOUT_S)
    assert out.returncode == 0, out.stderr

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"iat_test_mic", "iat_test_speaker"} <= set(got["names"])
    recorded = np.load(tmp_path / "rec.npy")
    # Exactly the asked length, and the microphone's samples as they were written: the speech, then silence.
    assert got["rate"] == RATE and len(recorded) == 2 * RATE
    assert np.array_equal(recorded[:len(said)], said) and not recorded[len(said):].any()
    assert np.abs(said.astype(np.int32)).max() > 5000  # and that is speech, not silence
    # Played back: the speaker's file holds it, after the silence PortAudio primes an output with.
    played = np.frombuffer(outfile.read_bytes(), dtype="<i2")
    lead = int(np.flatnonzero(played)[0] - np.flatnonzero(said)[0])
    assert got["played"] == pytest.approx(2.0) and lead >= 0
    assert np.array_equal(played[lead:lead + len(said)], said)


def test_push_to_talk_hears_speech_answers_and_speaks(tmp_path: Path, iat_home: Path, speech):
    user_home, outfile = sound_home(tmp_path, np.concatenate([np.zeros(RATE // 4, np.int16), speech("서울")]))
    out = chat(iat_home, user_home, ["/talk 2.5", "export the project as a zip", "/quit"],
               "--input-device", "iat_test_mic", "--output-device", "iat_test_speaker", "--stt-engine", "vosk",
               "--grammar", "--tts-engine", "local")
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "Traceback" not in text + out.stderr
    assert "recording 2.5 s..." in text and "recorded 2.5 s" in text
    assert "you said: 서울" in text, text
    lines = text.splitlines()
    heard = lines.index("you said: 서울")
    assert lines[heard + 1].startswith("copilot: ") and len(lines[heard + 1]) > len("copilot: ")
    assert "error:" not in text, text
    # The typed line after it is still a chat turn (voice mode keeps typing).
    assert sum(line.startswith("copilot: ") for line in lines) == 2

    def check(app, c: Client):
        from iat.db.models import VoiceRequest

        [session] = c.call("chat.sessions.list", slug="alpha")["items"]
        messages = c.call("chat.messages.list", slug="alpha", session_id=session["id"], limit=50)["items"]
        handle = app.projects.open("alpha")
        rows = handle.store.read(lambda pid: list(
            VoiceRequest.select().where(VoiceRequest.project_id == pid).order_by(VoiceRequest.created_at).dicts()),
            handle.id)
        return session, messages, rows

    session, messages, rows = with_app(iat_home, check)
    spoken = [m for m in messages if m["role"] == "user" and m.get("voice_asset_id")]
    assert [m["content_text"] for m in spoken] == ["서울"]
    stt = [r for r in rows if r["direction"] == "stt"]
    tts = [r for r in rows if r["direction"] == "tts"]
    assert len(stt) == 1 and stt[0]["status"] == "done" and stt[0]["provider_code"] == "vosk"
    assert stt[0]["input_asset_id"] == spoken[0]["voice_asset_id"] and stt[0]["message_id"] == spoken[0]["id"]
    assert stt[0]["latency_ms"] is not None and stt[0]["meta_json"]["text"] == "서울"
    # Both answers spoken: a done tts request per assistant message, each linked, and the speaker got audio.
    answers = [m for m in messages if m["role"] == "assistant"]
    assert len(tts) == 2 and all(r["status"] == "done" and r["output_asset_id"] for r in tts)
    assert {r["output_asset_id"] for r in tts} == {m["voice_asset_id"] for m in answers}
    played = np.frombuffer(outfile.read_bytes(), dtype="<i2")
    assert len(played) > RATE // 2 and np.abs(played).max() > 1000


def test_no_speak_prints_the_answer_only(tmp_path: Path, iat_home: Path, speech):
    user_home, outfile = sound_home(tmp_path, speech("서울"))
    out = chat(iat_home, user_home, ["/talk 2"], "--input-device", "iat_test_mic", "--no-speak", "--grammar")
    assert out.returncode == 0, out.stderr
    assert "you said: 서울" in out.stdout and "copilot: " in out.stdout
    assert not outfile.exists()
    rows = with_app(iat_home, lambda app, c: [r for r in _requests(app) if r["direction"] == "tts"])
    assert rows == []


def _requests(app) -> list[dict]:
    from iat.db.models import VoiceRequest

    handle = app.projects.open("alpha")
    return handle.store.read(lambda pid: list(VoiceRequest.select().where(VoiceRequest.project_id == pid).dicts()),
                             handle.id)


def test_silence_is_heard_as_nothing_and_makes_no_message(tmp_path: Path, iat_home: Path):
    # "/talk" records until the next line; the test microphone is not paced by a clock, so by then it has given
    # up to the most one recording takes (capture.MAX_SECONDS; less on a loaded machine): its file holds that much
    # silence.
    import re

    from iat.voice.capture import MAX_SECONDS

    user_home, _ = sound_home(tmp_path, np.zeros(RATE, np.int16), pad_s=MAX_SECONDS + 1)
    out = chat(iat_home, user_home, ["/talk", "stop", "/talk 1", "/talk"], "--input-device", "iat_test_mic",
               "--no-speak")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines.count("recording... (the next line stops it)") == 2
    lengths = [float(m.group(1)) for line in lines if (m := re.fullmatch(r"recorded (\d+\.\d) s", line))]
    assert lengths[0] > 0 and lengths[0] <= MAX_SECONDS and lengths[1:] == [1.0], out.stdout
    assert sum(line.startswith("you said: (nothing: ") for line in lines) == 2, out.stdout
    assert lines[-2:] == ["recording dropped", "bye"]  # the end of input while recording drops it
    assert "copilot:" not in out.stdout, out.stdout
    messages = with_app(iat_home, lambda app, c: c.call("chat.messages.list", slug="alpha", session_id=c.call(
        "chat.sessions.list", slug="alpha")["items"][0]["id"])["items"])
    assert messages == []


def test_a_named_device_that_does_not_exist_ends_with_code_2(tmp_path: Path, iat_home: Path):
    user_home, _ = sound_home(tmp_path, np.zeros(RATE, np.int16))
    for flag in ("--input-device", "--output-device"):
        out = chat(iat_home, user_home, ["hello"], flag, "no_such_device")
        assert out.returncode == 2 and out.stdout == ""
        kind = "input" if flag == "--input-device" else "output"
        assert f"error: conflict: no {kind} device 'no_such_device'" in out.stderr
        assert "iat_test_mic" in out.stderr and "Traceback" not in out.stderr  # the devices there are, listed


def test_no_input_device_is_one_line_and_the_chat_goes_on_typed(tmp_path: Path, iat_home: Path):
    # A HOME without .asoundrc: PortAudio lists the machine's own devices only, which a CI container has none of.
    user_home = tmp_path / "bare"
    user_home.mkdir()
    probe = subprocess.run([sys.executable, "-c", "import sounddevice; print(len(sounddevice.query_devices()))"],
                           capture_output=True, text=True, env=env_for(iat_home, user_home), timeout=TIMEOUT_S)
    if probe.returncode == 0 and probe.stdout.strip() != "0":
        pytest.skip("this machine has sound devices of its own")
    out = chat(iat_home, user_home, ["/talk 1", "hello"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "voice: no audio input device on this machine (PortAudio lists none); type your requests" in lines
    assert "voice: no audio output device on this machine (PortAudio lists none); answers are printed, not spoken" \
        in lines
    assert "error: conflict: no recording: no audio input device on this machine (PortAudio lists none)" in lines
    assert any(line.startswith("copilot: ") for line in lines)  # the typed line was answered
    assert "Traceback" not in out.stdout + out.stderr


def test_push_to_talk_through_the_openai_engines(tmp_path: Path, iat_home: Path, speech):
    """The paid engines against the loopback audio API: what the microphone recorded is what was uploaded, the
    scripted English request becomes the copilot's export proposal, and the answer's speech is played."""
    from vendors.loopback import LoopbackServer
    from vendors.openai_audio import AudioState, make_app

    said = speech("서울")
    user_home, outfile = sound_home(tmp_path, said)
    state = AudioState()
    state.say("export the project as a zip")
    with LoopbackServer(make_app(state)) as server:
        with_app(iat_home, lambda app, c: c.call("providers.configure", slug="alpha", provider_code="openai_audio",
                                                 config={"endpoint": server.url + "/v1", "timeout_s": 30}))
        out = chat(iat_home, user_home, ["/talk 2"], "--input-device", "iat_test_mic", "--output-device",
                   "iat_test_speaker", "--stt-engine", "openai", "--tts-engine", "openai", "--language", "en")
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "you said: export the project as a zip" in text and "error:" not in text, text
    assert re.search(r"^  \[[0-9a-f]{8}\] custom: Export the project", text, re.M), text
    [upload, spoken] = state.received
    assert upload["path"] == "/v1/audio/transcriptions" and spoken["path"] == "/v1/audio/speech"
    assert upload["audio"]["samplerate"] == RATE and upload["audio"]["frames"] == 2 * RATE
    assert upload["fields"]["language"] == "en"
    import soundfile

    uploaded, _ = soundfile.read(io.BytesIO(upload["file"]), dtype="int16")
    assert np.array_equal(uploaded[:len(said)], said)  # the microphone's samples, untouched on the way
    # The tone the loopback answered with reached the speaker.
    played = np.frombuffer(outfile.read_bytes(), dtype="<i2")
    assert np.abs(played).max() > 1000

    def check(app, c: Client):
        rows = _requests(app)
        found = c.call("agent.instructions.list", slug="alpha", limit=10)["items"]
        return rows, found

    rows, found = with_app(iat_home, check)
    assert sorted((r["direction"], r["provider_code"], r["status"]) for r in rows) == [
        ("stt", "openai_audio", "done"), ("tts", "openai_audio", "done")]
    assert [i["payload"]["inputs"]["action"] for i in found] == ["export_project"]


def test_no_vosk_model_is_one_line_and_the_chat_goes_on(tmp_path: Path, speech):
    home = tmp_path / "bare-iat"
    with_app(home, lambda app, c: c.call("projects.create", slug="alpha", name="Alpha"))
    user_home, _ = sound_home(tmp_path, speech("서울"))
    out = chat(home, user_home, ["/talk 1", "hello"], "--input-device", "iat_test_mic", "--no-speak",
               "--stt-engine", "vosk")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    [error] = [line for line in lines if line.startswith("error:")]
    assert error.startswith("error: conflict: no vosk model is installed: put an unpacked vosk model folder")
    assert str(home / "models" / "vosk") in error
    assert lines[lines.index(error) + 1].startswith("copilot: ")  # "hello", typed, still answered
    assert "Traceback" not in out.stdout + out.stderr
