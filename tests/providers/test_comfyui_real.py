"""The comfyui connector against a REAL ComfyUI server (issue #8: "the connectors are also run against a real
ComfyUI server").

ComfyUI is no package on a registry, so these run only when IAT_COMFYUI_URL names a running server:
`scripts/check-comfyui` installs one from a ComfyUI source tree, starts it on loopback and runs this module. They are
not part of scripts/test (here they skip). Everything goes through the project's real code (the provider class, the
providers.* commands, the runner and its ledger); the server's side is read back over its own API (/history,
/queue, /view), so the checks hold for any ComfyUI, CPU or GPU, with or without checkpoints, that nobody else is
using meanwhile (the cancel tests read the server's queue).

The workflows are model-free (tests/providers/comfyui_model_free/*.json): core nodes only (EmptyImage,
ImageAddNoise, LoadImage, ImageInvert, ImageScale, SaveImage), so a CPU-only server with no checkpoint runs them in
milliseconds. They use the connector's placeholders ({{width}}, {{seed}}, {{init_image}}, ...) as a project's
override would.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iat.app import App
from iat.cancel import Cancelled
from iat.errors import ProviderBadRequest, ProviderError, ProviderTimeout, ProviderUnavailable
from iat.providers.base import Account, GenerateRequest

from support import Client

URL = os.environ.get("IAT_COMFYUI_URL", "").rstrip("/")
pytestmark = pytest.mark.skipif(not URL, reason="IAT_COMFYUI_URL is not set (scripts/check-comfyui starts a real "
                                                "ComfyUI and runs these)")

HERE = Path(__file__).parent / "comfyui_model_free"
CODE = "comfyui"
WAIT_S = 120
SLOW_NODES = 200  # ImageScale (lanczos, 1024 px) nodes of the slow workflow: seconds on a CPU, not milliseconds


def workflow(name: str) -> dict:
    return json.loads((HERE / f"{name}.json").read_text("utf-8"))


MODEL_FREE = {"text2img": workflow("text2img"), "img2img": workflow("img2img")}


# --- the server's own API, to see what it did ---


def server(method: str, path: str, **kwargs):
    import httpx2

    response = httpx2.request(method, URL + path, timeout=30, **kwargs)
    response.raise_for_status()
    return response


def history(prompt_id: str) -> dict | None:
    return server("GET", f"/history/{prompt_id}").json().get(prompt_id)


def wait_history(prompt_id: str, limit: float = WAIT_S) -> dict:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        entry = history(prompt_id)
        if entry is not None:
            return entry
        time.sleep(0.1)
    raise AssertionError(f"prompt {prompt_id} has no history after {limit} s")


def queue() -> tuple[list[str], list[str]]:
    body = server("GET", "/queue").json()
    return [item[1] for item in body["queue_running"]], [item[1] for item in body["queue_pending"]]


def wait_queue(predicate, limit: float = 30.0) -> tuple[list[str], list[str]]:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        state = queue()
        if predicate(*state):
            return state
        time.sleep(0.05)
    raise AssertionError(f"the server's queue never got there: {queue()}")


def events(entry: dict) -> dict[str, dict]:
    return {name: data for name, data in entry["status"]["messages"]}


def view(item: dict) -> Image.Image:
    data = server("GET", "/view", params={"filename": item["filename"], "subfolder": item["subfolder"],
                                          "type": item["type"]}).content
    return Image.open(io.BytesIO(data))


def pixels(png: bytes | Image.Image) -> np.ndarray:
    image = png if isinstance(png, Image.Image) else Image.open(io.BytesIO(png))
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def fresh_seed() -> int:
    """A seed no earlier run used: ComfyUI caches node outputs across prompts, and a cached chain runs instantly."""
    return uuid.uuid4().int % (2**62)


def slow_workflow() -> dict:
    """text2img that takes seconds: noise from the seed (so nothing is cached), then ImageScale back and forth."""
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1,
                                                          "color": 0}},
             "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": "{{seed}}",
                                                             "strength": 0.5}}}
    previous = "2"
    for i in range(SLOW_NODES):
        side = 512 if i % 2 == 0 else 1024
        graph[str(100 + i)] = {"class_type": "ImageScale",
                               "inputs": {"image": [previous, 0], "upscale_method": "lanczos", "width": side,
                                          "height": side, "crop": "disabled"}}
        previous = str(100 + i)
    graph["9"] = {"class_type": "SaveImage", "inputs": {"images": [previous, 0],
                                                        "filename_prefix": "{{filename_prefix}}"}}
    return graph


# --- the provider, called directly ---


@pytest.fixture
def provider(app: App):
    return app.providers.get(CODE)


def account(provider, **config) -> Account:
    config.setdefault("workflows", MODEL_FREE)
    return Account(CODE, provider.config_model(endpoint=URL, **config))


def text2img(width: int = 100, height: int = 60, prompt: str = "a lighthouse at dusk", **kw) -> GenerateRequest:
    return GenerateRequest(mode="text2img", stage="style_lock", prompt=prompt, width=width, height=height, **kw)


def test_probe_reports_the_server_and_its_checkpoints(provider):
    found = provider.probe(account(provider), timeout=30)
    stats = server("GET", "/system_stats").json()
    assert found["version"] == stats["system"]["comfyui_version"] and found["version"]
    assert found["devices"] == [d["name"] for d in stats["devices"]] and found["devices"]
    listed = server("GET", "/object_info/CheckpointLoaderSimple").json()
    assert found["models"] == listed["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0][:50]


def test_text2img_brings_back_the_servers_picture_at_the_asked_size_with_its_seed(provider):
    acct = account(provider)
    seed = fresh_seed()
    result = provider.generate(text2img(seed=seed), acct)
    assert (result.width, result.height) == (100, 60) and Image.open(io.BytesIO(result.image)).size == (100, 60)
    assert result.seed == seed and result.model == "comfyui-workflow"  # no checkpoint in a model-free workflow
    assert result.http_status == 200 and result.usage["source"] == "pricing" and result.usage["units"] == 1.0
    entry = history(result.usage["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    ran = entry["prompt"][2]
    # The latent's multiple of 8 was asked (104 x 64), the seed went in as a JSON integer.
    assert ran["1"]["inputs"]["width"] == 104 and ran["1"]["inputs"]["height"] == 64
    assert ran["2"]["inputs"]["seed"] == seed
    saved = entry["outputs"]["3"]["images"][0]
    assert saved["type"] == "output" and saved["subfolder"] == "iat"  # filename_prefix "iat/style_lock"
    on_server = view(saved)
    assert on_server.size == (104, 64)
    expected = pixels(on_server.convert("RGB").resize((100, 60), Image.Resampling.LANCZOS))
    assert np.array_equal(pixels(result.image), expected)  # the server's picture, resized, nothing else
    mean = pixels(result.image).reshape(-1, 3).mean(axis=0)
    assert np.allclose(mean, (0x33, 0x66, 0x99), atol=12)  # EmptyImage's #336699 under zero-mean noise
    assert "workflow" not in Image.open(io.BytesIO(result.image)).info  # SaveImage's metadata is not kept

    again = provider.generate(text2img(seed=seed), acct)
    assert again.image == result.image  # the same seed: the same noise
    other = provider.generate(text2img(seed=seed + 1), acct)
    assert other.seed == seed + 1 and other.image != result.image


def test_a_request_without_a_seed_reports_the_one_the_server_ran(provider):
    result = provider.generate(text2img(prompt=f"a lighthouse, {uuid.uuid4().hex}"), account(provider))
    ran = history(result.usage["prompt_id"])["prompt"][2]
    assert isinstance(result.seed, int) and result.seed == ran["2"]["inputs"]["seed"]


def test_img2img_uploads_the_previous_picture_and_the_server_works_on_it(provider):
    acct = account(provider)
    ys, xs = np.mgrid[0:64, 0:96]
    init = np.stack([xs * 2, ys * 3, (xs + ys) % 256], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(init, "RGB").save(buf, "PNG")
    request = GenerateRequest(mode="img2img", stage="light_time", prompt="at night", width=96, height=64,
                              seed=fresh_seed(), init_image=buf.getvalue())
    result = provider.generate(request, acct)
    out = pixels(result.image)
    assert out.shape == (64, 96, 3)
    # ImageInvert on the server: 255 - x, give or take SaveImage's float-to-byte truncation.
    assert np.abs(out - (255 - init.astype(np.int16))).max() <= 1
    entry = history(result.usage["prompt_id"])
    loaded = entry["prompt"][2]["1"]["inputs"]["image"]
    subfolder, _, name = loaded.rpartition("/")
    assert subfolder == "iat" and name.startswith("iat-") and name.endswith(".png")
    uploaded = view({"filename": name, "subfolder": subfolder, "type": "input"})
    assert np.array_equal(pixels(uploaded), init)  # the init image went up unchanged (its size fits the latent)
    assert entry["prompt"][2]["3"]["inputs"]["seed"] == request.seed == result.seed


def test_an_invalid_workflow_is_the_servers_400_with_its_node_errors(provider):
    bad = workflow("text2img")
    bad["1"]["inputs"]["color"] = 99_999_999  # EmptyImage's color is at most 0xFFFFFF: validate_prompt refuses it
    with pytest.raises(ProviderBadRequest) as info:
        provider.generate(text2img(seed=1), account(provider, workflows={"text2img": bad}))
    err = info.value
    assert err.details["http_status"] == 400 and err.details["error_type"] == "prompt_outputs_failed_validation"
    assert err.details["node_ids"] == ["1"]
    node = err.details["node_errors"]["1"]
    assert node["class_type"] == "EmptyImage" and node["errors"][0]["type"] == "value_bigger_than_max"
    assert "Value 99999999 bigger than max of 16777215" in err.message and "color" in err.message

    unknown = workflow("text2img")
    unknown["1"]["class_type"] = "NoSuchNodeAnywhere"
    with pytest.raises(ProviderBadRequest) as info:
        provider.generate(text2img(seed=1), account(provider, workflows={"text2img": unknown}))
    err = info.value
    assert err.details["http_status"] == 400 and err.details["error_type"] == "invalid_prompt"
    assert err.details["node_errors"] == {} and "NoSuchNodeAnywhere does not exist" in err.message


def test_a_prompt_the_server_half_accepts_is_refused(provider):
    """The real server queues a prompt whose other output is broken (200 with node_errors) and runs only the
    valid branch: the connector must refuse it, not bring back the valid branch's picture."""
    half = workflow("text2img")
    half["4"] = {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1,
                                                      "color": 99_999_999}}
    half["5"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "{{filename_prefix}}"}}
    with pytest.raises(ProviderBadRequest) as info:
        provider.generate(text2img(seed=1), account(provider, workflows={"text2img": half}))
    err = info.value
    assert err.details["http_status"] == 200 and err.details["node_ids"] == ["4"]
    assert err.details["node_errors"]["4"]["errors"][0]["type"] == "value_bigger_than_max"


