"""The `openai_audio` provider and the openai voice engines: the real openai SDK against the loopback audio API
(tests/vendors/openai_audio.py), through the ledger: retries on 429 (Retry-After) and 500, costs per minute and per
character, whisper-1's billed duration, streamed speech with its first audio, readiness and the probe."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
import soundfile

from iat.providers.openai_audio import STT_USD_PER_MINUTE, AudioConfig, usd_per_1m_chars, usd_per_minute
from iat.voice import service
from support import Client
from vendors.loopback import LoopbackServer
from vendors.openai_audio import SPEECH_RATE, AudioState, make_app, speech_seconds
from vendors.openai_chat import rate_limited, server_error

TRANSCRIBE = "/v1/audio/transcriptions"
SPEECH = "/v1/audio/speech"


@pytest.fixture
def audio_api() -> AudioState:
    return AudioState()


@pytest.fixture
def server(audio_api):
    with LoopbackServer(make_app(audio_api)) as srv:
        yield srv


def configure(client: Client, server, **config) -> dict:
    return client.call("providers.configure", slug="alpha", provider_code="openai_audio", config={
        "endpoint": server.url + "/v1", "backoff_s": 0.01, "max_backoff_s": 2, "timeout_s": 10,
        "pricing": {"usd_per_minute": 0.6, "usd_per_1m_chars": 30.0}, **config})


def wav(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    soundfile.write(buf, 0.3 * np.sin(2 * math.pi * 300 * t), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def stt(client: Client, data: bytes, **kw) -> dict:
    return client.call("voice.stt", slug="alpha", audio_base64=base64.b64encode(data).decode(), engine="openai", **kw)


def calls(client: Client, operation: str) -> list[tuple]:
    items = client.call("providers.calls", slug="alpha", provider_code="openai_audio")["items"]
    return [(c["attempt"], c["outcome"], c["error_code"], c["http_status"])
            for c in sorted(items, key=lambda c: (c["created_at"], c["attempt"])) if c["operation_code"] == operation]


def costs(app, operation: str) -> list[dict]:
    from iat.db.models import CostEvent

    handle = app.projects.open("alpha")
    app.ledger.flush(handle)
    return handle.store.read(lambda: list(CostEvent.select().where(CostEvent.operation_code == operation).dicts()))


def test_openai_audio_is_a_voice_provider_priced_at_list_prices(app, client, project):
    item = client.call("providers.get", slug="alpha", provider_code="openai_audio")
    assert not item["ready"] and "api_key" in item["reason"]  # api.openai.com needs a key
    config = AudioConfig()
    assert (config.stt_model, config.tts_model, config.voice) == ("gpt-4o-mini-transcribe", "gpt-4o-mini-tts",
                                                                   "alloy")
    assert usd_per_minute(config) == 0.003 and usd_per_1m_chars(config) == 15.0
    assert usd_per_minute(AudioConfig(stt_model="whisper-1")) == 0.006
    assert usd_per_minute(AudioConfig(stt_model="some-new-transcriber")) == max(STT_USD_PER_MINUTE.values())
    local = AudioConfig(endpoint="http://127.0.0.1:9/v1")
    assert usd_per_minute(local) == 0.0 and usd_per_1m_chars(local) == 0.0  # a local server costs nothing
    err = client.error("runs.start", slug="alpha", shots=[{"job_key": "a", "scene": "x"}], provider="openai_audio")
    assert err.name == "invalid_params"  # never a run's image provider


def test_a_rate_limit_and_a_server_error_are_retried_and_the_call_costed_once(app, client, project, server,
                                                                             audio_api):
    configure(client, server)
    server.faults.add(TRANSCRIBE, rate_limited(1), server_error())
    audio_api.say("render shot three")
    out = stt(client, wav(3.0, 22050))
    assert out["transcript"]["text"] == "render shot three" and out["request"]["status"] == "done"
    assert calls(client, "voice.stt") == [(1, "error", "rate_limited", 429), (2, "error", "provider_unavailable", 500),
                                          (3, "ok", None, 200)]
    [cost] = costs(app, "voice.stt")
    assert float(cost["cost_usd"]) == pytest.approx(3.0 / 60 * 0.6, rel=1e-3)
    assert cost["meta_json"]["audio_seconds"] == pytest.approx(3.0, abs=0.01)
    assert cost["meta_json"]["input_tokens"] > 0 and cost["meta_json"]["source"] == "pricing"
    assert out["request"]["meta_json"]["engine_meta"]["cost_usd"] == pytest.approx(float(cost["cost_usd"]))


def test_whisper_is_billed_for_the_duration_it_reports(app, client, project, server, audio_api):
    configure(client, server, stt_model="whisper-1")
    audio_api.say("export the project")
    stt(client, wav(2.2), language="en", grammar=True)
    [sent] = [r for r in audio_api.received if r["path"] == TRANSCRIBE]
    assert sent["fields"]["response_format"] == "verbose_json" and sent["fields"]["model"] == "whisper-1"
    assert "export" in sent["fields"]["prompt"]  # the grammar went as vocabulary hints
    [cost] = costs(app, "voice.stt")
    assert cost["meta_json"]["source"] == "vendor" and cost["meta_json"]["audio_seconds"] == 3  # whole seconds
    assert float(cost["cost_usd"]) == pytest.approx(3 / 60 * 0.6)


def test_speech_is_streamed_stored_and_costed_per_character(app, client, project, server, audio_api):
    configure(client, server, voice="coral")
    audio_api.chunk_bytes = 1024
    text = "Rendering shots one to three at dusk."
    out = client.call("voice.tts", slug="alpha", text=text, engine="openai")
    req, asset = out["request"], out["asset"]
    assert (req["provider_code"], req["status"]) == ("openai_audio", "done")
    assert req["meta_json"]["voice"] == "coral" and req["meta_json"]["model"] == "gpt-4o-mini-tts"
    assert req["meta_json"]["first_audio_ms"] is not None and req["meta_json"]["first_audio_ms"] <= req["latency_ms"]
    [sent] = [r for r in audio_api.received if r["path"] == SPEECH]
    assert sent["body"] == {"model": "gpt-4o-mini-tts", "voice": "coral", "input": text, "response_format": "wav"}
    data = base64.b64decode(client.call("assets.read", slug="alpha", asset_id=asset["id"])["data_base64"])
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")  # the streamed header's sizes repaired
    assert rate == SPEECH_RATE and len(samples) == round(speech_seconds(text) * SPEECH_RATE)
    [cost] = costs(app, "voice.tts")
    assert float(cost["cost_usd"]) == pytest.approx(len(text) * 30.0 / 1e6)
    assert calls(client, "voice.tts") == [(1, "ok", None, 200)]


def test_first_audio_comes_before_the_whole_answer(app, client, project, server, audio_api):
    import threading

    configure(client, server)
    audio_api.chunk_bytes = 512
    audio_api.hold_after_first = threading.Event()
    sent_at_first: list[int] = []

    def first_audio() -> None:
        sent_at_first.append(audio_api.chunks_sent)
        audio_api.hold_after_first.set()  # the server sends the rest only now

    text = "a long answer " * 20
    speech = service.engine_for("tts", "openai").synthesize(app, app.projects.open("alpha"), text,
                                                            on_first_audio=first_audio)
    assert sent_at_first == [1] and audio_api.chunks_sent > 10
    assert speech.duration_s == pytest.approx(speech_seconds(text), abs=0.01)


def test_the_probe_lists_the_models_and_a_wrong_key_is_refused(tmp_path, server, audio_api):
    from iat.app import App
    from iat.settings import Settings

    audio_api.api_key = "sk-loopback-audio-key"
    app = App(Settings.from_env({"IAT_SECRETS_PASSPHRASE": "audio tests"}, home=tmp_path / "keyed"))
    try:
        client = Client(app)
        client.call("projects.create", slug="alpha", name="Alpha")
        configure(client, server)
        client.call("secrets.set", slug="alpha", provider_code="openai_audio", secret_name="api_key",
                    value="sk-loopback-audio-key")
        [checked] = client.call("providers.check", slug="alpha", provider_code="openai_audio")["items"]
        assert checked["ready"] and checked["probe"]["ok"]
        assert checked["probe"]["info"]["stt_model_listed"] and checked["probe"]["info"]["tts_model_listed"]
        client.call("secrets.set", slug="alpha", provider_code="openai_audio", secret_name="api_key",
                    value="sk-loopback-wrong-key-987654")
        err = client.error("voice.tts", slug="alpha", text="hello", engine="openai")
        assert err.name == "provider_auth_failed" and "987654" not in err.message
        assert calls(client, "voice.tts") == [(1, "error", "provider_auth_failed", 401)]  # not retried
        assert costs(app, "voice.tts") == []
    finally:
        app.close()
