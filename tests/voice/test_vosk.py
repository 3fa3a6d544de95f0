"""The vosk engine with a real model (the Korean package) on real speech (eSpeak NG's Korean voice via pyttsx3).

The round trip: names in a project (its name, another project's name, characters) become the grammar through
iat.voice.vocabulary; eSpeak NG says them; the engine recognises them in grammar mode. eSpeak's Korean is robotic
and this small model was not trained on it, so a few words of one or two syllables can come out as another
phrase: the test asks for a high hit rate over nine phrases and exact text for the clearest ones.
"""

from __future__ import annotations

import numpy as np
import pytest

from iat.copilot import glossary
from iat.errors import Conflict
from iat.voice import audio as voice_audio
from iat.voice import vocabulary, vosk_engine
from iat.voice.stt import Audio, SpeechToText
from iat.voice.vosk_engine import VoskEngine

PROJECT_NAME = "서울 프로젝트"  # Seoul project
OTHER_PROJECTS = {"beta": "이미지 검사", "gamma": "무지개"}  # image check, rainbow
CHARACTERS = {"clara": "클라라", "jisung": "김지성", "tiger": "호랑이"}
COMMANDS = ["취소", "확인", "안녕하세요", "정지"]  # cancel, ok, hello, stop: said to the copilot, not names
SPOKEN = [PROJECT_NAME, "이미지 검사", "클라라", "김지성", "호랑이", *COMMANDS]
CLEAREST = [PROJECT_NAME, "클라라", "안녕하세요", "취소"]


@pytest.fixture
def korean_project(client, vosk_app):
    client.call("projects.create", slug="alpha", name=PROJECT_NAME)
    for slug, name in OTHER_PROJECTS.items():
        client.call("projects.create", slug=slug, name=name)
    for code, name in CHARACTERS.items():
        client.call("characters.create", slug="alpha", code=code, name=name)
    return vosk_app.projects.open("alpha")


def at_16k(wav: bytes) -> Audio:
    decoded, _ = voice_audio.decode(wav)
    return voice_audio.to_rate(decoded, VoskEngine.sample_rate)


def test_engine_implements_the_interface():
    assert isinstance(VoskEngine(), SpeechToText)
    assert VoskEngine.sample_rate == 16000


def test_vocabulary_of_a_project(client, korean_project, vosk_app):
    phrases = vocabulary.phrases(vosk_app, korean_project)
    assert phrases == vocabulary.phrases(vosk_app, korean_project)  # deterministic
    for expected in ["render", "export", "sync", "check", "cancel", "upscale", "서울 프로젝트", "이미지 검사",
                     "무지개", "클라라", "김지성", "호랑이"]:
        assert expected in phrases
    assert len(phrases) == len(set(phrases))
    assert all(p == p.lower() and p == " ".join(p.split()) for p in phrases)
    assert vocabulary.spoken_key("S01") == "s one"
    assert vocabulary.spoken_key("panel-42") == "panel forty two"
    assert vocabulary.spoken_key("shot_105b") == "shot one zero five b"
    assert vocabulary.phrase("Ana-Lucía  O'Neil") == "ana lucía o neil"


def test_round_trip_in_grammar_mode(korean_project, vosk_app, speak_ko):
    grammar = vocabulary.phrases(vosk_app, korean_project) + COMMANDS
    engine = VoskEngine()
    heard = {}
    for text in SPOKEN:
        transcript = engine.transcribe(vosk_app, korean_project, at_16k(speak_ko(text)), grammar=grammar)
        heard[text] = transcript.text
        assert transcript.meta["grammar"] == "grammar"
        assert transcript.meta["model"] == "ko" and transcript.meta["language"] == "ko"
        if transcript.text:
            assert transcript.words and all(0.0 <= w["conf"] <= 1.0 and w["end"] >= w["start"]
                                            for w in transcript.words)
            assert " ".join(w["word"] for w in transcript.words) == transcript.text
            assert 0.0 <= transcript.confidence <= 1.0
    hits = [t for t in SPOKEN if heard[t] == t]
    assert len(hits) >= 7, heard
    assert all(heard[t] == t for t in CLEAREST), heard
    # The English command words are not in this Korean model: left out of its grammar, not an error.
    meta = engine.transcribe(vosk_app, korean_project, at_16k(speak_ko("클라라")), grammar=grammar).meta
    assert {"render", "export", "upscale"} <= set(meta["grammar_unknown_words"])
    assert meta["grammar_unknown_count"] == len(meta["grammar_unknown_words"])
    assert meta["grammar_phrases"] == (len(OTHER_PROJECTS) + 1 + len(CHARACTERS) + len(COMMANDS)
                                       + len(glossary.PHRASES["ko"]))  # the copilot's Korean command phrases


