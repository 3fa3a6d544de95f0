"""A spoken request, end to end on real engines: eSpeak NG speaks it (Korean voice, through pyttsx3), vosk
recognises it in grammar mode on the real Korean model, and the text becomes the user's chat message (with the
recording as its voice asset) that the copilot turns into the right instruction or answer. Korean because the only
speech model reachable from the test machines is Korean (tests/voice/conftest.py); the command phrases the copilot
understands in Korean are in iat.copilot.glossary."""

from __future__ import annotations

import base64

import pytest

from support import Client


@pytest.fixture
def spoken(vosk_app, client: Client, project: dict, speak_ko):
    vosk_app.agent.close()  # the instructions themselves are checked, not their work
    session = client.call("chat.sessions.create", slug="alpha", title="voice")

    def say(text: str) -> dict:
        audio = base64.b64encode(speak_ko(text)).decode()
        return client.call("voice.stt", slug="alpha", audio_base64=audio, engine="vosk", grammar=True,
                           session_id=session["id"])

    return say


def test_a_spoken_sync_request_becomes_the_sync_instruction(vosk_app, client, spoken):
    out = spoken("저장소 동기화")
    assert out["transcript"]["text"] == "저장소 동기화"
    turn = out["turn"]
    user = turn["user_message"]
    assert user["content_text"] == "저장소 동기화" and user["voice_asset_id"]
    [instruction] = turn["instructions"]
    assert instruction["instruction_type"] == "storage_sync"
    assert instruction["payload"]["inputs"]["direction"] == "push"
    request = client.call("voice.requests.get", slug="alpha", request_id=out["request"]["id"])
    assert request["status"] == "done" and request["direction"] == "stt" and request["latency_ms"] >= 0
    assert request["input_asset_id"] == user["voice_asset_id"] and request["message_id"] == user["id"]


def test_a_spoken_quality_check_names_the_last_run(vosk_app, client, spoken):
    run = client.call("runs.start", slug="alpha", shots=[{"job_key": "s1", "scene": "a harbour"}], candidates=1,
                      stages=["style_lock"], seed=5)
    assert vosk_app.runner.wait_idle(120)
    turn = spoken("품질 검사")["turn"]
    [instruction] = turn["instructions"]
    assert (instruction["instruction_type"], instruction["payload"]["inputs"]) == ("qa_check", {"run_id": run["id"]})


def test_a_spoken_cost_question_is_answered(vosk_app, client, spoken):
    turn = spoken("비용 보여줘")["turn"]
    assert turn["instructions"] == []
    assert turn["assistant_message"]["content_json"]["kind"] == "answer"
    assert "Spent so far" in turn["assistant_message"]["content_text"]
