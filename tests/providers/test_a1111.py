"""The `a1111` connector through its real HTTP client against a loopback AUTOMATIC1111 / Forge webui API."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time

import httpx2
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from iat.app import App
from iat.errors import (
    ProviderAuthFailed, ProviderBadRequest, ProviderError, ProviderTimeout, ProviderUnavailable, RateLimited,
)
from iat.plugins import LazyRegistry
from iat.providers import default_providers
from iat.providers.a1111 import A1111Config, A1111Provider, checkpoint_aliases
from iat.providers.base import Account, Cancelled, GenerateRequest, ImageProvider, ReferenceImage
from iat.settings import Settings

from support import Client, assert_partial_after_three, finished_run

from vendors.a1111 import A1111State, checkpoint, make_app, render
from vendors.loopback import Fault, LoopbackServer

TXT2IMG = "/sdapi/v1/txt2img"
IMG2IMG = "/sdapi/v1/img2img"
SD15 = "v1-5-pruned-emaonly.safetensors"


@pytest.fixture
def state() -> A1111State:
    return A1111State()


@pytest.fixture
def server(state: A1111State):
    with LoopbackServer(make_app(state)) as srv:
        yield srv


@pytest.fixture
def provider() -> A1111Provider:
    return A1111Provider()


def account(server: LoopbackServer | str, secrets: dict | None = None, **config) -> Account:
    url = server if isinstance(server, str) else server.url
    return Account("a1111", A1111Config(endpoint=url, **config), secrets or {})


def request(mode: str = "text2img", *, prompt: str = "a lighthouse at dusk", width: int = 256, height: int = 192,
            seed: int | None = 1234, init: bytes | None = None, params: dict | None = None, **extra) -> GenerateRequest:
    return GenerateRequest(mode=mode, stage="style_lock" if mode == "text2img" else "light_time", prompt=prompt,
                           negative_prompt="blurry", width=width, height=height, seed=seed, init_image=init,
                           params=params or {}, **extra)


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def server_picture(prompt: str, seed: int, width: int, height: int, ckpt=None, negative: str = "blurry"):
    ckpt = ckpt or checkpoint(SD15)
    return np.clip(render(prompt, negative, seed, width, height, ckpt.shorthash) + 0.5, 0, 255).astype(np.int16)


def png_of(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def generations(state: A1111State) -> list[dict]:
    return [body for _, body in state.received]


# --- success ---


def test_txt2img_sends_the_documented_request_and_returns_the_webuis_picture(server, state, provider):
    acct = account(server, model=SD15, pricing={"usd_per_image": 0.002}, sampler_name="Euler a",
                   scheduler="Karras")
    result = provider.generate(request(params={"steps": 12, "cfg": 5.5, "cutout": True}), acct)

    (sent,) = generations(state)
    assert sent["prompt"] == "a lighthouse at dusk" and sent["negative_prompt"] == "blurry"
    assert (sent["seed"], sent["width"], sent["height"]) == (1234, 256, 192)
    assert (sent["steps"], sent["cfg_scale"], sent["sampler_name"], sent["scheduler"]) == (12, 5.5, "Euler a", "Karras")
    assert (sent["batch_size"], sent["n_iter"]) == (1, 1)
    assert sent["override_settings"] == {"sd_model_checkpoint": SD15}
    assert sent["override_settings_restore_afterwards"] is True
    assert sent["send_images"] is True and sent["save_images"] is False
    assert sent["force_task_id"].startswith("task(iat-")
    assert "cutout" not in sent and "init_images" not in sent

    assert (result.width, result.height, result.seed, result.http_status) == (256, 192, 1234, 200)
    assert result.model == "v1-5-pruned-emaonly"  # the info's sd_model_name
    assert np.array_equal(pixels(result.image), server_picture("a lighthouse at dusk", 1234, 256, 192))
    assert result.usage["cost_usd"] == 0.002 and result.usage["source"] == "pricing"
    assert result.usage["units"] == 1.0 and result.usage["currency"] == "USD"
    assert result.usage["steps"] == 12 and result.usage["sampler_name"] == "Euler a"
    assert result.usage["sd_model_hash"] == checkpoint(SD15).shorthash


def test_no_model_configured_uses_the_loaded_checkpoint_and_the_config_defaults(server, state, provider):
    result = provider.generate(request(), account(server))
    (sent,) = generations(state)
    assert sent["override_settings"] == {}
    assert (sent["steps"], sent["cfg_scale"], sent["sampler_name"]) == (25, 7.0, "DPM++ 2M")
    assert server.requests_to("/sdapi/v1/sd-models") == 0  # nothing to resolve
    assert result.model == "v1-5-pruned-emaonly"


def test_no_seed_sends_minus_one_and_reports_the_seed_the_webui_drew(server, state, provider):
    result = provider.generate(request(seed=None), account(server))
    assert generations(state)[0]["seed"] == -1
    assert 0 <= result.seed < 4294967294
    # The picture is the one of that seed: the seed reported is the one really used.
    assert np.array_equal(pixels(result.image), server_picture("a lighthouse at dusk", result.seed, 256, 192))


def test_a_size_off_the_latent_grid_comes_back_resized_to_the_size_asked(server, state, provider):
    result = provider.generate(request(width=301, height=203), account(server))
    assert (result.width, result.height) == (301, 203)
    got = pixels(result.image)
    assert got.shape == (203, 301, 3)
    webui = server_picture("a lighthouse at dusk", 1234, 296, 200)  # floored to multiples of 8 by the webui
    expected = np.asarray(Image.fromarray(webui.astype(np.uint8)).resize((301, 203), Image.Resampling.LANCZOS),
                          dtype=np.int16)
    assert np.array_equal(got, expected)


def test_img2img_sends_the_init_image_and_the_stage_strength(server, state, provider):
    rng = np.random.default_rng(3)
    init_pixels = rng.integers(0, 256, (192, 256, 3))
    init = png_of(init_pixels)
    acct = account(server, denoising_strength=0.6, resize_mode=1)

    kept = provider.generate(request("img2img", init=init, params={"strength": 0.0}), acct)
    (sent,) = generations(state)
    assert state.received[0][0] == IMG2IMG
    assert base64.b64decode(sent["init_images"][0]) == init  # the very bytes of the previous stage
    assert sent["denoising_strength"] == 0.0 and sent["resize_mode"] == 1
    assert np.array_equal(pixels(kept.image), init_pixels)  # strength 0: the webui gives the input back

    half = provider.generate(request("img2img", init=init), acct)
    assert generations(state)[1]["denoising_strength"] == 0.6  # the account's default
    webui = server_picture("a lighthouse at dusk", 1234, 256, 192).astype(np.float32)
    blended = np.clip(init_pixels + (webui - init_pixels) * np.float32(0.6) + 0.5, 0, 255).astype(np.int16)
    assert np.abs(pixels(half.image) - blended).max() <= 1


def test_reference_images_are_not_sent_and_the_usage_says_so(server, state, provider):
    ref = ReferenceImage(data=png_of(np.zeros((16, 16, 3))), weight=1.0)
    result = provider.generate(request(reference_images=(ref, ref)), account(server))
    (sent,) = generations(state)
    assert "alwayson_scripts" not in sent and sent.get("script_name") is None
    assert result.usage["reference_images_ignored"] == 2
    assert "reference images" in result.usage["note"]


def test_jpeg_samples_are_read_and_returned_as_png(server, state, provider):
    state.samples_format = "jpg"
    result = provider.generate(request(), account(server))
    webui = server_picture("a lighthouse at dusk", 1234, 256, 192)
    assert np.abs(pixels(result.image) - webui).mean() < 6  # the JPEG's loss only


# --- checkpoints ---


@pytest.mark.parametrize("name", [
    "sdxl/juggernautXL_v9.safetensors",                 # the file's name under the models folder
    "sdxl_juggernautXL_v9",                             # model_name
    "juggernautXL_v9",                                  # the file's stem
    checkpoint("sdxl/juggernautXL_v9.safetensors").title,
    checkpoint("sdxl/juggernautXL_v9.safetensors").shorthash,
    checkpoint("sdxl/juggernautXL_v9.safetensors").sha256,
    f"juggernautXL_v9 [{checkpoint('sdxl/juggernautXL_v9.safetensors').shorthash}]",
])
def test_a_checkpoint_is_found_by_any_name_the_webui_takes(server, state, provider, name):
    result = provider.generate(request(), account(server, model=name))
    assert result.model == "juggernautXL_v9"
    assert result.usage["sd_model_hash"] == checkpoint("sdxl/juggernautXL_v9.safetensors").shorthash
    assert generations(state)[0]["override_settings"] == {"sd_model_checkpoint": name}


def test_aliases_match_the_webuis_own_list():
    ckpt = checkpoint("sdxl/juggernautXL_v9.safetensors")
    listed = checkpoint_aliases(ckpt.item())
    assert listed == set(ckpt.ids()) - {ckpt.legacy_hash, f"{ckpt.relpath} [{ckpt.legacy_hash}]"}


def test_an_unknown_checkpoint_is_refused_before_anything_is_generated(server, state, provider):
    with pytest.raises(ProviderBadRequest) as info:
        provider.generate(request(), account(server, model="dreamshaper_8"))
    assert "dreamshaper_8" in info.value.message and SD15 in info.value.message
    assert info.value.details["models"][0].startswith(SD15)
    assert server.requests_to(TXT2IMG) == 0


def test_the_checkpoint_list_is_cached_and_read_again_for_a_new_model(server, state, provider):
    acct = account(server, model=SD15)
    provider.generate(request(), acct)
    provider.generate(request(), acct)
    assert server.requests_to("/sdapi/v1/sd-models") == 1
    new = checkpoint("dreamshaper_8.safetensors")
    state.checkpoints = (*state.checkpoints, new)  # a file dropped into the models folder meanwhile
    result = provider.generate(request(), account(server, model="dreamshaper_8"))
    assert result.model == "dreamshaper_8"
    assert server.requests_to("/sdapi/v1/sd-models") == 2


def test_a_silent_fallback_to_another_checkpoint_is_caught(server, state, provider):
    acct = account(server, model="juggernautXL_v9")
    provider.generate(request(), acct)
    state.checkpoints = (checkpoint(SD15),)  # the file is gone; A1111 drops the override and uses the loaded one
    with pytest.raises(ProviderBadRequest) as info:
        provider.generate(request(), acct)
    assert "v1-5-pruned-emaonly" in info.value.message and "juggernautXL_v9" in info.value.message
    assert info.value.details["used"] == "v1-5-pruned-emaonly"
    with pytest.raises(ProviderBadRequest):  # the list is read again: now refused before generating
        provider.generate(request(), acct)
    assert server.requests_to(TXT2IMG) == 2


def test_forge_refuses_an_unknown_checkpoint_with_a_500_that_is_a_bad_request(server, state, provider):
    state.flavor = "forge"
    acct = account(server, model="juggernautXL_v9")
    provider.generate(request(), acct)
    state.checkpoints = (checkpoint(SD15),)
    with pytest.raises(ProviderBadRequest) as info:
        provider.generate(request(), acct)
    assert "RuntimeError: model 'juggernautXL_v9' not found" in info.value.message
    assert info.value.details["http_status"] == 500


# --- the webui's failures ---


def test_fastapi_validation_422_is_a_bad_request_with_the_fields(server, state, provider):
    # The body the loopback webui really gives for a wrong type, replayed in front of the connector's call.
    answer = httpx2.post(server.url + TXT2IMG, json={"steps": "many", "width": [1]}, trust_env=False)
    assert answer.status_code == 422
    body = answer.json()
    server.faults.add(TXT2IMG, Fault.status(422, json_body=body))
    with pytest.raises(ProviderBadRequest) as info:
        provider.generate(request(), account(server))
    assert "body.steps: value is not a valid integer" in info.value.message
    assert "body.width: value is not a valid integer" in info.value.message
    assert info.value.details["http_status"] == 422
    assert info.value.details["validation_errors"][0] == {"loc": ["body", "steps"],
                                                          "msg": "value is not a valid integer",
                                                          "type": "type_error.integer"}
    assert not info.value.retryable


def test_a_failure_inside_sampling_is_unavailable_with_the_webuis_message(server, state, provider):
    with pytest.raises(ProviderUnavailable) as info:
        provider.generate(request(prompt="a huge __oom__ panorama"), account(server))
    assert "OutOfMemoryError: CUDA out of memory" in info.value.message
    assert info.value.details["http_status"] == 500 and info.value.details["vendor_error"] == "OutOfMemoryError"
    assert info.value.retryable
    # The next call goes through: the webui itself is fine.
    assert provider.generate(request(), account(server)).seed == 1234


def test_an_unreadable_init_image_is_the_webuis_500(server, state, provider):
    with pytest.raises(ProviderUnavailable) as info:
        provider.generate(request("img2img", init=b"not a picture at all"), account(server))
    assert "Invalid encoded image" in info.value.message
    assert info.value.details["vendor_error"] == "HTTPException"


def test_api_auth_needs_the_username_and_password(server, state, provider):
    state.users = {"studio": "s3cret-pass"}
    with pytest.raises(ProviderAuthFailed) as missing:
        provider.generate(request(), account(server))
    assert "Not authenticated" in missing.value.message and missing.value.details["http_status"] == 401
    with pytest.raises(ProviderAuthFailed) as wrong:
        provider.generate(request(), account(server, {"username": "studio", "password": "wrong-pass"}))
    assert "Incorrect username or password" in wrong.value.message
    assert "--api-auth" in wrong.value.message and "wrong-pass" not in wrong.value.message
    assert server.requests_to(TXT2IMG) == 2 and not state.received
    result = provider.generate(request(), account(server, {"username": "studio", "password": "s3cret-pass"}))
    assert result.seed == 1234 and len(state.received) == 1


def test_a_password_without_a_username_is_not_ready(provider):
    acct = Account("a1111", A1111Config(), {"password": "x"})
    status = provider.status(acct)
    assert not status.ready and "username" in status.reason
    assert provider.status(Account("a1111", A1111Config())).ready


def test_a_webui_started_without_api_tells_how_to_enable_it(server, state, provider):
    state.api = False
    with pytest.raises(ProviderBadRequest) as info:
        provider.generate(request(), account(server))
    assert "--api" in info.value.message and info.value.details["http_status"] == 404
    with pytest.raises(ProviderBadRequest) as probed:
        provider.probe(account(server), timeout=5)
    assert "--api" in probed.value.message


def test_a_webui_that_is_not_running_is_unavailable(provider):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProviderUnavailable) as info:
        provider.generate(request(), account(f"http://127.0.0.1:{port}"), timeout=5)
    assert "not reachable" in info.value.message


def test_rate_limited_by_a_proxy_in_front_keeps_retry_after(server, provider):
    server.faults.add(TXT2IMG, Fault.status(429, json_body={"detail": "Too Many Requests"},
                                            headers={"Retry-After": "7"}))
    with pytest.raises(RateLimited) as info:
        provider.generate(request(), account(server))
    assert info.value.retry_after == 7.0 and info.value.details["http_status"] == 429


def test_a_body_that_is_not_json_is_a_broken_answer(server, provider):
    server.faults.add(TXT2IMG, Fault.malformed())
    with pytest.raises(ProviderError) as info:
        provider.generate(request(), account(server))
    assert type(info.value) is ProviderError and not info.value.retryable
    assert info.value.details["http_status"] == 200


def test_a_truncated_or_dropped_answer_is_unavailable(server, provider):
    server.faults.add(TXT2IMG, Fault.truncate(), Fault.drop())
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            provider.generate(request(), account(server))
    assert server.requests_to(TXT2IMG) == 2


@pytest.mark.parametrize("body, words", [
    ({"parameters": {}, "info": "{}"}, "without an image"),
    ({"images": [], "parameters": {}, "info": "{}"}, "without an image"),
    ({"images": ["%%% not base64 %%%"], "parameters": {}, "info": "{}"}, "not base64"),
    ({"images": [base64.b64encode(b"GIF89a but not really").decode()], "parameters": {}, "info": "{}"},
     "cannot read"),
    ({"images": [base64.b64encode(png_of(np.zeros((8, 8, 3)))).decode()], "parameters": {}}, "info"),
    ({"images": [base64.b64encode(png_of(np.zeros((8, 8, 3)))).decode()], "parameters": {},
      "info": json.dumps({"seed": "soon"})}, "seed"),
    (["not", "an", "object"], "not an object"),
])
def test_an_answer_without_a_usable_image_or_info_is_a_broken_answer(server, provider, body, words):
    server.faults.add(TXT2IMG, Fault.status(200, json_body=body))
    with pytest.raises(ProviderError) as info:
        provider.generate(request(), account(server))
    assert type(info.value) is ProviderError and words in info.value.message


def test_a_webui_that_does_not_answer_in_time_is_a_timeout(server, provider):
    server.faults.add(TXT2IMG, Fault.delay(3.0))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        provider.generate(request(), account(server), timeout=0.4)
    assert time.monotonic() - started < 2.0


def test_a_call_that_timed_out_while_queued_is_interrupted_when_it_starts(server, state, provider):
    state.step_s = 0.04
    theirs = threading.Thread(target=lambda: httpx2.post(server.url + TXT2IMG, trust_env=False, timeout=30,
                                                         json={"prompt": "theirs", "steps": 30,
                                                               "force_task_id": "task(theirs)"}))
    theirs.start()
    _wait(lambda: state.current_task == "task(theirs)", 10)
    with pytest.raises(ProviderTimeout):
        provider.generate(request(params={"steps": 30}), account(server), timeout=0.5)
    theirs.join(30)
    _wait(lambda: len(state.answered) == 2, 10)
    assert state.answered[0] == ("task(theirs)", 30, False)
    task, done, interrupted = state.answered[1]
    assert task.startswith("task(iat-") and interrupted and done < 30
    assert state.interrupts == [task]


# --- cancel ---


def _wait(predicate, seconds: float) -> None:
    until = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > until:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def _generate_in_thread(provider, req, acct, cancel):
    box: dict = {}

    def run():
        try:
            box["result"] = provider.generate(req, acct, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def test_cancel_interrupts_the_running_job(server, state, provider):
    state.step_s = 0.05
    cancel = threading.Event()
    thread, box = _generate_in_thread(provider, request(params={"steps": 200}), account(server), cancel)
    _wait(lambda: state.sampling_step >= 3, 10)
    cancelled_at = time.monotonic()
    cancel.set()
    thread.join(10)
    assert isinstance(box.get("error"), Cancelled)
    assert time.monotonic() - cancelled_at < 1.5
    task = generations(state)[0]["force_task_id"]
    assert state.interrupts == [task]
    _wait(lambda: state.answered, 10)
    assert state.answered[0][0] == task and state.answered[0][2] and state.answered[0][1] < 200


def test_cancel_while_queued_leaves_another_callers_job_alone(server, state, provider):
    state.step_s = 0.04
    other: dict = {}

    def other_caller():  # someone else's job, started first: it holds the webui's queue lock
        other["response"] = httpx2.post(server.url + TXT2IMG, json={"prompt": "theirs", "steps": 30,
                                                                    "force_task_id": "task(theirs)"},
                                        timeout=30, trust_env=False)

    theirs = threading.Thread(target=other_caller)
    theirs.start()
    _wait(lambda: state.current_task == "task(theirs)", 10)
    cancel = threading.Event()
    thread, box = _generate_in_thread(provider, request(params={"steps": 30}), account(server), cancel)
    _wait(lambda: any(t.startswith("task(iat-") for t in state.pending), 10)
    cancel.set()
    thread.join(10)
    assert isinstance(box.get("error"), Cancelled)
    theirs.join(30)
    assert other["response"].status_code == 200
    assert state.answered[0] == ("task(theirs)", 30, False)  # not interrupted
    # Ours starts once theirs is done, and is interrupted as soon as it does.
    _wait(lambda: len(state.answered) == 2, 10)
    ours = state.answered[1]
    assert ours[0].startswith("task(iat-") and ours[2] and ours[1] < 30
    assert state.interrupts == [ours[0]]


def test_cancel_on_an_api_only_webui_interrupts_blindly(server, state, provider):
    state.nowebui, state.step_s = True, 0.05
    cancel = threading.Event()
    thread, box = _generate_in_thread(provider, request(params={"steps": 200}), account(server), cancel)
    _wait(lambda: state.sampling_step >= 2, 10)
    cancel.set()
    thread.join(10)
    assert isinstance(box.get("error"), Cancelled)
    assert state.interrupts == [generations(state)[0]["force_task_id"]]


def test_cancel_before_the_call_sends_nothing(server, provider):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        provider.generate(request(), account(server, model=SD15), cancel=cancel)
    assert server.log == []


# --- probe, config, parameters, registry ---


def test_probe_lists_the_checkpoints_and_checks_the_configured_one(server, state, provider):
    found = provider.probe(account(server, model="juggernautXL_v9"), timeout=5)
    assert found["model"] == checkpoint("sdxl/juggernautXL_v9.safetensors").title
    assert found["model_count"] == 2 and found["models"][0] == checkpoint(SD15).title
    with pytest.raises(ProviderBadRequest) as info:
        provider.probe(account(server, model="nope_v1"), timeout=5)
    assert "nope_v1" in info.value.message
    assert server.requests_to(TXT2IMG) == 0 and server.requests_to("/sdapi/v1/sd-models") == 2
    state.users = {"studio": "pw"}
    with pytest.raises(ProviderAuthFailed):
        provider.probe(account(server), timeout=5)
    assert provider.probe(account(server, {"username": "studio", "password": "pw"}), timeout=5)["model"] is None


def test_config_defaults_and_refusals():
    config = A1111Config()
    assert config.endpoint == "http://127.0.0.1:7860" and config.model is None
    assert config.pricing.usd_per_image == 0.0
    assert A1111Config(endpoint="http://gpu-box:7860/").endpoint == "http://gpu-box:7860"
    for bad in ({"endpoint": "ftp://gpu-box"}, {"endpoint": "http://x/?a=1"}, {"stepz": 20}, {"steps": 0},
                {"denoising_strength": 1.5}, {"resize_mode": 4}, {"sampler_name": ""}, {"model": ""}):
        with pytest.raises(ValidationError):
            A1111Config(**bad)


@pytest.mark.parametrize("params", [{"steps": "many"}, {"steps": 2.5}, {"steps": True}, {"cfg": "high"},
                                    {"strength": 1.2}, {"sampler": ""}, {"scheduler": 3}])
def test_bad_stage_parameters_are_refused_before_sending(server, provider, params):
    with pytest.raises(ProviderBadRequest) as info:
        provider.generate(request(params=params), account(server))
    assert info.value.details["param"] == next(iter(params))
    assert server.log == []


def test_registered_and_loaded_lazily():
    assert default_providers()["a1111"] == "iat.providers.a1111:A1111Provider"
    registry = LazyRegistry("provider", default_providers())
    instance = registry.get("a1111")
    assert isinstance(instance, ImageProvider) and instance.code == "a1111"
    assert instance.default_account().config.endpoint == "http://127.0.0.1:7860"
    assert instance.estimate(request(), account("http://x", pricing={"usd_per_image": 0.01})).cost_usd == 0.01


# --- the loopback webui itself: what the connector is tested against is what the webui does ---


def test_loopback_validates_and_answers_like_the_webui(server, state):
    post = lambda path, **kw: httpx2.post(server.url + path, trust_env=False, **kw)  # noqa: E731
    broken = post(TXT2IMG, content=b"{\"prompt\": ", headers={"Content-Type": "application/json"})
    assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "value_error.jsondecode"
    assert post(TXT2IMG, json=[1]).json()["detail"][0]["msg"] == "value is not a valid dict"

    answer = post(TXT2IMG, json={"prompt": "x", "steps": "3", "width": 64.9, "height": 64, "seed": -1,
                                 "sampler_name": "No Such Sampler", "unknown_field": {"ignored": True}})
    assert answer.status_code == 200
    body = answer.json()
    info = json.loads(body["info"])
    assert 0 <= info["seed"] < 4294967294 and info["all_seeds"] == [info["seed"]]
    assert info["steps"] == 3 and info["width"] == 64 and info["sampler_name"] == "DPM++ 2M"
    assert info["sd_model_name"] == "v1-5-pruned-emaonly" and body["parameters"]["steps"] == 3
    with Image.open(io.BytesIO(base64.b64decode(body["images"][0]))) as im:
        assert im.format == "PNG" and im.size == (64, 64) and "Seed: " in im.info["parameters"]

    missing = post(IMG2IMG, json={"prompt": "x"})
    assert missing.status_code == 404
    assert missing.json() == {"error": "HTTPException", "detail": "Init image not found", "body": "",
                              "errors": "404: Init image not found"}
    script = post(TXT2IMG, json={"alwayson_scripts": {"controlnet": {"args": []}}})
    assert script.status_code == 422 and script.json()["detail"] == "always on script controlnet not found"
    assert httpx2.get(server.url + "/sdapi/v1/nothing", trust_env=False).json() == {"detail": "Not Found"}
    progress = post("/internal/progress", json={"id_task": "task(unknown)"}).json()
    assert progress["active"] is False and progress["queued"] is False and progress["completed"] is False


# --- runs through the ledger ---


@pytest.fixture
def studio(tmp_path, server, state):
    """An App whose secrets are sealed with a passphrase (no keyring needed), a project on the loopback webui,
    which asks for --api-auth credentials (stored as the project's secrets)."""
    state.users = {"studio": "webui-pass"}
    app = App(Settings.from_env({"IAT_SECRETS_PASSPHRASE": "a1111 connector tests"}, home=tmp_path / "home"))
    client = Client(app)
    client.call("projects.create", slug="alpha", name="Alpha")
    client.call("providers.configure", slug="alpha", provider_code="a1111",
                config={"endpoint": server.url, "model": SD15, "backoff_s": 0.01, "timeout_s": 20,
                        "pricing": {"usd_per_image": 0.0015}})
    client.call("secrets.set", slug="alpha", provider_code="a1111", secret_name="username", value="studio")
    client.call("secrets.set", slug="alpha", provider_code="a1111", secret_name="password", value="webui-pass")
    yield app, client
    app.close()


def _run(app, client, **params) -> tuple[dict, list[dict], list[dict], dict]:
    return finished_run(app, client, "a1111", **params)


def _reconfigure(client, server, **config) -> None:
    client.call("providers.configure", slug="alpha", provider_code="a1111",
                config={"endpoint": server.url, "model": SD15, "backoff_s": 0.01, "timeout_s": 20,
                        "pricing": {"usd_per_image": 0.0015}, **config})


def test_check_probes_the_webui_with_the_stored_credentials(studio, server):
    app, client = studio
    (item,) = client.call("providers.check", slug="alpha", provider_code="a1111")["items"]
    assert item["ready"] and item["probe"]["info"]["model"] == checkpoint(SD15).title
    _reconfigure(client, server, model="missing_v2")
    (item,) = client.call("providers.check", slug="alpha", provider_code="a1111")["items"]
    assert not item["ready"] and "missing_v2" in item["reason"]


def test_a_run_records_provider_model_seed_and_cost_of_every_candidate(studio, state):
    app, client = studio
    run, candidates, calls, costs = _run(
        app, client, shots=[{"job_key": "s1", "scene": "a fox in the street"},
                            {"job_key": "s2", "scene": "a fox on a roof"}],
        candidates=2, stages=["style_lock", "light_time"])
    assert run["status"] == "done" and run["provider_code"] == "a1111"
    paths = [path for path, _ in state.received]
    assert paths.count(TXT2IMG) == 4 and paths.count(IMG2IMG) == 4  # light_time works on the style-lock output
    assert all(body["override_settings"] == {"sd_model_checkpoint": SD15} for _, body in state.received)
    assert {body["denoising_strength"] for path, body in state.received if path == IMG2IMG} == {0.45}
    assert len(candidates) == 4 and len(calls) == 8 and {c["outcome"] for c in calls} == {"ok"}
    seeds = set()
    for cand in candidates:
        meta = cand["meta_json"]
        assert meta["provider"] == "a1111" and meta["model"] == "v1-5-pruned-emaonly"
        assert [s["stage"] for s in meta["stages"]] == ["style_lock", "light_time"]
        assert all(s["seed"] == meta["seed"] for s in meta["stages"])  # the webui used the seed it was given
        assert all(s["usage"]["sd_model_hash"] == checkpoint(SD15).shorthash for s in meta["stages"])
        assert meta["cost_usd"] == pytest.approx(0.003)
        seeds.add(meta["seed"])
    assert len(seeds) == 4
    assert costs["events"] == 8 and costs["groups"][0]["key"] == run["id"]
    assert costs["cost_usd"] == pytest.approx(8 * 0.0015)


def test_a_webui_failing_halfway_ends_the_run_partial_with_every_failed_attempt_recorded(studio, server, state):
    app, client = studio
    _reconfigure(client, server, max_attempts=2, concurrency=1)
    state.fail_after = 3  # three pictures, then CUDA out of memory for everything
    run, candidates, calls, costs = _run(
        app, client, shots=[{"job_key": "s1", "scene": "a fox"}, {"job_key": "s2", "scene": "a cat"}],
        candidates=1, stages=["style_lock", "light_time"])
    assert_partial_after_three(run, candidates, calls, costs)


def test_429_with_retry_after_then_500_then_success_is_three_attempts_and_one_cost(studio, server, state):
    app, client = studio
    server.faults.add(TXT2IMG, Fault.status(429, json_body={"detail": "Too Many Requests"},
                                            headers={"Retry-After": "1"}),
                      Fault.status(500, json_body={"error": "OutOfMemoryError", "detail": "", "body": "",
                                                   "errors": "CUDA out of memory"}))
    started = time.monotonic()
    run, candidates, calls, costs = _run(app, client, shots=[{"job_key": "s1", "scene": "a fox"}], candidates=1,
                                         stages=["style_lock"])
    assert run["status"] == "done" and time.monotonic() - started >= 1.0  # Retry-After was honoured
    calls = sorted(calls, key=lambda c: c["attempt"])
    assert [(c["attempt"], c["outcome"], c["http_status"], c["error_code"]) for c in calls] == [
        (1, "error", 429, "rate_limited"), (2, "error", 500, "provider_unavailable"), (3, "ok", 200, None)]
    assert len({c["call_id"] for c in calls}) == 1
    assert costs["events"] == 1 and costs["cost_usd"] == pytest.approx(0.0015)
    assert len(state.received) == 1  # the two failures never reached the webui's handler