def test_partial_results_for_a_long_utterance(korean_project, vosk_app, speak_ko):
    gap = np.zeros(VoskEngine.sample_rate // 3, dtype=np.int16)
    parts = [at_16k(speak_ko(t)).samples for t in SPOKEN]
    long = Audio(np.concatenate([np.concatenate([p, gap]) for p in parts]), VoskEngine.sample_rate)
    assert long.duration_s > 8
    partials: list[str] = []
    transcript = VoskEngine().transcribe(vosk_app, korean_project, long, grammar=vocabulary.phrases(
        vosk_app, korean_project) + COMMANDS, on_partial=partials.append)
    assert len(partials) >= 5, partials
    assert all(a != b for a, b in zip(partials, partials[1:]))  # only new text is sent
    assert transcript.meta["partials"] == len(partials)
    words = transcript.text.split()
    assert sum(w in words for w in ["서울", "프로젝트", "클라라", "안녕하세요", "취소"]) >= 4, transcript.text
    assert partials[-1].split()[:3] == words[:3]  # the partials grew into the final text


def test_free_form_returns_text(korean_project, vosk_app, speak_ko):
    transcript = VoskEngine().transcribe(vosk_app, korean_project, at_16k(speak_ko("안녕하세요. 프로젝트 시작")))
    assert transcript.meta["grammar"] == "free"
    assert transcript.text.strip() and transcript.words


def test_resampled_speech_is_recognised(korean_project, vosk_app, speak_ko):
    wav = speak_ko("안녕하세요")
    native, info = voice_audio.decode(wav)
    assert native.sample_rate == 22050 and info["format"] == "WAV"
    resampled = voice_audio.to_rate(native, 16000)
    assert resampled.sample_rate == 16000
    assert abs(resampled.duration_s - native.duration_s) < 0.01
    grammar = ["안녕하세요", "취소", "확인", "클라라"]
    assert VoskEngine().transcribe(vosk_app, korean_project, resampled, grammar=grammar).text == "안녕하세요"


def test_grammar_without_a_known_word_decodes_free_form(korean_project, vosk_app, speak_ko):
    transcript = VoskEngine().transcribe(vosk_app, korean_project, at_16k(speak_ko("안녕하세요")),
                                         grammar=["render shot one", "zzqx"])
    assert transcript.meta["grammar"] == "none_known"
    assert transcript.meta["grammar_unknown_words"] == ["one", "render", "shot", "zzqx"]
    assert transcript.text.strip()


def test_the_model_is_loaded_once_and_shared(korean_project, vosk_app, vosk_model_dir, install_vosk, speak_ko):
    audio = at_16k(speak_ko("취소"))
    engine = VoskEngine()
    engine.transcribe(vosk_app, korean_project, audio, grammar=["취소"])
    builds = vosk_engine._MODELS.builds
    assert engine.transcribe(vosk_app, korean_project, audio, grammar=["취소", "확인"]).text == "취소"
    # A second name for the same folder (a link) is the same model: no second load.
    install_vosk(vosk_app, vosk_model_dir, "ko-again")
    assert vosk_engine.installed(vosk_app).keys() == {"ko", "ko-again"}
    assert vosk_engine.load_model(vosk_engine.installed(vosk_app)["ko-again"]) is \
        vosk_engine.load_model(vosk_engine.installed(vosk_app)["ko"])
    assert vosk_engine._MODELS.builds == builds


def test_missing_model_is_a_conflict(client, app):
    client.call("projects.create", slug="alpha", name="Alpha")
    handle = app.projects.open("alpha")
    audio = Audio(np.zeros(16000, dtype=np.int16), 16000)
    with pytest.raises(Conflict) as info:
        VoskEngine().transcribe(app, handle, audio)
    where = str(app.models.user_dir / "vosk")
    assert where in info.value.message and info.value.details["installed"] == []


def test_model_choice_follows_the_project_settings(client, vosk_app, vosk_model_dir, install_vosk, speak_ko):
    client.call("projects.create", slug="alpha", name="Alpha")
    handle = vosk_app.projects.open("alpha")
    audio = at_16k(speak_ko("취소"))
    assert VoskEngine().transcribe(vosk_app, handle, audio, grammar=["취소"]).meta["model"] == "ko"
    install_vosk(vosk_app, vosk_model_dir, "ko-small")
    with pytest.raises(Conflict) as several:
        VoskEngine().transcribe(vosk_app, handle, audio)
    assert several.value.details["installed"] == ["ko", "ko-small"]
    client.call("projects.update", slug="alpha", settings_json={"voice": {"vosk_model": "ko-small"}})
    assert VoskEngine().transcribe(vosk_app, handle, audio, grammar=["취소"]).meta["model"] == "ko-small"
    client.call("projects.update", slug="alpha", settings_json={"voice": {"vosk_model": "en-us"}})
    with pytest.raises(Conflict) as missing:
        VoskEngine().transcribe(vosk_app, handle, audio)
    assert missing.value.details["model"] == "en-us" and "settings_json.voice.vosk_model" in missing.value.message
