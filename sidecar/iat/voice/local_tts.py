"""`local` text to speech: pyttsx3, which speaks through the OS's own voices (eSpeak NG via libespeak-ng on Linux,
SAPI5 on Windows, NSSpeechSynthesizer on macOS). Offline and free: no ledger.

pyttsx3 engines are not thread-safe and `pyttsx3.init()` hands every caller the same engine of a driver (kept in a
weak dictionary: this module holds the one strong reference), and eSpeak NG can be initialised once per process. So
there is one engine per process (asked for by its driver's name, see _driver_name) and every call runs under one
lock: set the voice, `save_to_file` into a temp file, `runAndWait`, read the file. The eSpeak driver of pyttsx3 prints "Audio saved to ..." on stdout; that print
goes to stderr (stdout is the stdio transport's and the terminal chat's).

Voice: by id (`gmw/en-us`, `ko`), by name (`English (America)`, `Korean`), or by language (`en`, `ko`: the voice of
exactly that language first, then one whose id ends with it, then the first of its dialects); none given: the
driver's default voice. A voice or language the machine does not have is `conflict` naming what to install.

Time to first audio: pyttsx3 writes the whole file at the end of the synthesis, so `on_first_audio` fires when the
file holds its first samples, which for this engine is the whole synthesis time.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, ClassVar

from iat.errors import Conflict, EngineError
from iat.voice import audio
from iat.voice.tts import Speech

_lock = threading.Lock()
_engine: Any = None
_default_voice: str | None = None
_voices: list[dict] | None = None  # the engine's voices, described once


def install_hint() -> str:
    if sys.platform.startswith("linux"):
        return "install eSpeak NG (Debian/Ubuntu: apt install espeak-ng libespeak-ng1)"
    if sys.platform == "win32":
        return "install a Windows speech voice (Settings > Time & language > Speech) and pywin32/comtypes"
    if sys.platform == "darwin":
        return "install a system voice (System Settings > Accessibility > Spoken Content) and pyobjc"
    return "install a speech synthesizer pyttsx3 can drive (eSpeak NG, SAPI5 or NSSpeechSynthesizer)"


def _driver_name() -> str | None:
    """The OS's default driver, named: pyttsx3 caches engines by the name they were asked for, and two engines on
    one eSpeak NG (init() and init("espeak")) fight over its one synthesis callback (the loser's runAndWait never
    ends). Naming it shares the engine with any other code of the process that names it."""
    try:
        from pyttsx3.engine import default_engine_by_sys_platform
    except ImportError:  # an older pyttsx3: its init() picks the same driver
        return None
    return default_engine_by_sys_platform()


def _get_engine():
    """The process's pyttsx3 engine (call under _lock)."""
    global _engine, _default_voice, _voices
    if _engine is None:
        try:
            import pyttsx3

            engine = pyttsx3.init(_driver_name())
            voices = engine.getProperty("voices") or []
        except Exception as exc:  # no driver library (OSError, ImportError, RuntimeError from the driver)
            raise Conflict(f"no local speech engine: {exc}; {install_hint()}",
                           details={"engine": "local", "install": install_hint()}) from None
        if not voices:
            raise Conflict(f"the local speech engine has no voices; {install_hint()}",
                           details={"engine": "local", "install": install_hint()})
        _engine, _default_voice = engine, engine.getProperty("voice")
        _voices = [_describe(v) for v in voices]  # listed once: a list of 131 eSpeak voices costs ~1.4 ms a call
    return _engine


def voices() -> list[dict]:
    """The voices this machine has: {id, name, languages, gender}."""
    with _lock:
        _get_engine()
        return list(_voices or [])


def _describe(v) -> dict:
    return {"id": str(v.id), "name": str(v.name or ""), "languages": [str(x) for x in (v.languages or [])],
            "gender": v.gender}


def pick_voice(available: list[dict], voice: str | None, language: str | None) -> dict | None:
    """The voice asked for, by id or name, else by language; None when neither is given."""
    if voice:
        wanted = voice.lower()
        for v in available:
            if v["id"].lower() == wanted or v["name"].lower() == wanted:
                return v
        raise Conflict(f"no local voice {voice!r} on this machine ({len(available)} voices); "
                       f"{install_hint()}, or pick one of voices()",
                       details={"voice": voice, "install": install_hint()})
    if language:
        lang = language.lower().replace("_", "-")
        langs = [(v, [x.lower() for x in v["languages"]]) for v in available]
        for match in (lambda v, ls: lang in ls,
                      lambda v, ls: v["id"].lower() == lang or v["id"].lower().endswith("/" + lang),
                      lambda v, ls: any(x.startswith(lang + "-") for x in ls)):
            found = [v for v, ls in langs if match(v, ls)]
            if found:
                return found[0]
        raise Conflict(f"no local voice speaks {language!r} on this machine; {install_hint()} with that "
                       f"language's voice", details={"language": language, "install": install_hint()})
    return None


WRITE_WAIT_S = 10.0  # how long the driver may take to write the file after runAndWait returned


def _written(path: Path) -> bytes:
    """The WAV the driver wrote. pyttsx3's eSpeak NG driver writes it from its synthesis callback when the message
    ends, which can come after runAndWait has returned (seen on loaded machines: an empty file, then "Audio saved
    to"): wait until the file is whole, its RIFF size (patched last, when the writer closes it) matching its
    length."""
    import time

    deadline = time.monotonic() + WRITE_WAIT_S
    while True:
        data = path.read_bytes() if path.exists() else b""
        if len(data) > 44 and data[:4] == b"RIFF" and int.from_bytes(data[4:8], "little") == len(data) - 8:
            return data
        if time.monotonic() > deadline:
            return data
        time.sleep(0.01)


class LocalSpeech:
    code: ClassVar[str] = "local"

    def synthesize(self, app, handle, text: str, *, voice: str | None = None, language: str | None = None,
                   on_first_audio: Callable[[], None] | None = None) -> Speech:
        fd, name = tempfile.mkstemp(prefix="iat-tts-", suffix=".wav")
        os.close(fd)
        path = Path(name)
        try:
            with _lock:
                engine = _get_engine()
                chosen = pick_voice(_voices or [], voice, language) if (voice or language) else None
                voice_id = chosen["id"] if chosen else _default_voice
                try:
                    engine.setProperty("voice", voice_id)
                    with contextlib.redirect_stdout(sys.stderr):
                        engine.save_to_file(text, str(path))
                        engine.runAndWait()
                except Exception as exc:
                    raise EngineError(f"the local speech engine failed: {exc}",
                                      details={"engine": self.code, "voice": voice_id}) from None
                data = _written(path)
            if len(data) <= 44:  # a bare header: nothing was synthesised
                raise EngineError("the local speech engine produced no audio",
                                  details={"engine": self.code, "voice": voice_id})
            if on_first_audio is not None:
                on_first_audio()
            decoded, info = audio.decode(data)
        finally:
            path.unlink(missing_ok=True)
        return Speech(audio.encode_wav(decoded), decoded.sample_rate, round(decoded.duration_s, 3),
                      {"voice": voice_id, "voice_name": chosen["name"] if chosen else None,
                       "model": f"pyttsx3:{type(engine.proxy._driver).__module__.rsplit('.', 1)[-1]}"
                       if hasattr(engine, "proxy") else "pyttsx3"})
