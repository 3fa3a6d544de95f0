"""A loopback ComfyUI: the HTTP and websocket API of comfyanonymous/ComfyUI, with a tiny node set that really runs.

What it follows, and where from (ComfyUI's server.py, execution.py, main.py, nodes.py):
- `POST /prompt` {"prompt", "client_id", "prompt_id"?, "number"?, "front"?, "extra_data"?}: `await request.json()`
  first (a body that is not JSON fails there: aiohttp's 500 with a plain-text body), then validate_prompt: 200
  {"prompt_id", "number", "node_errors"}, or 400 {"error": {type, message, details, extra_info}, "node_errors":
  {node id: {"errors": [...], "dependent_outputs": [...], "class_type"}}}; no "prompt" key: 400 no_prompt.
- validate_prompt / validate_inputs: class_type missing or unknown (invalid_prompt), no output node
  (prompt_no_outputs), per node required_input_missing, bad_linked_input, return_type_mismatch,
  invalid_input_type, value_smaller_than_min, value_bigger_than_max, value_not_in_list, and LoadImage's
  VALIDATE_INPUTS (custom_validation_failed "Invalid image file"); all outputs bad: prompt_outputs_failed_validation.
- One prompt worker (main.py prompt_worker): execution_start, execution_cached, per node executing {node,
  display_node, prompt_id} (KSampler: progress {value, max} per step and a binary preview frame), executed
  {node, output} for nodes with a UI output, then execution_success, or execution_error {node_id, node_type,
  exception_type, exception_message, traceback, current_inputs, current_outputs} / execution_interrupted; the
  history entry {"prompt": [number, id, prompt, extra_data, outputs], "outputs", "status": {status_str,
  completed, messages}, "meta"} is written; then executing {node: null}. `status` {exec_info: {queue_remaining}}
  goes to every socket when the queue changes, and to a socket when it opens, with its sid.
- `GET /ws?clientId=`, `POST /upload/image` (multipart image, type, subfolder, overwrite; "name (1).png" on a
  name clash unless overwrite or the same bytes), `GET /view?filename&subfolder&type` (400 for '..' or a leading
  '/', 404 when absent), `GET /history[/{id}]`, `GET/POST /queue` (delete, clear), `POST /interrupt` (optional
  {"prompt_id"}: only that prompt, when it is the one running), `GET /system_stats`, `GET /object_info[/{class}]`.

What it computes: a KSampler "samples" a deterministic picture from its positive text, seed and the latent's size
(`render`); on a latent from VAEEncode (img2img) it blends the input toward that picture by `denoise`, so denoise 0
gives the uploaded input back pixel for pixel. SaveImage stores a PNG (with the prompt in a text chunk, as ComfyUI
does) under output/<subfolder>/<name>_00001_.png.

Vendor failure modes, switched on the `ComfyState`: `fail_markers` (a positive prompt containing the word fails at
run time, after /prompt said 200), `refuse_websocket` (the upgrade is refused, as by a proxy: clients poll),
`drop_websocket` (the socket closes right after execution_start), `step_delay` (seconds per sampling step),
`paused` (the worker takes nothing from the queue), `api_key` (an authenticating proxy in front: Bearer required),
`down_after` (that many prompts are queued, then /prompt breaks with aiohttp's plain-text 500).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import io
import json
import struct
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from aiohttp import WSMsgType, web
from PIL import Image, ImageOps, PngImagePlugin

MAX_RESOLUTION = 16384  # nodes.py
# comfy/samplers.py KSAMPLER_NAMES (a part) + "ddim", "uni_pc", "uni_pc_bh2"; SCHEDULER_NAMES.
SAMPLERS = ["euler", "euler_cfg_pp", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
            "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "lcm",
            "ddpm", "ddim", "uni_pc", "uni_pc_bh2"]
SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"]


class OutOfMemoryError(RuntimeError):
    """What torch raises when the GPU is full; execution.py reports it by its full type name."""


OutOfMemoryError.__module__ = "torch"


def _fail(text: str) -> Exception:
    return RuntimeError(f"Given groups=1, weight of size [320, 4, 3, 3], expected input to have 4 channels "
                        f"(sampling failed on {text!r})")


def _oom(text: str) -> Exception:
    return OutOfMemoryError("Allocation on device 0 would exceed allowed memory. (out of memory)")


@dataclass
class ComfyState:
    checkpoints: list[str] = field(default_factory=lambda: ["sd_xl_base_1.0.safetensors",
                                                            "v1-5-pruned-emaonly.safetensors"])
    fail_markers: dict[str, Callable[[str], Exception]] = field(
        default_factory=lambda: {"EXPLODE": _fail, "GPUFULL": _oom})
    refuse_websocket: bool = False
    drop_websocket: bool = False
    step_delay: float = 0.0
    paused: bool = False
    api_key: str | None = None
    down_after: int | None = None  # after this many queued prompts, /prompt fails with aiohttp's plain-text 500
    # What the server received and holds, for tests to look at.
    prompts: list[dict] = field(default_factory=list)  # bodies of POST /prompt that reached validation
    uploads: list[dict] = field(default_factory=list)  # {name, subfolder, type, overwrite, data}
    interrupts: list[dict] = field(default_factory=list)
    queue_posts: list[dict] = field(default_factory=list)
    ws_clients: list[str] = field(default_factory=list)  # clientIds of opened sockets
    sent: dict[str, list] = field(default_factory=dict)  # sid -> [(type, data) or ("binary", n bytes)]
    files: dict[tuple[str, str, str], bytes] = field(default_factory=dict)  # (type, subfolder, name) -> bytes
    history: dict[str, dict] = field(default_factory=dict)
    queue: list[tuple] = field(default_factory=list)  # heap of (number, prompt_id, prompt, extra_data, outputs)
    running: tuple | None = None
    number: int = 0
    # server internals
    sockets: dict[str, web.WebSocketResponse] = field(default_factory=dict)
    interrupt_flag: bool = False
    wake: asyncio.Event | None = None
    counters: dict[tuple[str, str], int] = field(default_factory=dict)


# --- the node set (nodes.py INPUT_TYPES / RETURN_TYPES / OUTPUT_NODE) ---


@dataclass
class Spec:
    kind: str  # INT, FLOAT, STRING, a link type (MODEL, CLIP, ...), or COMBO
    default: Any = None
    min: float | None = None
    max: float | None = None
    options: Callable[[ComfyState], list[str]] | None = None


@dataclass
class NodeDef:
    required: dict[str, Spec]
    returns: tuple[str, ...]
    output_node: bool = False
    validates: tuple[str, ...] = ()  # inputs checked by the class's VALIDATE_INPUTS instead of the combo list
    category: str = "sampling"


def _input_files(state: ComfyState) -> list[str]:
    return sorted(name if not sub else f"{sub}/{name}" for (kind, sub, name) in state.files if kind == "input")


NODES: dict[str, NodeDef] = {
    "CheckpointLoaderSimple": NodeDef({"ckpt_name": Spec("COMBO", options=lambda s: list(s.checkpoints))},
                                      ("MODEL", "CLIP", "VAE"), category="loaders"),
    "CLIPTextEncode": NodeDef({"text": Spec("STRING"), "clip": Spec("CLIP")}, ("CONDITIONING",),
                              category="conditioning"),
    "EmptyLatentImage": NodeDef({"width": Spec("INT", 512, 16, MAX_RESOLUTION),
                                 "height": Spec("INT", 512, 16, MAX_RESOLUTION),
                                 "batch_size": Spec("INT", 1, 1, 4096)}, ("LATENT",), category="latent"),
    "KSampler": NodeDef({"model": Spec("MODEL"), "seed": Spec("INT", 0, 0, 0xffffffffffffffff),
                         "steps": Spec("INT", 20, 1, 10000), "cfg": Spec("FLOAT", 8.0, 0.0, 100.0),
                         "sampler_name": Spec("COMBO", options=lambda s: SAMPLERS),
                         "scheduler": Spec("COMBO", options=lambda s: SCHEDULERS),
                         "positive": Spec("CONDITIONING"), "negative": Spec("CONDITIONING"),
                         "latent_image": Spec("LATENT"), "denoise": Spec("FLOAT", 1.0, 0.0, 1.0)}, ("LATENT",)),
    "VAEDecode": NodeDef({"samples": Spec("LATENT"), "vae": Spec("VAE")}, ("IMAGE",), category="latent"),
    "VAEEncode": NodeDef({"pixels": Spec("IMAGE"), "vae": Spec("VAE")}, ("LATENT",), category="latent"),
    "LoadImage": NodeDef({"image": Spec("COMBO", options=_input_files)}, ("IMAGE", "MASK"), validates=("image",),
                         category="image"),
    "SaveImage": NodeDef({"images": Spec("IMAGE"), "filename_prefix": Spec("STRING", "ComfyUI")}, (),
                         output_node=True, category="image"),
    "PreviewImage": NodeDef({"images": Spec("IMAGE")}, (), output_node=True, category="image"),
}


def node_info(name: str, state: ComfyState) -> dict[str, Any]:
    """server.py node_info(): what /object_info answers for one class."""
    node = NODES[name]
    required: dict[str, Any] = {}
    for key, spec in node.required.items():
        if spec.kind == "COMBO":
            required[key] = [spec.options(state), {}]
        elif spec.kind in ("INT", "FLOAT", "STRING"):
            opts = {k: v for k, v in (("default", spec.default), ("min", spec.min), ("max", spec.max)) if v is not None}
            required[key] = [spec.kind, opts]
        else:
            required[key] = [spec.kind]
    return {"input": {"required": required}, "input_order": {"required": list(required)},
            "output": list(node.returns), "output_is_list": [False] * len(node.returns),
            "output_name": list(node.returns), "name": name, "display_name": name, "description": "",
            "python_module": "nodes", "category": node.category, "output_node": node.output_node}


# --- validation (execution.py validate_inputs / validate_prompt) ---


def _error(kind: str, message: str, details: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def validate_inputs(state: ComfyState, prompt: dict, node_id: str, validated: dict) -> tuple:
    if node_id in validated:
        return validated[node_id]
    inputs = prompt[node_id]["inputs"]
    node = NODES[prompt[node_id]["class_type"]]
    errors: list[dict] = []
    valid = True
    for name, spec in node.required.items():
        if name not in inputs:
            errors.append(_error("required_input_missing", "Required input is missing", name, input_name=name))
            continue
        val = inputs[name]
        if isinstance(val, list):
            if len(val) != 2:
                errors.append(_error("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, "
                                     "slot_index]", name, input_name=name, received_value=val))
                continue
            linked = prompt[val[0]]  # a link to a missing node raises, as in ComfyUI
            received = NODES[linked["class_type"]].returns[val[1]]
            if received != spec.kind:
                errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                     f"{name}, {received} != {spec.kind}", input_name=name, linked_node=val))
                continue
            result = validate_inputs(state, prompt, val[0], validated)
            if result[0] is False:
                valid = False
            continue
        try:
            if spec.kind == "INT":
                val = int(val)
            elif spec.kind == "FLOAT":
                val = float(val)
            elif spec.kind == "STRING":
                val = str(val)
            inputs[name] = val
        except (TypeError, ValueError) as ex:
            errors.append(_error("invalid_input_type", f"Failed to convert an input value to a {spec.kind} value",
                                 f"{name}, {val}, {ex}", input_name=name, received_value=val))
            continue
        if spec.min is not None and val < spec.min:
            errors.append(_error("value_smaller_than_min", f"Value {val} smaller than min of {spec.min}", name,
                                 input_name=name, received_value=val))
            continue
        if spec.max is not None and val > spec.max:
            errors.append(_error("value_bigger_than_max", f"Value {val} bigger than max of {spec.max}", name,
                                 input_name=name, received_value=val))
            continue
        if name in node.validates:  # LoadImage.VALIDATE_INPUTS: folder_paths.exists_annotated_filepath(image)
            if val not in _input_files(state):
                errors.append(_error("custom_validation_failed", "Custom validation failed for node",
                                     f"{name} - Invalid image file: {val}", input_name=name, received_value=val))
            continue
        if spec.kind == "COMBO":
            options = spec.options(state)
            if val not in options:
                listed = f"(list of length {len(options)})" if len(options) > 20 else str(options)
                errors.append(_error("value_not_in_list", "Value not in list", f"{name}: '{val}' not in {listed}",
                                     input_name=name, received_value=val))
    result = (False, errors, node_id) if errors or not valid else (True, [], node_id)
    validated[node_id] = result
    return result


def validate_prompt(state: ComfyState, prompt: Any) -> tuple[bool, dict | None, list[str], dict]:
    if not isinstance(prompt, dict):
        return False, _error("invalid_prompt", "Cannot execute because the prompt is not an object.", ""), [], {}
    outputs = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return False, _error("invalid_prompt", "Cannot execute because a node is missing the class_type "
                                 "property.", f"Node ID '#{node_id}'"), [], {}
        if node["class_type"] not in NODES:
            return False, _error("invalid_prompt", f"Cannot execute because node {node['class_type']} does not "
                                 f"exist.", f"Node ID '#{node_id}'"), [], {}
        node.setdefault("inputs", {})
        if NODES[node["class_type"]].output_node:
            outputs.append(node_id)
    if not outputs:
        return False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {}
    good, failed, node_errors, validated = [], [], {}, {}
    for out in outputs:
        try:
            ok, reasons, _ = validate_inputs(state, prompt, out, validated)
        except Exception as ex:  # noqa: BLE001 - ComfyUI reports any exception as the output's error
            ok, reasons = False, [_error("exception_during_validation", "Exception when validating node", str(ex),
                                         exception_type=type(ex).__name__)]
            validated[out] = (False, reasons, out)
        if ok:
            good.append(out)
            continue
        failed.append((out, reasons))
        for node_id, (valid, node_reasons, _) in validated.items():
            if valid is not True and node_reasons:
                entry = node_errors.setdefault(node_id, {"errors": node_reasons, "dependent_outputs": [],
                                                         "class_type": prompt[node_id]["class_type"]})
                entry["dependent_outputs"].append(out)
    if not good:
        lines = [f"{e['message']}: {e['details']}" for _, reasons in failed for e in reasons]
        return False, _error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                             "\n".join(lines)), [], node_errors
    return True, None, good, node_errors


# --- the picture a "model" makes ---


def render(text: str, seed: int, width: int, height: int) -> Image.Image:
    """Deterministic from (text, seed, size): the text sets a vertical gradient, the seed places blocks on it."""
    tone = hashlib.sha256(text.encode()).digest()
    top, bottom = np.frombuffer(tone[:3], np.uint8).astype(np.float32), np.frombuffer(tone[3:6], np.uint8).astype(
        np.float32)
    t = (np.arange(height, dtype=np.float32) / max(1, height - 1))[:, None, None]
    px = np.broadcast_to(top + (bottom - top) * t, (height, width, 3)).copy()
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{text}\0{seed}".encode()).digest()[:8], "big"))
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(4, max(5, width // 2))), y0 + int(rng.integers(4, max(5, height // 2)))
        px[y0:y1, x0:x1] = rng.integers(0, 256, 3)
    return Image.fromarray(px.astype(np.uint8), "RGB")


@dataclass
class Latent:
    width: int
    height: int
    image: Image.Image | None = None  # the encoded picture (img2img) or the sampled one


class Interrupted(Exception):
    """comfy.model_management.InterruptProcessingException"""


# --- the server ---


STATE = web.AppKey("state", ComfyState)
WORKER = web.AppKey("worker", asyncio.Task)


def make_app(state: ComfyState) -> web.Application:
    app = web.Application(client_max_size=100 * 1024 * 1024, middlewares=[_auth(state)])
    app[STATE] = state

    async def start(app_: web.Application) -> None:
        state.wake = asyncio.Event()
        app_[WORKER] = asyncio.create_task(_worker(state))

    async def stop(app_: web.Application) -> None:
        app_[WORKER].cancel()
        try:
            await app_[WORKER]
        except asyncio.CancelledError:
            pass
        for ws in list(state.sockets.values()):
            await ws.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.add_routes([
        web.get("/ws", _ws), web.post("/prompt", _post_prompt), web.get("/prompt", _get_prompt),
        web.post("/upload/image", _upload), web.get("/view", _view), web.get("/history", _history_all),
        web.get("/history/{prompt_id}", _history_one), web.get("/queue", _get_queue), web.post("/queue", _post_queue),
        web.post("/interrupt", _interrupt), web.get("/system_stats", _system_stats),
        web.get("/object_info", _object_info_all), web.get("/object_info/{node_class}", _object_info_one),
    ])
    return app


def _auth(state: ComfyState):
    @web.middleware
    async def middleware(request: web.Request, handler):
        if state.api_key and request.headers.get("Authorization") != f"Bearer {state.api_key}":
            return web.json_response({"error": {"message": "Invalid or missing API key", "type": "unauthorized"}},
                                     status=401)
        return await handler(request)
    return middleware


def _state(request: web.Request) -> ComfyState:
    return request.app[STATE]


def _queue_info(state: ComfyState) -> dict[str, Any]:
    return {"exec_info": {"queue_remaining": len(state.queue) + (1 if state.running else 0)}}


async def _send(state: ComfyState, event: str, data: Any, sid: str | None) -> None:
    """server.py send_json / send_bytes: to one client, or to every socket when sid is None."""
    if sid is None:
        targets = list(state.sockets.items())
    else:
        targets = [(sid, state.sockets[sid])] if sid in state.sockets else []
    for target, ws in targets:
        try:
            if isinstance(data, (bytes, bytearray)):
                await ws.send_bytes(bytes(data))
                state.sent.setdefault(target, []).append(("binary", len(data)))
            else:
                await ws.send_json({"type": event, "data": data})
                state.sent.setdefault(target, []).append((event, data))
        except (ConnectionError, RuntimeError):
            pass
        if event == "execution_start" and state.drop_websocket:
            await ws.close()


async def _ws(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    if state.refuse_websocket:
        return web.Response(status=403, text="websocket upgrades are not allowed here")
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
    state.sockets.pop(sid, None)
    state.sockets[sid] = ws
    state.ws_clients.append(sid)
    try:
        await _send(state, "status", {"status": _queue_info(state), "sid": sid}, sid)
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        if state.sockets.get(sid) is ws:
            state.sockets.pop(sid, None)
    return ws


async def _post_prompt(request: web.Request) -> web.Response:
    state = _state(request)
    json_data = await request.json()  # not JSON: raises, and aiohttp answers 500 in plain text as ComfyUI does
    if "number" in json_data:
        number = float(json_data["number"])
    else:
        number = state.number
        if json_data.get("front"):
            number = -number
        state.number += 1
    if "prompt" not in json_data:
        return web.json_response({"error": _error("no_prompt", "No prompt provided", "No prompt provided"),
                                  "node_errors": {}}, status=400)
    if state.down_after is not None and state.number > state.down_after:
        raise RuntimeError("the server broke down")  # aiohttp answers 500 "Server got itself in trouble"
    state.prompts.append(json.loads(json.dumps(json_data)))
    prompt = json_data["prompt"]
    prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
    ok, error, outputs, node_errors = validate_prompt(state, prompt)
    extra_data = dict(json_data.get("extra_data", {}))
    if "client_id" in json_data:
        extra_data["client_id"] = json_data["client_id"]
    if not ok:
        return web.json_response({"error": error, "node_errors": node_errors}, status=400)
    heapq.heappush(state.queue, (number, prompt_id, prompt, extra_data, outputs))
    await _send(state, "status", {"status": _queue_info(state)}, None)
    state.wake.set()
    return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})


async def _get_prompt(request: web.Request) -> web.Response:
    return web.json_response(_queue_info(_state(request)))


async def _upload(request: web.Request) -> web.Response:
    state = _state(request)
    post = await request.post()
    image = post.get("image")
    kind = post.get("type") or "input"
    if kind not in ("input", "temp", "output"):
        kind = "input"
    if not isinstance(image, web.FileField) or not image.filename:
        return web.Response(status=400)
    subfolder = str(post.get("subfolder", ""))
    if ".." in subfolder.split("/") or subfolder.startswith("/"):
        return web.Response(status=400)
    data = image.file.read()
    overwrite = post.get("overwrite")
    filename = image.filename
    if overwrite not in ("true", "1"):
        stem, dot, ext = filename.rpartition(".")
        i = 1
        while (kind, subfolder, filename) in state.files and state.files[(kind, subfolder, filename)] != data:
            filename = f"{stem} ({i}).{ext}" if dot else f"{image.filename} ({i})"
            i += 1
    state.files[(kind, subfolder, filename)] = data
    state.uploads.append({"name": filename, "subfolder": subfolder, "type": kind, "overwrite": overwrite,
                          "data": data})
    return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})


async def _view(request: web.Request) -> web.Response:
    state = _state(request)
    query = request.rel_url.query
    if "filename" not in query:
        return web.Response(status=404)
    filename = query["filename"]
    if not filename or filename[0] == "/" or ".." in filename:
        return web.Response(status=400)
    kind = query.get("type", "output")
    if kind not in ("input", "temp", "output"):
        return web.Response(status=400)
    subfolder = query.get("subfolder", "")
    if ".." in subfolder.split("/") or subfolder.startswith("/"):
        return web.Response(status=403)
    data = state.files.get((kind, subfolder, filename))
    if data is None:
        return web.Response(status=404)
    return web.Response(body=data, content_type="image/png",
                        headers={"Content-Disposition": f'filename="{filename}"'})


async def _history_all(request: web.Request) -> web.Response:
    return web.json_response(_state(request).history)


async def _history_one(request: web.Request) -> web.Response:
    state = _state(request)
    prompt_id = request.match_info["prompt_id"]
    return web.json_response({prompt_id: state.history[prompt_id]} if prompt_id in state.history else {})


async def _get_queue(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response({"queue_running": [list(state.running)] if state.running else [],
                              "queue_pending": [list(item) for item in sorted(state.queue)]})


async def _post_queue(request: web.Request) -> web.Response:
    state = _state(request)
    json_data = await request.json()
    state.queue_posts.append(json_data)
    if json_data.get("clear"):
        state.queue.clear()
    for prompt_id in json_data.get("delete", []):
        state.queue[:] = [item for item in state.queue if item[1] != prompt_id]
        heapq.heapify(state.queue)
    await _send(state, "status", {"status": _queue_info(state)}, None)
    return web.Response(status=200)


async def _interrupt(request: web.Request) -> web.Response:
    state = _state(request)
    try:
        json_data = await request.json()
    except json.JSONDecodeError:
        json_data = {}
    state.interrupts.append(json_data)
    prompt_id = json_data.get("prompt_id") if isinstance(json_data, dict) else None
    if not prompt_id or (state.running and state.running[1] == prompt_id):
        state.interrupt_flag = True
    return web.Response(status=200)


async def _system_stats(request: web.Request) -> web.Response:
    return web.json_response({
        "system": {"os": "posix", "ram_total": 17179869184, "ram_free": 8589934592, "comfyui_version": "0.3.40",
                   "python_version": "3.11.9", "pytorch_version": "2.5.1+cpu", "embedded_python": False,
                   "argv": ["main.py", "--cpu"]},
        "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 17179869184,
                     "vram_free": 8589934592, "torch_vram_total": 17179869184, "torch_vram_free": 8589934592}]})


async def _object_info_all(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response({name: node_info(name, state) for name in NODES})


async def _object_info_one(request: web.Request) -> web.Response:
    name = request.match_info["node_class"]
    return web.json_response({name: node_info(name, _state(request))} if name in NODES else {})


# --- the prompt worker ---


async def _worker(state: ComfyState) -> None:
    while True:
        if state.paused or not state.queue:
            state.wake.clear()
            try:
                await asyncio.wait_for(state.wake.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
            continue
        item = heapq.heappop(state.queue)
        state.running = item
        await _send(state, "status", {"status": _queue_info(state)}, None)
        try:
            await _execute(state, item)
        finally:
            state.running = None
        await _send(state, "status", {"status": _queue_info(state)}, None)
        client_id = item[3].get("client_id")
        if client_id is not None:
            await _send(state, "executing", {"node": None, "prompt_id": item[1]}, client_id)


def _order(prompt: dict, outputs: list[str]) -> list[str]:
    """Nodes in the order they run: each output's inputs first (execution.py runs outputs one by one)."""
    done: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in done:
            return
        for value in prompt[node_id]["inputs"].values():
            if isinstance(value, list):
                visit(value[0])
        done.append(node_id)

    for out in sorted(outputs):
        visit(out)
    return done


