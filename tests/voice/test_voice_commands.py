"""voice.* end to end in process: speech made by the real local engine (eSpeak NG through pyttsx3), transcription
by the openai engine against the loopback audio API (tests/vendors/openai_audio.py) through the real openai SDK and
the ledger, the chat turn the text becomes, and what every failure leaves behind (its record, nothing else)."""

from __future__ import annotations

import base64
import io
import math
import uuid

import numpy as np
import pytest
import soundfile

from iat.app import App
from iat.settings import Settings
from support import Client
from vendors.loopback import LoopbackServer
from vendors.openai_audio import AudioState, make_app

ASK = "please export the project as a zip"


@pytest.fixture
def audio_api() -> AudioState:
    return AudioState()


@pytest.fixture
def server(audio_api):
    with LoopbackServer(make_app(audio_api)) as srv:
        yield srv


def configure(client: Client, server, slug: str = "alpha", **config) -> dict:
    return client.call("providers.configure", slug=slug, provider_code="openai_audio", config={
        "endpoint": server.url + "/v1", "backoff_s": 0.01, "timeout_s": 10,
        "pricing": {"usd_per_minute": 0.5, "usd_per_1m_chars": 20.0}, **config})


def tone(seconds: float = 1.5, rate: int = 44100, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.4 * np.sin(2 * math.pi * 330 * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def encode(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def rows(app, table: str) -> list[dict]:
    from iat.db import models

    model = {"voice_requests": models.VoiceRequest, "assets": models.Asset, "chat_messages": models.ChatMessage,
             "agent_instructions": models.AgentInstruction, "cost_events": models.CostEvent}[table]
    handle = app.projects.open("alpha")
    app.ledger.flush(handle)
    return handle.store.read(lambda: list(model.select().dicts()))


@pytest.fixture
def session(client, project) -> dict:
    return client.call("chat.sessions.create", slug="alpha", title="Voice")


# --- text to speech, local ---


def test_tts_local_stores_speech_and_links_the_assistant_message(app, client, session):
    turn = client.call("chat.messages.send", slug="alpha", session_id=session["id"], text="what did it cost so far?")
    answer = turn["assistant_message"]
    out = client.call("voice.tts", slug="alpha", message_id=answer["id"], language="en")
    req, asset = out["request"], out["asset"]
    assert (req["direction"], req["provider_code"], req["status"]) == ("tts", "local", "done")
    assert req["output_asset_id"] == asset["id"] and req["message_id"] == answer["id"]
    assert req["session_id"] == session["id"] and req["input_asset_id"] is None
    assert req["latency_ms"] is not None and req["latency_ms"] >= 0
    assert req["meta_json"]["first_audio_ms"] is not None and req["meta_json"]["first_audio_ms"] <= req["latency_ms"]
    assert req["meta_json"]["voice"] and req["meta_json"]["characters"] == len(answer["content_text"].strip())
    assert (asset["kind"], asset["mime_type"]) == ("generated", "audio/wav")
    data = base64.b64decode(client.call("assets.read", slug="alpha", asset_id=asset["id"])["data_base64"])
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    assert samples.ndim == 1 and rate == req["meta_json"]["sample_rate"]
    assert len(samples) / rate == pytest.approx(req["meta_json"]["duration_s"], abs=0.01)
    assert np.abs(samples).max() > 3000  # speech, not silence
    listed = client.call("chat.messages.list", slug="alpha", session_id=session["id"])["items"]
    assert next(m for m in listed if m["id"] == answer["id"])["voice_asset_id"] == asset["id"]
    assert client.call("voice.requests.get", slug="alpha", request_id=req["id"]) == req


def test_tts_of_text_uses_the_projects_default_engine_and_refuses_what_it_cannot_speak(app, client, project):
    client.call("projects.update", slug="alpha", settings_json={"voice": {"tts_engine": "local"}})
    out = client.call("voice.tts", slug="alpha", text="Rendering shots one to three.", voice="gmw/en-us")
    assert out["request"]["meta_json"]["voice"] == "gmw/en-us" and out["request"]["message_id"] is None
    before = rows(app, "voice_requests")
    err = client.error("voice.tts", slug="alpha", text="hello", voice="no-such-voice-anywhere")
    assert err.name == "conflict" and "espeak-ng" in err.message
    [failed] = [r for r in rows(app, "voice_requests") if r not in before]
    assert failed["status"] == "failed" and failed["meta_json"]["error"]["name"] == "conflict"
    assert failed["output_asset_id"] is None
    user = client.call("chat.sessions.create", slug="alpha")
    said = client.call("chat.messages.send", slug="alpha", session_id=user["id"], text="hi")["user_message"]
    assert client.error("voice.tts", slug="alpha", message_id=said["id"]).name == "invalid_params"  # a user's
    assert client.error("voice.tts", slug="alpha", message_id=str(uuid.uuid4())).name == "not_found"
    assert client.error("voice.tts", slug="alpha", text="hi", message_id=said["id"]).name == "invalid_params"
    client.call("projects.update", slug="alpha", settings_json={"voice": {"tts_engine": "sapi9"}})
    assert client.error("voice.tts", slug="alpha", text="hi").name == "invalid_params"


# --- speech to text, openai on the loopback server ---


def test_stt_openai_makes_the_chat_message_and_the_copilots_instruction(app, client, session, server, audio_api):
    configure(client, server)
    events: list[tuple[str, dict]] = []
    app.events.subscribe(lambda name, p: events.append((name, p)) if name.startswith("voice.") else None)
    spoken = client.call("voice.tts", slug="alpha", text=ASK, language="en")["asset"]
    audio_api.say("Please export the project as a zip.")
    out = client.call("voice.stt", slug="alpha", asset_id=spoken["id"], engine="openai", language="en",
                      session_id=session["id"])
    req, turn = out["request"], out["turn"]
    assert out["transcript"]["text"] == "Please export the project as a zip."
    assert (req["direction"], req["provider_code"], req["status"]) == ("stt", "openai_audio", "done")
    assert req["input_asset_id"] == spoken["id"] and req["output_asset_id"] is None
    assert req["latency_ms"] > 0 and req["meta_json"]["text"] == out["transcript"]["text"]
    assert req["meta_json"]["model"] == "gpt-4o-mini-transcribe" and req["meta_json"]["format"] == "WAV"
    user = turn["user_message"]
    assert (user["role"], user["content_text"], user["voice_asset_id"]) == ("user", out["transcript"]["text"],
                                                                           spoken["id"])
    assert req["message_id"] == user["id"] and req["session_id"] == session["id"]
    [instruction] = turn["instructions"]
    assert instruction["instruction_type"] == "custom"
    assert instruction["payload"]["inputs"] == {"action": "export_project", "format": "zip"}
    assert instruction["message_id"] == user["id"]
    # What reached the vendor: a real 16 kHz mono WAV of the stored speech, the model and the language.
    [sent] = [r for r in audio_api.received if r["path"] == "/v1/audio/transcriptions"]
    assert sent["fields"]["model"] == "gpt-4o-mini-transcribe" and sent["fields"]["language"] == "en"
    assert (sent["audio"]["format"], sent["audio"]["samplerate"], sent["audio"]["channels"]) == ("WAV", 16000, 1)
    duration = req["meta_json"]["duration_s"]
    assert sent["audio"]["frames"] / 16000 == pytest.approx(duration, abs=0.01)
    # The ledger: one attempt, costed per minute of audio at the configured price.
    [cost] = [c for c in rows(app, "cost_events") if c["operation_code"] == "voice.stt"]
    assert cost["provider_code"] == "openai_audio"
    assert float(cost["cost_usd"]) == pytest.approx(duration / 60 * 0.5, rel=1e-3)
    assert app.events.drain()
    names = [n for n, p in events if p.get("request_id") == req["id"]]
    assert names == ["voice.stt.started", "voice.stt.done"]
    assert app.agent.wait_idle(60)


def test_stt_of_uploaded_flac_stores_it_with_its_type_and_empty_speech_makes_no_message(
        app, client, session, server, audio_api):
    configure(client, server)
    data = encode(tone(1.0, 48000, 2), 48000, "FLAC")
    audio_api.say("")
    out = client.call("voice.stt", slug="alpha", audio_base64=b64(data), engine="openai", session_id=session["id"])
    req = out["request"]
    assert out["transcript"]["text"] == "" and out["turn"] is None and req["message_id"] is None
    assert req["status"] == "done" and req["meta_json"]["reason"] == "no speech was recognised"
    assert (req["meta_json"]["format"], req["meta_json"]["channels"], req["meta_json"]["sample_rate"]) == (
        "FLAC", 2, 48000)
    asset = client.call("assets.get", slug="alpha", asset_id=req["input_asset_id"])
    assert (asset["kind"], asset["mime_type"], asset["sha256"]) == ("input", "audio/flac",
                                                                   __import__("hashlib").sha256(data).hexdigest())
    assert rows(app, "chat_messages") == []
    # The same bytes again: the stored input is reused, a new request recorded.
    audio_api.say("hello")
    again = client.call("voice.stt", slug="alpha", audio_base64=b64(data), engine="openai")
    assert again["request"]["input_asset_id"] == req["input_asset_id"] and again["request"]["id"] != req["id"]
    assert len([a for a in rows(app, "assets") if a["kind"] == "input"]) == 1


def test_failures_leave_their_record_and_nothing_else(tmp_path, server, audio_api):
    audio_api.api_key = "sk-loopback-right-key"
    app = App(Settings.from_env({"IAT_SECRETS_PASSPHRASE": "voice tests"}, home=tmp_path / "keyed"))
    try:
        client = Client(app)
        client.call("projects.create", slug="alpha", name="Alpha")
        session = client.call("chat.sessions.create", slug="alpha")
        wav = encode(tone(0.8, 16000, 1), 16000, "WAV", "PCM_16")
        # Not set up: api.openai.com without a key is conflict saying what it needs; the record stays.
        client.call("providers.configure", slug="alpha", provider_code="openai_audio", config={})
        err = client.error("voice.stt", slug="alpha", audio_base64=b64(wav), engine="openai")
        assert err.name == "conflict" and "api_key" in err.message
        configure(client, server)
        client.call("secrets.set", slug="alpha", provider_code="openai_audio", secret_name="api_key",
                    value="sk-loopback-wrong-key-0123456789")
        before = {t: rows(app, t) for t in ("assets", "chat_messages", "agent_instructions", "cost_events")}
        audio_api.say("export the project")
        err = client.error("voice.stt", slug="alpha", audio_base64=b64(wav), engine="openai",
                           session_id=session["id"])
        assert err.name == "provider_auth_failed" and err.details["http_status"] == 401
        assert "0123456789" not in err.message
        failed = [r for r in rows(app, "voice_requests") if r["status"] == "failed"]
        assert len(failed) == 2 and all(r["latency_ms"] is not None for r in failed)
        last = max(failed, key=lambda r: r["created_at"])
        assert last["meta_json"]["error"]["name"] == "provider_auth_failed" and last["message_id"] is None
        assert last["provider_code"] == "openai_audio" and last["session_id"] == session["id"]
        after = {t: rows(app, t) for t in before}
        assert after["chat_messages"] == before["chat_messages"] == []
        assert after["agent_instructions"] == [] and after["cost_events"] == []
        assert [a["id"] for a in after["assets"]] == [a["id"] for a in before["assets"]]  # the same input, reused
        assert audio_api.transcripts  # never answered: refused at the key
        # Unsupported or broken audio and unknown references: refused before anything is written.
        count = len(rows(app, "voice_requests"))
        for bad in (b"ID3\x03\x00" + b"\x00" * 400, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
                    b"RIFF\x00\x00\x00\x00WAVEjunk", b"not audio at all"):
            err = client.error("voice.stt", slug="alpha", audio_base64=b64(bad), engine="openai")
            assert err.name == "invalid_params", bad
        assert "audio/mpeg" in client.error("voice.stt", slug="alpha", audio_base64=b64(b"ID3\x03" + b"\x00" * 99),
                                            engine="openai").message
        assert client.error("voice.stt", slug="alpha", audio_base64="!!notbase64", engine="openai").name == \
            "invalid_params"
        assert client.error("voice.stt", slug="alpha", asset_id=str(uuid.uuid4()), engine="openai").name == \
            "not_found"
        assert client.error("voice.stt", slug="alpha", audio_base64=b64(wav), engine="openai",
                            session_id=str(uuid.uuid4())).name == "not_found"
        assert len(rows(app, "voice_requests")) == count
        assert len(rows(app, "assets")) == len(before["assets"])
    finally:
        app.close()


def test_vosk_without_a_model_is_conflict_naming_what_to_install(app, client, project):
    wav = encode(tone(0.5, 16000, 1), 16000, "WAV", "PCM_16")
    err = client.error("voice.stt", slug="alpha", audio_base64=b64(wav))  # default engine: vosk
    assert err.name == "conflict" and "install" in err.message
    [req] = rows(app, "voice_requests")
    assert (req["status"], req["provider_code"]) == ("failed", "vosk")
    assert req["meta_json"]["error"]["name"] == "conflict" and req["input_asset_id"]


def test_another_projects_request_is_not_found(app, client, project):
    client.call("projects.create", slug="beta", name="Beta")
    mine = client.call("voice.tts", slug="alpha", text="one two three")["request"]
    assert client.call("voice.requests.get", slug="alpha", request_id=mine["id"])["id"] == mine["id"]
    assert client.error("voice.requests.get", slug="beta", request_id=mine["id"]).name == "not_found"
    assert client.error("voice.requests.get", slug="alpha", request_id=str(uuid.uuid4())).name == "not_found"
