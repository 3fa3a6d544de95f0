"""The comfyui connector through its real client code (httpx2 + the websockets sync client) against a loopback
ComfyUI that validates and runs workflows as ComfyUI does (tests/vendors/comfyui.py)."""

from __future__ import annotations

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

from iat.errors import (
    ProviderAuthFailed, ProviderBadRequest, ProviderError, ProviderTimeout, ProviderUnavailable, RateLimited,
)
from iat.plugins import LazyRegistry
from iat.providers import comfyui_workflow as wf
from iat.providers import default_providers
from iat.providers.base import Account, Cancelled, GenerateRequest, ImageProvider, ReferenceImage, encode_png
from iat.providers.comfyui import ComfyUIConfig, ComfyUIProvider

from vendors.comfyui import ComfyState, make_app, render
from vendors.loopback import Fault, LoopbackServer

FIRST_CKPT = "sd_xl_base_1.0.safetensors"


@pytest.fixture
def comfy():
    state = ComfyState()
    with LoopbackServer(make_app(state)) as server:
        server.state = state
        yield server


def account(server, secrets=None, **config) -> Account:
    return Account("comfyui", ComfyUIConfig.model_validate({"endpoint": server.url, **config}), secrets or {})


def req(mode="text2img", stage="style_lock", *, prompt="storybook, a lighthouse", width=96, height=64, seed=11,
        init=None, **extra) -> GenerateRequest:
    return GenerateRequest(mode=mode, stage=stage, prompt=prompt, negative_prompt="blurry", width=width,
                           height=height, seed=seed, init_image=init, **extra)


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def a_png(width=96, height=64, colour=(200, 40, 90)) -> bytes:
    image = Image.new("RGB", (width, height), colour)
    image.paste((10, 220, 30), (width // 4, height // 4, width // 2, height // 2))
    return encode_png(image)


def sent_prompt(server, index=-1) -> dict:
    return server.state.prompts[index]["prompt"]


def in_thread(fn):
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def until(predicate, limit=20.0) -> None:
    end = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


# --- success ---


def test_registered_and_ready_without_secrets():
    provider = LazyRegistry("provider", default_providers()).get("comfyui")
    assert isinstance(provider, ImageProvider) and provider.code == "comfyui"
    assert provider.optional_secrets == ("api_key",) and provider.required_secrets == ()
    assert provider.status(provider.default_account()).ready
    assert provider.default_account().config.endpoint == "http://127.0.0.1:8188"
    paid = Account("comfyui", ComfyUIConfig(pricing={"usd_per_image": 0.004}))
    assert provider.estimate(req(), paid).cost_usd == 0.004


def test_text2img_runs_the_default_workflow_and_returns_the_servers_picture(comfy):
    result = ComfyUIProvider().generate(req(), account(comfy, pricing={"usd_per_image": 0.003}))
    # The picture is the one the server's KSampler made from the positive prompt, seed and size.
    expected = np.asarray(render("storybook, a lighthouse", 11, 96, 64), dtype=np.int16)
    assert np.array_equal(pixels(result.image), expected)
    assert (result.width, result.height, result.seed, result.model) == (96, 64, 11, FIRST_CKPT)
    assert result.http_status == 200
    assert result.usage["cost_usd"] == 0.003 and result.usage["units"] == 1.0
    assert result.usage["source"] == "pricing" and result.usage["currency"] == "USD"
    assert result.usage["prompt_id"] in comfy.state.history and result.usage["execution_ms"] >= 0
    # ComfyUI's SaveImage PNG carries the workflow in text chunks; the result is re-encoded without them.
    assert b"tEXt" not in result.image and b"iTXt" not in result.image
    # What was sent: the default graph with typed values, and the websocket's client id.
    body = comfy.state.prompts[0]
    graph = body["prompt"]
    assert graph["3"]["class_type"] == "KSampler" and graph["3"]["inputs"]["seed"] == 11
    assert graph["3"]["inputs"]["steps"] == 20 and graph["3"]["inputs"]["cfg"] == 7.0
    assert graph["3"]["inputs"]["denoise"] == 1.0 and graph["3"]["inputs"]["sampler_name"] == "euler"
    assert graph["5"]["inputs"] == {"width": 96, "height": 64, "batch_size": 1}
    assert graph["6"]["inputs"]["text"] == "storybook, a lighthouse" and graph["7"]["inputs"]["text"] == "blurry"
    assert graph["4"]["inputs"]["ckpt_name"] == FIRST_CKPT  # no model configured: the server's first checkpoint
    assert graph["9"]["inputs"]["filename_prefix"] == "iat/style_lock"
    assert body["client_id"] == comfy.state.ws_clients[0]
    # Completion came over the websocket, in ComfyUI's order, previews included; the history was read once.
    events = [e for e, _ in comfy.state.sent[body["client_id"]]]
    order = [e for e in events if e in ("execution_start", "execution_cached", "executed", "execution_success")]
    assert order == ["execution_start", "execution_cached", "executed", "execution_success"]
    assert "binary" in events and "progress" in events
    assert events[-1] == "executing" and comfy.state.sent[body["client_id"]][-1][1]["node"] is None
    assert comfy.requests_to("/history/") == 1 and comfy.requests_to("/view") == 1


def test_a_size_that_is_no_multiple_of_8_comes_back_exact(comfy):
    result = ComfyUIProvider().generate(req(width=100, height=60), account(comfy, model=FIRST_CKPT))
    assert sent_prompt(comfy)["5"]["inputs"]["width"] == 104 and sent_prompt(comfy)["5"]["inputs"]["height"] == 64
    assert pixels(result.image).shape == (60, 100, 3) and (result.width, result.height) == (100, 60)
    assert comfy.requests_to("/object_info") == 0  # a configured model needs no listing


def test_img2img_uploads_the_init_image_and_blends_it(comfy):
    provider, acc = ComfyUIProvider(), account(comfy, model="v1-5-pruned-emaonly.safetensors")
    init = a_png()
    kept = provider.generate(req("img2img", "light_time", init=init, params={"strength": 0.0}), acc)
    upload = comfy.state.uploads[0]
    assert upload["data"] == init and upload["type"] == "input" and upload["subfolder"] == "iat"
    graph = sent_prompt(comfy)
    assert graph["10"] == {"class_type": "LoadImage", "inputs": {"image": f"iat/{upload['name']}"},
                           "_meta": {"title": "Previous stage"}}
    assert graph["3"]["inputs"]["denoise"] == 0.0 and graph["3"]["inputs"]["latent_image"] == ["11", 0]
    assert np.array_equal(pixels(kept.image), pixels(init))  # denoise 0: the uploaded picture, untouched
    assert kept.model == "v1-5-pruned-emaonly.safetensors"

    half = provider.generate(req("img2img", "light_time", init=init, params={"strength": 0.5}), acc)
    generated = np.asarray(render("storybook, a lighthouse", 11, 96, 64), dtype=np.float32)
    expected = np.clip(pixels(init) + (generated - pixels(init)) * 0.5 + 0.5, 0, 255).astype(np.int16)
    assert np.array_equal(pixels(half.image), expected)
    assert comfy.state.uploads[1]["name"] == upload["name"]  # the same picture is the same file

    config_default = provider.generate(req("img2img", "light_time", init=init), account(comfy, denoise=0.3))
    assert sent_prompt(comfy)["3"]["inputs"]["denoise"] == 0.3 and config_default.seed == 11


def test_an_init_image_of_another_size_is_resized_before_upload(comfy):
    result = ComfyUIProvider().generate(req("img2img", "advanced", init=a_png(50, 40), width=100, height=60),
                                        account(comfy))
    with Image.open(io.BytesIO(comfy.state.uploads[0]["data"])) as sent:
        assert sent.size == (104, 64)
    assert pixels(result.image).shape == (60, 100, 3)


def test_stage_params_override_the_account_and_the_seed_is_read_back(comfy):
    params = {"steps": 7, "cfg": 4.5, "sampler_name": "dpmpp_2m", "scheduler": "karras", "cutout": True}
    result = ComfyUIProvider().generate(req(seed=2**40 + 3, params=params), account(comfy, steps=30, cfg=9.0))
    ks = sent_prompt(comfy)["3"]["inputs"]
    assert (ks["steps"], ks["cfg"], ks["sampler_name"], ks["scheduler"]) == (7, 4.5, "dpmpp_2m", "karras")
    assert result.seed == 2**40 + 3
    progress = [d for e, d in comfy.state.sent[comfy.state.ws_clients[0]] if e == "progress"]
    assert [p["value"] for p in progress] == list(range(1, 8))


def test_no_seed_picks_a_reproducible_one(comfy):
    provider, acc = ComfyUIProvider(), account(comfy)
    a, b = provider.generate(req(seed=None), acc), provider.generate(req(seed=None), acc)
    assert a.seed == b.seed and a.image == b.image
    assert sent_prompt(comfy)["3"]["inputs"]["seed"] == a.seed
    assert provider.generate(req(seed=None, prompt="another shot"), acc).seed != a.seed


@pytest.mark.parametrize("params", [{"steps": 0}, {"steps": 2.5}, {"cfg": "high"}, {"strength": 1.5},
                                    {"sampler_name": ""}, {"steps": True}])
def test_bad_stage_params_are_refused_before_any_request(comfy, params):
    with pytest.raises(ProviderBadRequest) as err:
        ComfyUIProvider().generate(req("img2img", "light_time", init=a_png(), params=params), account(comfy))
    assert err.value.details["param"] in params
    assert comfy.log == []


# --- workflows: overrides, placeholders, validation ---


def _reference_workflow() -> dict:
    """A stage override: the style-lock picture starts from the first reference image, denoised by its weight,
    and is saved as a preview (type temp)."""
    graph = wf.default("img2img")
    graph["10"]["inputs"]["image"] = "{{reference_image_0}}"
    graph["3"]["inputs"]["denoise"] = "{{reference_weight_0}}"
    graph["6"]["inputs"]["text"] = "{{prompt}}, watercolour, seed {{seed}}"
    graph["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    return graph


def test_a_stage_override_with_reference_images_and_embedded_placeholders(comfy):
    ref = a_png(colour=(20, 20, 200))
    acc = account(comfy, workflows={"style_lock": _reference_workflow()})
    request = req(reference_images=(ReferenceImage(data=ref, weight=0.0),))
    result = ComfyUIProvider().generate(request, acc)
    graph = sent_prompt(comfy)
    assert comfy.state.uploads[0]["data"] == ref
    assert graph["10"]["inputs"]["image"] == f"iat/{comfy.state.uploads[0]['name']}"
    assert graph["3"]["inputs"]["denoise"] == 0.0
    assert graph["6"]["inputs"]["text"] == "storybook, a lighthouse, watercolour, seed 11"
    assert np.array_equal(pixels(result.image), pixels(ref))  # weight 0: the reference itself
    entry = comfy.state.history[result.usage["prompt_id"]]
    assert entry["outputs"]["9"]["images"][0]["type"] == "temp"  # fetched from /view with type=temp
    # The same override needs its reference image: a call without one is refused before anything is sent.
    before = len(comfy.log)
    with pytest.raises(ProviderBadRequest, match="reference_image_0"):
        ComfyUIProvider().generate(req(), acc)
    assert len(comfy.log) == before


def test_mode_overrides_and_the_stage_beats_the_mode(comfy):
    by_mode = wf.default("text2img")
    by_mode["6"]["inputs"]["text"] = "MODE {{prompt}}"
    by_stage = wf.default("text2img")
    by_stage["6"]["inputs"]["text"] = "STAGE {{prompt}}"
    acc = account(comfy, workflows={"text2img": by_mode, "advanced": by_stage})
    provider = ComfyUIProvider()
    provider.generate(req(stage="style_lock"), acc)
    assert sent_prompt(comfy)["6"]["inputs"]["text"].startswith("MODE ")
    provider.generate(req(stage="advanced"), acc)
    assert sent_prompt(comfy)["6"]["inputs"]["text"].startswith("STAGE ")
    # A stage workflow that loads a previous picture cannot serve a text2img call.
    with pytest.raises(ProviderBadRequest, match="init_image"):
        provider.generate(req(stage="light_time"), account(comfy, workflows={"light_time": wf.default("img2img")}))


def test_the_shipped_workflows_are_valid():
    for mode in ("text2img", "img2img"):
        graph = wf.default(mode)
        assert wf.check_workflow(graph, mode) is graph
        assert {"prompt", "negative_prompt", "seed", "model", "steps", "cfg"} <= wf.placeholders(graph)
    assert "init_image" in wf.placeholders(wf.default("img2img"))


def _broken(change) -> dict:
    graph = wf.default("text2img")
    change(graph)
    return graph


@pytest.mark.parametrize("key,graph,words", [
    ("text2img", {"nodes": [], "links": [], "version": 0.4}, "UI format"),
    ("text2img", {}, "non-empty"),
    ("text2img", _broken(lambda g: g.pop("9")), "saves no image"),
    ("text2img", _broken(lambda g: g["3"].pop("class_type")), "class_type"),
    ("text2img", _broken(lambda g: g["3"]["inputs"].update(model=["99", 0])), "not in the workflow"),
    ("text2img", _broken(lambda g: g["3"]["inputs"].update(model=[4, 0])), "link"),
    ("text2img", _broken(lambda g: g["3"]["inputs"].update(seed="{{sead}}")), "unknown placeholder"),
    ("text2img", _broken(lambda g: g["3"].update(widgets_values=[1])), "unknown keys"),
    ("text2img", wf.default("img2img"), "no input picture"),
    ("img2img", wf.default("text2img"), "init_image"),
])
def test_a_broken_override_is_refused_by_the_config(key, graph, words):
    with pytest.raises(ValidationError) as err:
        ComfyUIConfig.model_validate({"workflows": {key: graph}})
    assert words in str(err.value) and f"workflows.{key}" in str(err.value)


def test_config_validation():
    with pytest.raises(ValidationError):
        ComfyUIConfig.model_validate({"endpoint": "ftp://127.0.0.1:8188"})
    with pytest.raises(ValidationError):
        ComfyUIConfig.model_validate({"endpoitn": "http://127.0.0.1:8188"})
    with pytest.raises(ValidationError):
        ComfyUIConfig.model_validate({"workflows": {"upscale": wf.default("text2img")}})
    with pytest.raises(ValidationError):
        ComfyUIConfig.model_validate({"sampler_name": "euler; rm -rf"})
    with pytest.raises(ValidationError):
        ComfyUIConfig.model_validate({"steps": 0})
    assert ComfyUIConfig.model_validate({"endpoint": "http://gpu-box:8188/"}).endpoint == "http://gpu-box:8188"


# --- the vendor's own failures ---


def test_an_invalid_workflow_is_comfyuis_400_with_the_nodes_at_fault(comfy):
    with pytest.raises(ProviderBadRequest) as err:
        ComfyUIProvider().generate(req(), account(comfy, model="missing.safetensors"))
    details = err.value.details
    assert details["http_status"] == 400 and details["error_type"] == "prompt_outputs_failed_validation"
    assert details["node_ids"] == ["4"]
    assert details["node_errors"]["4"]["class_type"] == "CheckpointLoaderSimple"
    assert details["node_errors"]["4"]["errors"][0]["type"] == "value_not_in_list"
    assert "Value not in list" in err.value.message and "missing.safetensors" in err.value.message
    assert not err.value.retryable and comfy.state.history == {}


def test_an_unknown_node_and_a_bad_value_are_refused_by_the_server(comfy):
    odd = wf.default("text2img")
    odd["12"] = {"class_type": "FancyUpscaler", "inputs": {"image": ["8", 0]}}
    with pytest.raises(ProviderBadRequest) as err:
        ComfyUIProvider().generate(req(), account(comfy, workflows={"text2img": odd}))
    assert err.value.details["error_type"] == "invalid_prompt" and "FancyUpscaler" in err.value.message
    with pytest.raises(ProviderBadRequest) as err:
        ComfyUIProvider().generate(req(params={"scheduler": "warp"}), account(comfy))
    assert "scheduler: 'warp' not in" in err.value.message and err.value.details["node_ids"] == ["3"]


def test_a_prompt_accepted_with_node_errors_is_refused_and_taken_off_the_queue(comfy):
    # ComfyUI runs the valid outputs of a prompt and answers 200 with the broken ones in node_errors (seen on a
    # real server): the picture would come from the wrong branch, so the call is refused.
    graph = wf.default("text2img")
    graph["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "missing.safetensors"}}
    graph["21"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["20", 2]}}
    graph["22"] = {"class_type": "SaveImage", "inputs": {"images": ["21", 0], "filename_prefix": "other"}}
    with pytest.raises(ProviderBadRequest) as err:
        ComfyUIProvider().generate(req(), account(comfy, workflows={"text2img": graph}))
    details = err.value.details
    assert details["http_status"] == 200 and details["node_ids"] == ["20"]
    assert "missing.safetensors" in err.value.message and not err.value.retryable
    assert ("POST", "/queue") in comfy.log  # taken off the queue (or interrupted, had it started)
    until(lambda: comfy.state.running is None and not comfy.state.queue)


def test_a_runtime_failure_is_200_then_an_error_in_the_history(comfy):
    with pytest.raises(ProviderError) as err:
        ComfyUIProvider().generate(req(prompt="EXPLODE the lighthouse"), account(comfy))
    exc = err.value
    assert type(exc) is ProviderError and not exc.retryable
    assert exc.details["node_id"] == "3" and exc.details["node_type"] == "KSampler"
    assert exc.details["exception_type"] == "RuntimeError" and exc.details["http_status"] == 200
    assert "KSampler" in exc.message and "expected input to have 4 channels" in exc.message
    entry = comfy.state.history[exc.details["prompt_id"]]
    assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}
    assert comfy.requests_to("/view") == 0
    # An out-of-memory failure may pass once other work is done: retryable.
    with pytest.raises(ProviderUnavailable) as err:
        ComfyUIProvider().generate(req(prompt="GPUFULL"), account(comfy))
    assert err.value.details["exception_type"] == "torch.OutOfMemoryError"


def test_without_a_websocket_the_history_is_polled(comfy):
    comfy.state.refuse_websocket = True
    comfy.state.step_delay = 0.02  # ~0.4 s of sampling: several polls
    result = ComfyUIProvider().generate(req(), account(comfy))
    assert np.array_equal(pixels(result.image), np.asarray(render("storybook, a lighthouse", 11, 96, 64)))
    assert comfy.state.ws_clients == [] and comfy.requests_to("/ws") == 1
    assert comfy.requests_to("/history/") >= 3


def test_a_websocket_that_closes_early_falls_back_to_polling(comfy):
    comfy.state.drop_websocket = True
    comfy.state.step_delay = 0.02
    result = ComfyUIProvider().generate(req(), account(comfy))
    assert result.seed == 11 and len(comfy.state.ws_clients) == 1
    assert comfy.requests_to("/history/") >= 2


def test_the_loopback_answers_like_comfyui_to_malformed_and_empty_bodies(comfy):
    bad = httpx2.post(f"{comfy.url}/prompt", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 500 and bad.headers["content-type"].startswith("text/plain")
    empty = httpx2.post(f"{comfy.url}/prompt", json={"client_id": "x"})
    assert empty.status_code == 400 and empty.json()["error"]["type"] == "no_prompt"


# --- HTTP faults, transport, auth ---


@pytest.mark.parametrize("fault,error", [
    (Fault.status(500, text="500 Internal Server Error\n\nServer got itself in trouble"), ProviderUnavailable),
    (Fault.status(502, text="Bad Gateway"), ProviderUnavailable),
    (Fault.malformed(), ProviderError),
    (Fault.truncate(), ProviderUnavailable),
    (Fault.drop(), ProviderUnavailable),
])
def test_prompt_faults_become_typed_errors(comfy, fault, error):
    comfy.faults.add("/prompt", fault)
    with pytest.raises(error) as err:
        ComfyUIProvider().generate(req(), account(comfy))
    if fault.kind == "status":
        assert err.value.details["http_status"] == fault.status
        assert "Server got itself in trouble" in err.value.message or "Bad Gateway" in err.value.message
    if fault.kind == "malformed":
        assert type(err.value) is ProviderError and err.value.details["http_status"] == 200


def test_a_429_carries_retry_after(comfy):
    comfy.faults.add("/prompt", Fault.status(429, text="slow down", headers={"Retry-After": "3"}))
    with pytest.raises(RateLimited) as err:
        ComfyUIProvider().generate(req(), account(comfy))
    assert err.value.retry_after == 3.0 and err.value.details["http_status"] == 429


@pytest.mark.parametrize("path,fault,error", [
    ("/view", Fault.status(500, text="boom"), ProviderUnavailable),
    ("/view", Fault.truncate(), ProviderUnavailable),
    ("/view", Fault.malformed(), ProviderError),
    ("/view", Fault.status(404), ProviderBadRequest),
    ("/upload/image", Fault.status(400), ProviderBadRequest),
    ("/history/", Fault.malformed(), ProviderError),
])
def test_faults_on_the_other_requests(comfy, path, fault, error):
    comfy.faults.add(path, fault)
    with pytest.raises(error):
        ComfyUIProvider().generate(req("img2img", "advanced", init=a_png()), account(comfy))


def test_a_slow_answer_is_a_timeout(comfy):
    comfy.faults.add("/prompt", Fault.delay(3.0))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        ComfyUIProvider().generate(req(), account(comfy, model=FIRST_CKPT), timeout=0.5)
    assert time.monotonic() - started < 2.5


def test_a_server_that_is_not_running_is_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    acc = Account("comfyui", ComfyUIConfig(endpoint=f"http://127.0.0.1:{port}", model=FIRST_CKPT))
    with pytest.raises(ProviderUnavailable, match="not reachable"):
        ComfyUIProvider().generate(req(), acc)
    with pytest.raises(ProviderUnavailable):
        ComfyUIProvider().probe(acc, timeout=2)


def test_an_authenticating_proxy_gets_the_bearer_token(comfy):
    comfy.state.api_key = "sk-comfy-123"
    with pytest.raises(ProviderAuthFailed) as err:
        ComfyUIProvider().generate(req(), account(comfy))
    assert "sk-comfy-123" not in err.value.message and err.value.details["http_status"] == 401
    result = ComfyUIProvider().generate(req(), account(comfy, {"api_key": "sk-comfy-123"}))
    assert result.seed == 11 and len(comfy.state.ws_clients) == 1  # the websocket passed the proxy too
    with pytest.raises(ProviderAuthFailed):
        ComfyUIProvider().probe(account(comfy, {"api_key": "wrong"}), timeout=5)


# --- cancel and the attempt's time limit ---


def test_cancel_while_running_interrupts_that_prompt(comfy):
    comfy.state.step_delay = 0.05
    cancel = threading.Event()
    thread, out = in_thread(lambda: ComfyUIProvider().generate(req(params={"steps": 400}), account(comfy),
                                                               cancel=cancel, timeout=60))
    until(lambda: comfy.state.running is not None and comfy.state.sent.get(comfy.state.ws_clients[0]))
    until(lambda: any(e == "progress" for e, _ in comfy.state.sent[comfy.state.ws_clients[0]]))
    cancel.set()
    thread.join(10)
    assert isinstance(out.get("error"), Cancelled)
    prompt_id = comfy.state.queue_posts[0]["delete"][0]
    assert comfy.state.interrupts == [{"prompt_id": prompt_id}]
    until(lambda: prompt_id in comfy.state.history)
    status = comfy.state.history[prompt_id]["status"]
    assert status["status_str"] == "error" and status["messages"][-1][0] == "execution_interrupted"


def test_cancel_while_queued_takes_it_off_the_queue(comfy):
    comfy.state.paused = True
    cancel = threading.Event()
    thread, out = in_thread(lambda: ComfyUIProvider().generate(req(), account(comfy), cancel=cancel, timeout=60))
    until(lambda: len(comfy.state.queue) == 1)
    prompt_id = comfy.state.queue[0][1]
    cancel.set()
    thread.join(10)
    assert isinstance(out.get("error"), Cancelled)
    assert comfy.state.queue_posts == [{"delete": [prompt_id]}] and comfy.state.queue == []
    assert comfy.state.interrupts == []  # it was not running: nothing to interrupt
    comfy.state.paused = False
    time.sleep(0.2)
    assert comfy.state.history == {}


def test_cancel_before_the_call_sends_nothing(comfy):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        ComfyUIProvider().generate(req(), account(comfy), cancel=cancel)
    assert comfy.log == []


def test_a_prompt_that_runs_too_long_is_interrupted_and_times_out(comfy):
    comfy.state.step_delay = 0.05
    with pytest.raises(ProviderTimeout):
        ComfyUIProvider().generate(req(params={"steps": 400}), account(comfy), timeout=1.0)
    prompt_id = comfy.state.queue_posts[0]["delete"][0]
    assert comfy.state.interrupts == [{"prompt_id": prompt_id}]


def test_someone_elses_interrupt_is_an_error(comfy):
    comfy.state.step_delay = 0.05
    thread, out = in_thread(lambda: ComfyUIProvider().generate(req(params={"steps": 400}), account(comfy)))
    until(lambda: comfy.state.running is not None)
    httpx2.post(f"{comfy.url}/interrupt")
    thread.join(10)
    assert type(out.get("error")) is ProviderError and "interrupted" in out["error"].message


# --- probe ---


def test_probe_says_version_checkpoints_and_devices(comfy):
    said = ComfyUIProvider().probe(account(comfy), timeout=5)
    assert said == {"version": "0.3.40", "models": comfy.state.checkpoints, "devices": ["cpu"]}
    assert comfy.log == [("GET", "/system_stats"), ("GET", "/object_info/CheckpointLoaderSimple")]
    comfy.faults.add("/system_stats", Fault.status(503, text="starting"))
    with pytest.raises(ProviderUnavailable):
        ComfyUIProvider().probe(account(comfy), timeout=5)


def test_no_checkpoint_on_the_server_is_a_bad_request(comfy):
    comfy.state.checkpoints = []
    with pytest.raises(ProviderBadRequest, match="no checkpoint"):
        ComfyUIProvider().generate(req(), account(comfy))


# --- runs through the ledger ---


@pytest.fixture
def studio(tmp_path, comfy):
    """An App whose secrets are sealed with a passphrase (no keyring needed), with a project whose comfyui account
    points at the loopback server behind its authenticating proxy."""
    from iat.app import App
    from iat.settings import Settings
    from support import Client

    comfy.state.api_key = "sk-proxy-42"
    app = App(Settings.from_env({"IAT_SECRETS_PASSPHRASE": "comfyui connector tests"}, home=tmp_path / "home"))
    client = Client(app)
    client.call("projects.create", slug="alpha", name="Alpha")
    client.call("providers.configure", slug="alpha", provider_code="comfyui",
                config={"endpoint": comfy.url, "model": "v1-5-pruned-emaonly.safetensors", "backoff_s": 0.01,
                        "timeout_s": 30, "pricing": {"usd_per_image": 0.002}})
    client.call("secrets.set", slug="alpha", provider_code="comfyui", secret_name="api_key", value="sk-proxy-42")
    yield app, client
    app.close()


def _run(app, client, **params) -> tuple[dict, list[dict], list[dict], dict]:
    from support import finished_run

    return finished_run(app, client, "comfyui", **params)


def test_providers_check_probes_the_server(studio, comfy):
    app, client = studio
    item = client.call("providers.check", slug="alpha", provider_code="comfyui")["items"][0]
    assert item["ready"] and item["probe"]["ok"], item
    assert comfy.log[:2] == [("GET", "/system_stats"), ("GET", "/object_info/CheckpointLoaderSimple")]


def test_a_broken_override_is_refused_by_providers_configure(studio):
    app, client = studio
    before = client.call("providers.get", slug="alpha", provider_code="comfyui")["config"]
    broken = wf.default("text2img")
    del broken["9"]
    err = client.error("providers.configure", slug="alpha", provider_code="comfyui",
                       config={"endpoint": before["endpoint"], "workflows": {"text2img": broken}})
    assert err.name == "invalid_params" and "saves no image" in json.dumps(err.details)
    assert client.call("providers.get", slug="alpha", provider_code="comfyui")["config"] == before


def test_a_run_records_provider_model_seed_and_cost_of_every_candidate(studio, comfy):
    app, client = studio
    run, candidates, calls, costs = _run(
        app, client, shots=[{"job_key": "s1", "scene": "a lighthouse on a cliff"},
                            {"job_key": "s2", "scene": "a harbour at night"}],
        candidates=2, stages=["style_lock", "light_time"])
    assert run["status"] == "done" and run["provider_code"] == "comfyui"
    assert len(candidates) == 4 and len(calls) == 8 and {c["outcome"] for c in calls} == {"ok"}
    assert {c["http_status"] for c in calls} == {200}
    # light_time is img2img on the style-lock output: four uploads, each of a picture the server made.
    assert len(comfy.state.uploads) == 4
    made = {data for (kind, _, _), data in comfy.state.files.items() if kind == "output"}
    assert len(made) == 8
    for upload in comfy.state.uploads:
        assert any(np.array_equal(pixels(upload["data"]), pixels(m)) for m in made)
    seeds_sent = sorted(p["prompt"]["3"]["inputs"]["seed"] for p in comfy.state.prompts)
    total = 0.0
    for cand in candidates:
        meta = cand["meta_json"]
        assert meta["provider"] == "comfyui" and meta["model"] == "v1-5-pruned-emaonly.safetensors"
        assert [s["stage"] for s in meta["stages"]] == ["style_lock", "light_time"]
        for stage in meta["stages"]:
            assert stage["seed"] == meta["seed"] and stage["model"] == "v1-5-pruned-emaonly.safetensors"
            assert stage["usage"]["source"] == "pricing" and stage["usage"]["cost_usd"] == 0.002
            assert stage["usage"]["prompt_id"] in comfy.state.history
        assert meta["cost_usd"] == pytest.approx(0.004, abs=1e-9)
        total += meta["cost_usd"]
    assert sorted(c["meta_json"]["seed"] for c in candidates for _ in range(2)) == seeds_sent
    assert costs["events"] == 8 and costs["groups"][0]["key"] == run["id"]
    assert costs["cost_usd"] == pytest.approx(total, abs=1e-6)


def test_a_server_failing_halfway_ends_the_run_partial_with_every_failed_attempt_recorded(studio, comfy):
    app, client = studio
    endpoint = client.call("providers.get", slug="alpha", provider_code="comfyui")["config"]["endpoint"]
    client.call("providers.configure", slug="alpha", provider_code="comfyui",
                config={"endpoint": endpoint, "backoff_s": 0.01, "max_attempts": 2, "concurrency": 1,
                        "pricing": {"usd_per_image": 0.002}})
    comfy.state.down_after = 3  # three prompts, then 500 for every one
    run, candidates, calls, costs = _run(
        app, client, shots=[{"job_key": "s1", "scene": "a lighthouse"}, {"job_key": "s2", "scene": "a harbour"}],
        candidates=1, stages=["style_lock", "light_time"])
    assert run["status"] == "partial"
    ok = [c for c in calls if c["outcome"] == "ok"]
    failed = [c for c in calls if c["outcome"] == "error"]
    assert len(ok) == 3 and len(failed) == 2  # the failing call: both of its attempts
    assert {(c["http_status"], c["error_code"]) for c in failed} == {(500, "provider_unavailable")}
    assert all("Server got itself in trouble" in c["error_message"] for c in failed)
    assert sorted(c["attempt"] for c in failed) == [1, 2] and len({c["call_id"] for c in failed}) == 1
    assert sorted(c["status"] for c in candidates) == ["done", "failed"]
    assert costs["events"] == 3 and costs["cost_usd"] == pytest.approx(0.006, abs=1e-9)


def test_429_with_retry_after_then_500_then_success_is_three_attempts_and_one_cost(studio, comfy):
    app, client = studio
    comfy.faults.add("/prompt", Fault.status(429, text="Too Many Requests", headers={"Retry-After": "1"}),
                     Fault.status(500, text="500 Internal Server Error\n\nServer got itself in trouble"))
    started = time.monotonic()
    run, candidates, calls, costs = _run(app, client, shots=[{"job_key": "s1", "scene": "a lighthouse"}],
                                         candidates=1, stages=["style_lock"])
    assert run["status"] == "done" and time.monotonic() - started >= 1.0  # Retry-After was honoured
    calls = sorted(calls, key=lambda c: c["attempt"])
    assert [(c["attempt"], c["outcome"], c["http_status"], c["error_code"]) for c in calls] == [
        (1, "error", 429, "rate_limited"), (2, "error", 500, "provider_unavailable"), (3, "ok", 200, None)]
    assert len({c["call_id"] for c in calls}) == 1 and calls[0]["meta_json"]["retry_after"] == 1.0
    assert costs["events"] == 1 and costs["cost_usd"] == pytest.approx(0.002, abs=1e-9)
    assert len(comfy.state.history) == 1  # one prompt ran


def test_a_runtime_failure_fails_only_its_candidate_and_is_not_retried(studio, comfy):
    app, client = studio
    run, candidates, calls, costs = _run(
        app, client, shots=[{"job_key": "bad", "scene": "EXPLODE the lighthouse"}, {"job_key": "good",
                                                                                   "scene": "a harbour"}],
        candidates=1, stages=["style_lock"])
    assert run["status"] == "partial"
    failed = [c for c in calls if c["outcome"] == "error"]
    assert len(failed) == 1 and failed[0]["error_code"] == "provider_error" and failed[0]["http_status"] == 200
    assert "KSampler" in failed[0]["error_message"]
    assert costs["events"] == 1