async def _execute(state: ComfyState, item: tuple) -> None:
    number, prompt_id, prompt, extra_data, outputs = item
    client_id = extra_data.get("client_id")
    state.interrupt_flag = False  # nodes.interrupt_processing(False) at the start of every prompt
    messages: list[list] = []

    async def add(event: str, data: dict, broadcast: bool = False) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        messages.append([event, data])
        if client_id is not None or broadcast:
            await _send(state, event, data, client_id)

    await add("execution_start", {"prompt_id": prompt_id})
    await add("execution_cached", {"nodes": [], "prompt_id": prompt_id})
    results: dict[str, tuple] = {}
    ui_outputs: dict[str, dict] = {}
    executed: list[str] = []
    success = True
    for node_id in _order(prompt, outputs):
        node = prompt[node_id]
        await _send(state, "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id},
                    client_id)
        try:
            if state.interrupt_flag:  # nodes.before_node_execution()
                raise Interrupted()
            args = {k: (results[v[0]][v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
            result, ui = await _run_node(state, node["class_type"], args, node_id, prompt_id, client_id, prompt)
        except Interrupted:
            await add("execution_interrupted", {"prompt_id": prompt_id, "node_id": node_id,
                                                "node_type": node["class_type"], "executed": list(executed)},
                      broadcast=True)
            success = False
            break
        except Exception as ex:  # noqa: BLE001 - every node failure is reported as execution_error
            kind = type(ex)
            name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
            await add("execution_error", {
                "prompt_id": prompt_id, "node_id": node_id, "node_type": node["class_type"],
                "executed": list(executed), "exception_message": str(ex), "exception_type": name,
                "traceback": traceback.format_tb(ex.__traceback__),
                "current_inputs": {k: [v if isinstance(v, (int, float, str, bool)) else str(v)]
                                   for k, v in node["inputs"].items() if not isinstance(v, list)},
                "current_outputs": {}})
            success = False
            break
        results[node_id] = result
        executed.append(node_id)
        if ui:
            ui_outputs[node_id] = ui
            await _send(state, "executed", {"node": node_id, "display_node": node_id, "output": ui,
                                            "prompt_id": prompt_id}, client_id)
    else:
        await add("execution_success", {"prompt_id": prompt_id})
    state.history[prompt_id] = {
        "prompt": [number, prompt_id, prompt, extra_data, outputs], "outputs": ui_outputs,
        "status": {"status_str": "success" if success else "error", "completed": success, "messages": messages},
        "meta": {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                 for nid in ui_outputs}}


async def _run_node(state: ComfyState, cls: str, args: dict, node_id: str, prompt_id: str, client_id: str | None,
                    prompt: dict) -> tuple[tuple, dict | None]:
    if cls == "CheckpointLoaderSimple":
        name = args["ckpt_name"]
        return (f"model:{name}", f"clip:{name}", f"vae:{name}"), None
    if cls == "CLIPTextEncode":
        return ({"text": args["text"]},), None
    if cls == "EmptyLatentImage":
        return (Latent(args["width"] // 8 * 8, args["height"] // 8 * 8),), None
    if cls == "LoadImage":
        kind_sub, _, name = args["image"].rpartition("/")
        with Image.open(io.BytesIO(state.files[("input", kind_sub, name)])) as src:
            image = ImageOps.exif_transpose(src).convert("RGB")
        return (image, "mask"), None
    if cls == "VAEEncode":
        image: Image.Image = args["pixels"]
        w, h = image.width // 8 * 8, image.height // 8 * 8
        if (w, h) != image.size:  # nodes.py VAEEncode.vae_encode_crop_pixels: centre crop to multiples of 8
            x, y = (image.width % 8) // 2, (image.height % 8) // 2
            image = image.crop((x, y, x + w, y + h))
        return (Latent(w, h, image),), None
    if cls == "KSampler":
        return (await _sample(state, args, node_id, prompt_id, client_id),), None
    if cls == "VAEDecode":
        return (args["samples"].image,), None
    if cls in ("SaveImage", "PreviewImage"):
        image = args["images"]
        if cls == "SaveImage":
            kind, prefix = "output", args.get("filename_prefix", "ComfyUI")
        else:
            kind, prefix = "temp", "ComfyUI_temp_" + hashlib.sha256(prompt_id.encode()).hexdigest()[:5]
        subfolder, _, base = prefix.rpartition("/")
        counter = state.counters.get((subfolder, base), 0) + 1
        state.counters[(subfolder, base)] = counter
        filename = f"{base}_{counter:05}_.png"
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", json.dumps(prompt))  # SaveImage embeds the prompt (and the UI workflow)
        buf = io.BytesIO()
        image.save(buf, format="PNG", pnginfo=info, compress_level=4)
        state.files[(kind, subfolder, filename)] = buf.getvalue()
        return (), {"images": [{"filename": filename, "subfolder": subfolder, "type": kind}]}
    raise RuntimeError(f"no implementation for {cls}")


async def _sample(state: ComfyState, args: dict, node_id: str, prompt_id: str, client_id: str | None) -> Latent:
    latent: Latent = args["latent_image"]
    text = args["positive"]["text"]
    steps = args["steps"]
    for step in range(steps):
        if state.step_delay:
            await asyncio.sleep(state.step_delay)
        if state.interrupt_flag:  # comfy.model_management.throw_exception_if_processing_interrupted, per step
            raise Interrupted()
        await _send(state, "progress", {"value": step + 1, "max": steps, "prompt_id": prompt_id, "node": node_id},
                    client_id)
        if step == steps // 2:  # a latent preview: BinaryEventTypes.PREVIEW_IMAGE, then the JPEG's type 1
            buf = io.BytesIO()
            render(text, args["seed"], 32, 32).save(buf, format="JPEG", quality=60)
            await _send(state, "", struct.pack(">I", 1) + struct.pack(">I", 1) + buf.getvalue(), client_id)
    for word, failure in state.fail_markers.items():
        if word in text:
            raise failure(text)
    picture = render(text, args["seed"], latent.width, latent.height)
    if latent.image is not None:
        src = np.asarray(latent.image, dtype=np.float32)
        gen = np.asarray(picture, dtype=np.float32)
        out = src + (gen - src) * np.float32(args["denoise"])
        picture = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")
    return Latent(latent.width, latent.height, picture)
