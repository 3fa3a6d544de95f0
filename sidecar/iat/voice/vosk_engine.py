"""The `vosk` speech-to-text engine: local and offline, a Kaldi model folder from the models folders.

Models live in `<models folder>/vosk/<name>/` (am/, conf/, graph/, usually ivector/), in the user's folder
(`$IAT_HOME/models`, IAT_MODELS_DIR) or the one shipped with the installer; the user's wins on a name clash. The
project's `settings_json.voice.vosk_model` names the model; without it the only installed one is used. Nothing is
ever downloaded here (vosk.Model without a path would fetch one: it is always given a path).

A `vosk.Model` takes seconds to load and is thread-safe, so one is loaded per model folder and shared by every
call (and every App in the process); each call gets its own KaldiRecognizer.

Grammar mode: a model with a runtime graph (graph/HCLr.fst + Gr.fst) restricts decoding to given phrases
(KaldiRecognizer's grammar argument). Each grammar word is looked up in the model's vocabulary as given and in
lower case, never in upper case: the Korean model spells Latin tokens in upper case ("IN", "TO", "SHOW"), read as
Korean sounds, and such short tokens in a grammar win over the Korean words spoken; words the model does not know
are left out here (vosk would log "Ignoring word missing in vocabulary" and
drop them too) and listed in the transcript's meta. The model's unknown-word token ("[unk]" in most models,
"<UNK>" in the Korean one) is added so speech outside the grammar is not forced onto a phrase; it reads "[unk]" in
the text. A grammar with no known word, or a model with a static graph (HCLG.fst), decodes free-form and says so
in meta["grammar"].
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from iat.errors import Conflict, EngineError, InvalidParams
from iat.models.sessions import SessionCache
from iat.voice.stt import Audio, Transcript

SUBDIR = "vosk"
CHUNK_S = 0.25  # audio fed per AcceptWaveform: partial results come at about this pace
UNK_TOKENS = ("[unk]", "<UNK>", "<unk>")
NAME_WORDS = {"vosk", "model", "small", "big", "large", "lgraph", "android"}

_MODELS = SessionCache()  # (resolved folder, its final.mdl mtime) -> vosk.Model, shared across Apps


def _vosk():
    try:
        import vosk
    except ImportError as exc:  # a broken install: vosk is a dependency
        raise Conflict("the vosk package is not installed: pip install vosk",
                       details={"engine": "vosk", "reason": str(exc)}) from None
    vosk.SetLogLevel(-2)  # errors only: Kaldi's LOG/WARNING lines would land on the sidecar's stderr
    return vosk


def is_model_dir(path: Path) -> bool:
    return (path / "am" / "final.mdl").is_file() and (path / "conf" / "model.conf").is_file() and \
        (path / "graph").is_dir()


def model_roots(app) -> list[tuple[Path, str]]:
    """Where vosk models are looked for, user's folder first."""
    roots = [(Path(app.models.user_dir) / SUBDIR, "user")]
    if app.models.bundled_dir is not None:
        roots.append((Path(app.models.bundled_dir) / SUBDIR, "bundled"))
    return roots


def installed(app) -> dict[str, Path]:
    """name -> folder of every installed vosk model (a user's model shadows a shipped one of the same name)."""
    found: dict[str, Path] = {}
    for root, _ in model_roots(app):
        if root.is_dir():
            for child in sorted(root.iterdir()):
                if child.name not in found and is_model_dir(child):
                    found[child.name] = child
    return found


def language_of(name: str, folder: Path | None = None) -> str | None:
    """The model's language: `language` in an optional iat.json beside am/, else the first two-letter word of its
    name (vosk-model-small-en-us-0.15 -> "en", ko -> "ko")."""
    if folder is not None and (folder / "iat.json").is_file():
        try:
            lang = json.loads((folder / "iat.json").read_text(encoding="utf-8")).get("language")
            if isinstance(lang, str) and lang:
                return lang
        except (OSError, ValueError):
            pass
    for word in re.split(r"[-_. ]+", name.lower()):
        if len(word) == 2 and word.isalpha() and word not in NAME_WORDS:
            return word
    return None