def test_the_shipped_workflow_needs_a_checkpoint(provider):
    """With no override the connector runs the shipped SD graph: on a server without checkpoints that is a clear
    bad request before anything is queued; on one with checkpoints, a real (one-step, small) generation."""
    acct = Account(CODE, provider.config_model(endpoint=URL, steps=1))
    checkpoints = provider.probe(acct, timeout=30)["models"]
    request = text2img(width=64, height=64, seed=7)
    if not checkpoints:
        running, pending = queue()
        with pytest.raises(ProviderBadRequest, match="lists no checkpoint"):
            provider.generate(request, acct)
        assert queue() == (running, pending)
    else:
        result = provider.generate(request, acct, timeout=600)
        assert result.model == checkpoints[0] and result.seed == 7


def test_a_runtime_failure_is_the_execution_error_of_the_node(provider):
    """The prompt is valid, so /prompt answers 200; the node fails while it runs (a file that is no picture), and
    the history says status_str "error" with the execution_error message."""
    name = f"iat-real-broken-{uuid.uuid4().hex[:8]}.png"
    server("POST", "/upload/image", files={"image": (name, b"this is not a picture", "image/png")},
           data={"type": "input", "subfolder": "iat", "overwrite": "true"})
    broken = {"1": {"class_type": "LoadImage", "inputs": {"image": f"iat/{name}"}},
              "2": {"class_type": "SaveImage",
                    "inputs": {"images": ["1", 0], "filename_prefix": "{{filename_prefix}}"}}}
    with pytest.raises(ProviderError) as info:
        provider.generate(text2img(seed=1), account(provider, workflows={"text2img": broken}))
    err = info.value
    assert type(err) is ProviderError and not isinstance(err, (ProviderBadRequest, ProviderUnavailable))
    assert err.details["http_status"] == 200 and err.details["node_id"] == "1"
    assert err.details["node_type"] == "LoadImage" and err.details["exception_type"] == "PIL.UnidentifiedImageError"
    assert "cannot identify image file" in err.message
    entry = history(err.details["prompt_id"])
    assert entry["status"]["status_str"] == "error" and "execution_error" in events(entry)