def _settings_model(app, handle) -> str | None:
    if handle is None:
        return None
    from iat.db.models import Project

    def read(pid: str):
        return Project.select(Project.settings_json).where(Project.id == pid).scalar()

    settings = handle.store.read(read, handle.id) or {}
    voice = settings.get("voice") if isinstance(settings, dict) else None
    name = voice.get("vosk_model") if isinstance(voice, dict) else None
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidParams("the project's settings_json.voice.vosk_model must be a model folder's name",
                            details={"errors": [{"loc": ["settings_json", "voice", "vosk_model"],
                                                 "msg": "not a non-empty string", "type": "value_error"}]})
    return name


def resolve(app, handle, language: str | None = None) -> tuple[str, Path]:
    """(name, folder) of the model to use; Conflict saying where to put one when there is none."""
    models = installed(app)
    where = str(model_roots(app)[0][0])
    hint = (f"put an unpacked vosk model folder (am/, conf/, graph/) at {where}/<name>/ (models from "
            "https://alphacephei.com/vosk/models)")
    wanted = _settings_model(app, handle)
    if wanted is not None:
        if wanted not in models:
            raise Conflict(f"the vosk model {wanted!r} named by settings_json.voice.vosk_model is not installed: "
                           f"{hint}", details={"engine": "vosk", "model": wanted, "models_dir": where,
                                               "installed": sorted(models)})
        return wanted, models[wanted]
    if not models:
        raise Conflict(f"no vosk model is installed: {hint}",
                       details={"engine": "vosk", "models_dir": where, "installed": []})
    if len(models) == 1:
        return next(iter(models.items()))
    if language:
        matching = [n for n, p in models.items() if language_of(n, p) == language.split("-")[0].lower()]
        if len(matching) == 1:
            return matching[0], models[matching[0]]
    raise Conflict("several vosk models are installed: name one in the project's settings_json.voice.vosk_model",
                   details={"engine": "vosk", "installed": sorted(models), "language": language})


def load_model(folder: Path):
    """The shared vosk.Model of `folder` (loaded on first use; a changed model file loads again)."""
    folder = folder.resolve()
    stamp = (folder / "am" / "final.mdl").stat().st_mtime_ns

    def build():
        vosk = _vosk()
        try:
            return vosk.Model(str(folder))
        except Exception as exc:  # vosk says only "Failed to create a model"
            raise Conflict(f"the vosk model at {folder} cannot be loaded (damaged or incomplete): install it again",
                           details={"engine": "vosk", "path": str(folder), "reason": str(exc)[:300]}) from None

    return _MODELS.get((str(folder), stamp), build)


def has_runtime_graph(folder: Path) -> bool:
    return (folder / "graph" / "HCLr.fst").is_file() and (folder / "graph" / "Gr.fst").is_file()


def known_form(model, word: str) -> str | None:
    """How the model's vocabulary spells `word` (as given or in lower case), None when it has no such word."""
    for form in dict.fromkeys((word, word.lower())):
        if model.vosk_model_find_word(form) >= 0:
            return form
    return None


def model_grammar(model, phrases: list[str]) -> tuple[list[str], list[str], str | None]:
    """(phrases in the model's spelling, words it does not know, its unknown-word token or None)."""
    out: list[str] = []
    unknown: list[str] = []
    for phrase in phrases:
        words = []
        for word in str(phrase).split():
            if word.lower() in UNK_TOKENS or word in UNK_TOKENS:
                continue
            form = known_form(model, word)
            if form is None:
                unknown.append(word)
            else:
                words.append(form)
        if words:
            out.append(" ".join(words))
    unk = next((t for t in UNK_TOKENS if model.vosk_model_find_word(t) >= 0), None)
    return list(dict.fromkeys(out)), sorted(set(unknown)), unk


def _unk(text: str) -> str:
    return " ".join("[unk]" if t in UNK_TOKENS else t for t in text.split())


def _pcm(audio: Audio) -> np.ndarray:
    samples = np.asarray(audio.samples)
    if samples.ndim != 1:
        raise InvalidParams("vosk takes mono audio (one channel)", details={"shape": list(samples.shape)})
    if audio.sample_rate < 8000:
        raise InvalidParams(f"a sample rate of {audio.sample_rate} Hz is too low for speech recognition",
                            details={"sample_rate": audio.sample_rate})
    if samples.dtype != np.int16:
        if np.issubdtype(samples.dtype, np.floating):
            samples = np.clip(np.round(samples * 32767.0), -32768, 32767)
        samples = samples.astype(np.int16)
    return np.ascontiguousarray(samples)


class VoskEngine:
    code: ClassVar[str] = "vosk"
    sample_rate: ClassVar[int] = 16000

    def transcribe(self, app, handle, audio: Audio, *, grammar: list[str] | None = None,
                   language: str | None = None, on_partial: Callable[[str], None] | None = None) -> Transcript:
        name, folder = resolve(app, handle, language)
        model = load_model(folder)
        return recognize(model, audio, grammar=grammar, on_partial=on_partial,
                         meta={"model": name, "language": language_of(name, folder),
                               "runtime_graph": has_runtime_graph(folder)})


def recognize(model, audio: Audio, *, grammar: list[str] | None = None,
              on_partial: Callable[[str], None] | None = None, meta: dict[str, Any] | None = None) -> Transcript:
    """Decodes `audio` with a loaded vosk.Model: chunks of CHUNK_S, partial text to on_partial when it changes,
    every finished segment's words kept."""
    vosk = _vosk()
    meta = dict(meta or {})
    samples = _pcm(audio)
    unk = None
    mode = "free"
    if grammar is not None:
        if not meta.get("runtime_graph", True):
            mode = "unsupported"  # a static HCLG graph: vosk would ignore the grammar with a warning
        else:
            phrases, unknown, unk = model_grammar(model, grammar)
            meta["grammar_unknown_words"] = unknown[:200]  # sorted; the count says when there were more
            meta["grammar_unknown_count"] = len(unknown)
            if phrases:
                mode = "grammar"
                meta["grammar_phrases"] = len(phrases)
                grammar_json = json.dumps(phrases + ([unk] if unk else []), ensure_ascii=False)
            else:
                mode = "none_known"  # no word of the grammar is in the model: decode free-form
    meta["grammar"] = mode
    try:
        if mode == "grammar":
            rec = vosk.KaldiRecognizer(model, float(audio.sample_rate), grammar_json)
        else:
            rec = vosk.KaldiRecognizer(model, float(audio.sample_rate))
        rec.SetWords(True)
    except Exception as exc:
        raise EngineError(f"vosk could not start a recognizer: {exc}", details={"engine": "vosk"}) from None

    segments: list[str] = []
    words: list[dict[str, Any]] = []
    last_partial = ""
    partials = 0

    def finish(result_json: str) -> None:
        result = json.loads(result_json)
        for w in result.get("result", []):
            word = "[unk]" if w.get("word") in UNK_TOKENS else w.get("word", "")
            words.append({"word": word, "start": float(w.get("start", 0.0)), "end": float(w.get("end", 0.0)),
                          "conf": float(w.get("conf", 0.0))})
        text = _unk(result.get("text", ""))
        if text:
            segments.append(text)

    step = max(1, int(audio.sample_rate * CHUNK_S))
    data = samples.tobytes()
    for i in range(0, len(samples), step):
        if rec.AcceptWaveform(data[2 * i:2 * (i + step)]):
            finish(rec.Result())  # an endpoint (silence): this segment is final
            current = ""
        elif on_partial is not None:  # a partial result costs a best-path search: only when someone listens
            current = _unk(json.loads(rec.PartialResult()).get("partial", ""))
        if on_partial is not None:
            text = " ".join(segments + ([current] if current else []))
            if text and text != last_partial:
                last_partial = text
                partials += 1
                on_partial(text)
    finish(rec.FinalResult())
    meta["partials"] = partials
    meta["segments"] = len(segments)
    meta["sample_rate"] = audio.sample_rate
    if unk:
        meta["unk_token"] = unk
    confidence = float(np.mean([w["conf"] for w in words])) if words else None
    return Transcript(text=" ".join(segments), confidence=confidence, words=words, meta=meta)


__all__ = ["VoskEngine", "installed", "resolve", "load_model", "recognize", "model_grammar", "language_of"]