def _generate_in_thread(provider, request, acct, cancel, timeout=None):
    outcome: dict = {}

    def work():
        try:
            outcome["result"] = provider.generate(request, acct, cancel=cancel, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, outcome


def test_cancel_interrupts_the_running_prompt_on_the_server(provider):
    acct = account(provider, workflows={"text2img": slow_workflow()})
    cancel = threading.Event()
    thread, outcome = _generate_in_thread(provider, text2img(seed=fresh_seed()), acct, cancel)
    running, _ = wait_queue(lambda running, pending: bool(running))
    prompt_id = running[0]
    started = time.monotonic()
    cancel.set()
    thread.join(30)
    assert not thread.is_alive() and isinstance(outcome.get("error"), Cancelled), outcome
    entry = wait_history(prompt_id, 60)
    stopped_after = time.monotonic() - started
    seen = events(entry)
    assert entry["status"]["status_str"] == "error" and "execution_interrupted" in seen, seen.keys()
    assert "9" not in entry["outputs"]  # SaveImage never ran
    assert len(seen["execution_interrupted"]["executed"]) < SLOW_NODES
    assert queue() == ([], [])
    assert stopped_after < 30


def test_cancel_takes_a_waiting_prompt_off_the_queue_and_leaves_the_running_one(provider):
    blocker = slow_workflow()
    for node in blocker.values():
        for key, value in node["inputs"].items():
            if value == "{{seed}}":
                node["inputs"][key] = fresh_seed()
            elif value == "{{filename_prefix}}":
                node["inputs"][key] = "iat-test/blocker"
    blocker_id = server("POST", "/prompt", json={"prompt": blocker}).json()["prompt_id"]
    try:
        wait_queue(lambda running, pending: running == [blocker_id])
        cancel = threading.Event()
        acct = account(provider, workflows={"text2img": slow_workflow()})
        thread, outcome = _generate_in_thread(provider, text2img(seed=fresh_seed()), acct, cancel)
        _, pending = wait_queue(lambda running, pending: len(pending) == 1)
        mine = pending[0]
        cancel.set()
        thread.join(30)
        assert isinstance(outcome.get("error"), Cancelled), outcome
        running, pending = queue()
        assert mine not in pending and running == [blocker_id]  # the other client's prompt goes on
    finally:
        server("POST", "/interrupt", json={"prompt_id": blocker_id})
    assert events(wait_history(blocker_id)).keys() >= {"execution_interrupted"}
    assert history(mine) is None  # taken off the queue: it never ran


def test_a_prompt_someone_else_interrupts_is_an_error_not_a_cancel(provider):
    """The UI's Cancel (or another tool) stops the prompt while the connector waits: the call fails with the
    interruption, and is not mistaken for the caller's own cancel."""
    acct = account(provider, workflows={"text2img": slow_workflow()})
    thread, outcome = _generate_in_thread(provider, text2img(seed=fresh_seed()), acct, None)
    running, _ = wait_queue(lambda running, pending: bool(running))
    server("POST", "/interrupt", json={"prompt_id": running[0]})
    thread.join(30)
    err = outcome.get("error")
    assert type(err) is ProviderError and "interrupted" in err.message, outcome
    assert err.details["prompt_id"] == running[0] and err.details["http_status"] == 200


def test_the_attempts_time_limit_stops_the_prompt_on_the_server(provider):
    acct = account(provider, workflows={"text2img": slow_workflow()})
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as info:
        provider.generate(text2img(seed=fresh_seed()), acct, timeout=2.0)
    assert time.monotonic() - started < 2.0 + 10  # the limit, plus the short interrupt
    prompt_id = info.value.details["prompt_id"]
    assert "execution_interrupted" in events(wait_history(prompt_id, 60))


# --- a pipeline run through the ledger, against the real server ---


SHOTS = [{"job_key": f"shot{i}", "scene": f"a harbour at dawn, boat number {i}"} for i in range(2)]


def test_a_run_against_the_real_server_records_provider_model_seed_and_cost(app: App, client: Client,
                                                                            project: dict, provider):
    client.call("providers.configure", slug="alpha", provider_code=CODE,
                config={"endpoint": URL, "workflows": MODEL_FREE, "pricing": {"usd_per_image": 0.001}})
    checked = client.call("providers.check", slug="alpha", provider_code=CODE)["items"][0]
    assert checked["ready"] and checked["probe"]["ok"]
    assert checked["probe"]["info"]["version"] == server("GET", "/system_stats").json()["system"]["comfyui_version"]
    run = client.call("runs.start", slug="alpha", provider=CODE, shots=SHOTS, candidates=2,
                      stages=["style_lock", "light_time"])
    assert app.runner.wait_idle(WAIT_S), "the run did not finish"
    run = client.call("runs.get", slug="alpha", run_id=run["id"])
    assert run["status"] == "done", run
    candidates = client.call("candidates.list", slug="alpha", run_id=run["id"])["items"]
    assert len(candidates) == 4
    prompt_ids = []
    for cand in candidates:
        meta = cand["meta_json"]
        assert meta["provider"] == CODE and meta["model"] == "comfyui-workflow" and isinstance(meta["seed"], int)
        assert meta["cost_usd"] == pytest.approx(0.002)
        assert [s["stage"] for s in meta["stages"]] == ["style_lock", "light_time"]
        prompt_ids += [s["usage"]["prompt_id"] for s in meta["stages"]]
    # Every stage was a prompt the server ran, the second one on the first one's picture.
    for prompt_id in prompt_ids:
        entry = history(prompt_id)
        assert entry is not None and entry["status"]["status_str"] == "success"
    classes = {history(pid)["prompt"][2]["1"]["class_type"] for pid in prompt_ids}
    assert classes == {"EmptyImage", "LoadImage"}
    calls = client.call("providers.calls", slug="alpha", run_id=run["id"], limit=100)["items"]
    assert len(calls) == 8 and {c["outcome"] for c in calls} == {"ok"}
    assert {c["http_status"] for c in calls} == {200} and {c["provider_code"] for c in calls} == {CODE}
    summary = client.call("costs.summary", slug="alpha", group_by="run")
    assert summary["groups"] == [{"key": run["id"], "events": 8, "cost_usd": pytest.approx(0.008), "units": 8.0}]
