"""`comfyui`: a ComfyUI server (local, or behind an authenticating proxy) running a workflow per stage.

One `generate` is one prompt on the server, following ComfyUI's own HTTP and websocket API (server.py,
execution.py and main.py of comfyanonymous/ComfyUI):

1. The pictures the workflow loads go up first: `POST /upload/image`, multipart field `image` plus `type=input`,
   `subfolder`, `overwrite` -> {"name", "subfolder", "type"}; the workflow's LoadImage gets "subfolder/name".
2. The websocket `/ws?clientId=<id>` is opened before the prompt is queued, so no message is missed. ComfyUI
   sends to that client, in order: `status`, `execution_start`, `execution_cached`, per node `executing`
   {node} (and `progress`, binary preview frames, `executed` {node, output}), then `execution_success` or
   `execution_error` / `execution_interrupted`; the history entry is written; last `executing` {node: null}.
3. `POST /prompt` {"prompt": <workflow>, "client_id": <id>} -> 200 {"prompt_id", "number", "node_errors"}. An
   invalid workflow is 400 {"error": {type, message, details, extra_info}, "node_errors": {node id: {errors,
   dependent_outputs, class_type}}} (execution.validate_prompt) -> ProviderBadRequest naming the nodes. A body
   that is not JSON is aiohttp's 500 with a plain-text body -> ProviderUnavailable (iat.providers.http).
4. `GET /history/{prompt_id}` is the source of truth: {} until the prompt has run, then {prompt_id: {"prompt",
   "outputs": {node id: {"images": [{filename, subfolder, type}]}}, "status": {status_str, completed,
   messages: [[event, data], ...]}}}. A runtime failure is 200 on /prompt and status_str "error" here with an
   `execution_error` message (node_id, node_type, exception_type, exception_message) -> ProviderError. When the
   websocket cannot be opened (or closes early) the history is polled on a short interval instead; while the
   websocket is open the history is still read now and then, so a lost message cannot hang the call.
5. The picture: `GET /view?filename=&subfolder=&type=output`.

Cancel (or the attempt's time running out) stops the prompt on the server: `POST /queue {"delete": [id]}`
takes it off the queue if it has not started, and `POST /interrupt {"prompt_id": id}` stops it if it is the one
running (checked through `GET /queue` first, because servers older than the prompt_id form interrupt whatever
runs). Then `Cancelled` (or ProviderTimeout) is raised.

The workflow of a call is the project's override for the stage, else for the mode (text2img, img2img), else the
shipped default (`comfyui_workflows/*.json`); `iat.providers.comfyui_workflow` describes the placeholders. A stage's
workflow that loads {{init_image}} cannot serve a text2img call (refused); one without it serves an img2img call
by starting afresh (the project asked for that).
Stage parameters (request.params steps, cfg, sampler_name, scheduler, strength) override the account's
defaults. The seed and checkpoint reported back are those of the prompt the server kept in its history.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import threading
import time
import uuid
from typing import Any, Literal, Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit

from pydantic import Field, field_validator

from iat.errors import ProviderBadRequest, ProviderError, ProviderTimeout, ProviderUnavailable
from iat.providers import comfyui_workflow as wf
from iat.providers.base import (
    MAX_SEED, Account, BaseProvider, Cancelled, GenerateRequest, GenerateResult, ProviderConfig, check_cancel,
    encode_png,
)
from iat.providers.http import MAX_MESSAGE, check, json_of, transport_error

CODE = "comfyui"
WS_TICK_S = 0.2  # how often a wait looks at the cancel event
HISTORY_EVERY_S = 2.0  # the history read while the websocket is open, against a lost message
POLL_FIRST_S, POLL_MAX_S = 0.1, 1.0  # the history poll without a websocket: short, growing to 1 s
STOP_TIMEOUT_S = 5.0  # the interrupt after a cancel gets its own short limit: the attempt's may be spent
UPLOAD_SUBFOLDER = "iat"
_NAME = r"^[A-Za-z0-9_.+\-]{1,64}$"

WorkflowKey = Literal["text2img", "img2img", "style_lock", "light_time", "weather_effects", "advanced"]


class ComfyUIConfig(ProviderConfig):
    endpoint: str = Field("http://127.0.0.1:8188", max_length=2048, description="Base URL of the ComfyUI server")
    model: str | None = Field(None, min_length=1, max_length=256,
                              description="Checkpoint file (as CheckpointLoaderSimple lists it); none: the "
                                          "server's first checkpoint")
    steps: int = Field(20, ge=1, le=10000, description="Sampling steps, when the stage does not set them")
    cfg: float = Field(7.0, ge=0, le=100, description="Classifier-free guidance, when the stage does not set it")
    sampler_name: str = Field("euler", pattern=_NAME, description="KSampler sampler, when the stage does not set it")
    scheduler: str = Field("normal", pattern=_NAME, description="KSampler scheduler, when the stage does not set it")
    denoise: float = Field(0.5, ge=0, le=1, description="img2img denoise, when the stage sets no strength")
    workflows: dict[WorkflowKey, dict[str, Any]] = Field(
        default_factory=dict,
        description="API-format workflows that replace the shipped ones, by stage or by mode (text2img, img2img)")

    @field_validator("workflows")
    @classmethod
    def _workflows(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key, graph in value.items():
            try:
                wf.check_workflow(graph, key)
            except ValueError as exc:
                raise ValueError(f"workflows.{key}: {exc}") from None
        return value


class ComfyUIProvider(BaseProvider):
    code = CODE
    config_model = ComfyUIConfig
    optional_secrets = ("api_key",)  # for a ComfyUI behind an authenticating proxy: sent as a Bearer token

    def probe(self, account: Account, *, timeout: float) -> dict[str, Any]:
        with _Http(account, time.monotonic() + timeout) as http:
            stats = json_of(http.call("GET", "/system_stats"), CODE)
            models = _checkpoints(json_of(http.call("GET", "/object_info/CheckpointLoaderSimple"), CODE))
        system = stats.get("system", {}) if isinstance(stats, dict) else {}
        devices = stats.get("devices", []) if isinstance(stats, dict) else []
        return {"version": system.get("comfyui_version"), "models": models[:50],
                "devices": [d.get("name") for d in devices if isinstance(d, dict)]}

    def generate(self, request: GenerateRequest, account: Account | None = None, *,
                 cancel: threading.Event | None = None, timeout: float | None = None) -> GenerateResult:
        account = account or self.default_account()
        config: ComfyUIConfig = account.config  # type: ignore[assignment]
        deadline = time.monotonic() + (timeout if timeout is not None else config.timeout_s)
        check_cancel(cancel)
        template = _template(config, request)
        needs = wf.placeholders(template)
        values = _values(config, request)
        references = _references(request, needs)  # everything checked before the first request
        with _Http(account, deadline) as http, contextlib.ExitStack() as stack:
            if "model" in needs:
                values["model"] = config.model or _first_checkpoint(http)
            if "init_image" in needs:
                values["init_image"] = _upload(http, _input_png(request.init_image, request), cancel)
            for name, ref in references.items():
                values[name] = _upload(http, ref.data, cancel) if "image" in name else ref.weight
            graph = wf.fill(template, values)
            check_cancel(cancel)
            client_id = uuid.uuid4().hex
            ws = _open_ws(account, client_id, deadline)
            if ws is not None:
                stack.enter_context(ws)  # closed when the call ends, however it ends
            prompt_id = _queue(http, graph, client_id)
            try:
                entry = _wait(http, ws, prompt_id, cancel, deadline)
            except (Cancelled, ProviderTimeout):
                _stop(http, prompt_id)
                raise
            _raise_for_status(entry, prompt_id)
            image = _first_image(entry, graph)
            response = http.call("GET", "/view", params=image)
            png = _output_png(response.content, request)
        ran = _ran_prompt(entry) or graph
        seed = _read_back(ran, template, "seed", values["seed"])
        model = (_read_back(ran, template, "model", values.get("model")) or _model_of(ran) or config.model
                 or "comfyui-workflow")
        return GenerateResult(
            image=png, seed=int(seed), model=str(model), width=request.width, height=request.height,
            usage={"units": 1.0, "cost_usd": self.estimate(request, account).cost_usd, "currency": "USD",
                   "source": "pricing", "prompt_id": prompt_id, **_timing(entry)},
            http_status=response.status_code)


# --- the workflow of one call ---


def _template(config: ComfyUIConfig, request: GenerateRequest) -> dict[str, dict[str, Any]]:
    for key in (request.stage, request.mode):
        graph = config.workflows.get(key)
        if graph is None:
            continue
        takes_init = "init_image" in wf.placeholders(graph)
        if request.mode == "text2img" and takes_init:
            raise ProviderBadRequest(
                f"the comfyui workflow for {key!r} loads a previous picture ({{{{init_image}}}}), but this "
                f"{request.stage} call is text2img: give the stage a text2img workflow",
                details={"provider": CODE, "workflow": key, "mode": request.mode})
        return graph
    return wf.default(request.mode)


def _values(config: ComfyUIConfig, request: GenerateRequest) -> dict[str, Any]:
    params = request.params
    seed = request.seed if request.seed is not None else _seed_from(request)
    denoise = 1.0
    if request.mode == "img2img":
        denoise = _param(params, "strength", float, config.denoise, 0.0, 1.0)
    width, height = _latent_size(request)
    return {
        "prompt": request.prompt, "negative_prompt": request.negative_prompt, "seed": seed,
        "width": width, "height": height, "denoise": denoise, "stage": request.stage,
        "steps": _param(params, "steps", int, config.steps, 1, 10000),
        "cfg": _param(params, "cfg", float, config.cfg, 0.0, 100.0),
        "sampler_name": _param(params, "sampler_name", str, config.sampler_name),
        "scheduler": _param(params, "scheduler", str, config.scheduler),
        "filename_prefix": f"iat/{request.stage}",
    }


def _param(params: Mapping[str, Any], name: str, kind: type, default: Any, low: float | None = None,
           high: float | None = None) -> Any:
    value = params.get(name, default)
    bad = ProviderBadRequest(f"params.{name} must be {kind.__name__}" +
                             (f" between {low:g} and {high:g}" if low is not None else ""),
                             details={"provider": CODE, "param": name})
    if kind is str:
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            raise bad
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad
    if kind is int:
        if value != int(value):
            raise bad
        value = int(value)
    else:
        value = float(value)
    if low is not None and not low <= value <= high:
        raise bad
    return value


def _seed_from(request: GenerateRequest) -> int:
    """A seed for a request that names none: a function of the request, so it reproduces."""
    text = json.dumps([request.stage, request.prompt, request.negative_prompt, request.scene.model_dump_json()])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % (MAX_SEED + 1)


def _latent_size(request: GenerateRequest) -> tuple[int, int]:
    """The size asked of the server: a latent holds multiples of 8 (EmptyLatentImage makes width // 8 and
    VAEEncode crops to them), so round up; the answer is resized to the exact size afterwards."""
    return -(-request.width // 8) * 8, -(-request.height // 8) * 8


def _references(request: GenerateRequest, needs: set[str]) -> dict[str, Any]:
    """Placeholder -> the request's reference image it names (reference_image_N, reference_weight_N)."""
    found = {}
    for name in sorted(needs):
        kind, _, index = name.rpartition("_")
        if kind not in ("reference_image", "reference_weight"):
            continue
        if int(index) >= len(request.reference_images):
            raise ProviderBadRequest(f"the {CODE} workflow uses {{{{{name}}}}} but the call has "
                                     f"{len(request.reference_images)} reference image(s)",
                                     details={"provider": CODE, "placeholder": name})
        found[name] = request.reference_images[int(index)]
    return found


# --- pictures in and out ---


def _open_image(data: bytes, what: str):
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as src:
            src.load()
            return src.convert("RGBA" if "A" in src.getbands() else "RGB")
    except Exception:  # Pillow raises many types for bad data; all mean the same here
        raise ProviderError(f"{what} is not a readable image", details={"provider": CODE}) from None


def _input_png(data: bytes | None, request: GenerateRequest) -> bytes:
    """The init image as it goes up: unchanged when it has the latent's size, else resized to it."""
    from PIL import Image

    assert data is not None  # GenerateRequest guarantees it for img2img
    size = _latent_size(request)
    image = _open_image(data, "init image")
    if image.size == size and data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    return encode_png(image.resize(size, Image.Resampling.LANCZOS))


def _output_png(data: bytes, request: GenerateRequest) -> bytes:
    """The server's picture at exactly the requested size, re-encoded: SaveImage's PNG carries the whole workflow
    in text chunks, which has no place in the project's files."""
    from PIL import Image

    image = _open_image(data, f"{CODE}'s output")
    if image.size != (request.width, request.height):
        image = image.resize((request.width, request.height), Image.Resampling.LANCZOS)
    return encode_png(image)


def _upload(http: "_Http", data: bytes, cancel: threading.Event | None) -> str:
    check_cancel(cancel)
    name = f"iat-{hashlib.sha256(data).hexdigest()[:24]}.png"  # by content: the same picture is stored once
    response = http.call("POST", "/upload/image", files={"image": (name, data, "image/png")},
                         data={"type": "input", "subfolder": UPLOAD_SUBFOLDER, "overwrite": "true"})
    body = json_of(response, CODE)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise ProviderError(f"{CODE} answered the upload without a file name",
                            details={"provider": CODE, "http_status": response.status_code})
    subfolder = body.get("subfolder") or ""
    return f"{subfolder}/{body['name']}" if subfolder else body["name"]


def _first_image(entry: dict[str, Any], graph: Mapping[str, Any]) -> dict[str, str]:
    outputs = entry.get("outputs") or {}
    rank = {cls: i for i, cls in enumerate(wf.OUTPUT_CLASSES)}
    order = sorted(outputs, key=lambda nid: (rank.get(graph.get(nid, {}).get("class_type"), len(rank)), nid))
    for node_id in order:
        images = outputs[node_id].get("images") if isinstance(outputs[node_id], dict) else None
        for item in images or []:
            if isinstance(item, dict) and isinstance(item.get("filename"), str):
                return {"filename": item["filename"], "subfolder": str(item.get("subfolder") or ""),
                        "type": str(item.get("type") or "output")}
    raise ProviderError(f"{CODE} finished the prompt without saving an image", details={"provider": CODE})


# --- the server's answers ---


def _checkpoints(info: Any) -> list[str]:
    """Checkpoint names from /object_info/CheckpointLoaderSimple: input.required.ckpt_name is [[names...], {...}]
    (or ["COMBO", {"options": [...]}] in the newer node schema)."""
    try:
        spec = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    except (KeyError, TypeError):
        return []
    if isinstance(spec, list) and spec and isinstance(spec[0], list):
        return [str(n) for n in spec[0]]
    if isinstance(spec, list) and len(spec) > 1 and spec[0] == "COMBO" and isinstance(spec[1], dict):
        return [str(n) for n in spec[1].get("options", [])]
    return []


def _first_checkpoint(http: "_Http") -> str:
    names = _checkpoints(json_of(http.call("GET", "/object_info/CheckpointLoaderSimple"), CODE))
    if not names:
        raise ProviderBadRequest(f"{CODE} lists no checkpoint: put one in its models/checkpoints folder, or set "
                                 f"the provider's model", details={"provider": CODE})
    return names[0]


def _queue(http: "_Http", graph: dict[str, Any], client_id: str) -> str:
    response = http.call("POST", "/prompt", json={"prompt": graph, "client_id": client_id}, checked=False)
    if response.status_code == 400:
        raise _refused(response)
    check(response, CODE)
    body = json_of(response, CODE)
    if not isinstance(body, dict) or not isinstance(body.get("prompt_id"), str):
        raise ProviderError(f"{CODE} queued the prompt without a prompt_id",
                            details={"provider": CODE, "http_status": response.status_code})
    if body.get("node_errors"):
        # ComfyUI accepts a prompt when at least one output is valid and runs only that branch, listing the broken
        # ones in node_errors with a 200: the picture would be the wrong one, so the prompt is stopped and refused.
        _stop(http, body["prompt_id"])
        raise _refused(response)
    return body["prompt_id"]


def _refused(response) -> ProviderError:
    """ComfyUI's 400 for a workflow that fails validation, with its own words and the nodes at fault."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or ("error" not in body and not body.get("node_errors")):
        try:
            check(response, CODE)
        except ProviderError as exc:
            return exc
    error = body.get("error")
    node_errors = body.get("node_errors") if isinstance(body.get("node_errors"), dict) else {}
    if isinstance(error, dict):
        kind, said, more = error.get("type"), str(error.get("message") or ""), error.get("details")
    else:
        kind, said, more = None, str(error) if error else "some of its outputs failed validation", None
    nodes: dict[str, Any] = {}
    first = ""
    for node_id, found in list(node_errors.items())[:20]:
        found = found if isinstance(found, dict) else {}
        errors = [{"type": e.get("type"), "message": str(e.get("message", ""))[:200],
                   "details": str(e.get("details", ""))[:200]}
                  for e in (found.get("errors") or [])[:5] if isinstance(e, dict)]
        nodes[str(node_id)] = {"class_type": found.get("class_type"), "errors": errors}
        if errors and not first:
            first = f"node {node_id} ({found.get('class_type')}): {errors[0]['message']}: {errors[0]['details']}"
    text = f"{CODE} refused the workflow: {said}"
    if first:
        text += f"; {first}"
    elif more:
        text += f" ({more})"
    return ProviderBadRequest(text[:MAX_MESSAGE], details={
        "provider": CODE, "http_status": response.status_code, "error_type": kind, "node_ids": sorted(nodes),
        "node_errors": nodes})


def _history(http: "_Http", prompt_id: str) -> dict[str, Any] | None:
    body = json_of(http.call("GET", f"/history/{prompt_id}"), CODE)
    if not isinstance(body, dict):
        raise ProviderError(f"{CODE} answered /history with something else than an object",
                            details={"provider": CODE, "http_status": 200})
    entry = body.get(prompt_id)
    if not isinstance(entry, dict):
        return None  # not run yet: ComfyUI writes the entry when the prompt is done
    status = entry.get("status")
    if isinstance(status, dict) and not status.get("completed") and status.get("status_str") != "error":
        return None
    return entry


def _raise_for_status(entry: dict[str, Any], prompt_id: str) -> None:
    status = entry.get("status")
    if not isinstance(status, dict) or status.get("status_str") != "error":
        return
    messages = [m for m in status.get("messages") or [] if isinstance(m, list) and len(m) == 2]
    found = {event: data for event, data in messages if isinstance(data, dict)}
    if "execution_error" in found:
        err = found["execution_error"]
        kind = str(err.get("exception_type") or "")
        text = (f"{CODE} failed in node {err.get('node_id')} ({err.get('node_type')}): "
                f"{kind.rsplit('.', 1)[-1]}: {err.get('exception_message', '')}".strip())
        details = {"provider": CODE, "http_status": 200, "prompt_id": prompt_id, "node_id": err.get("node_id"),
                   "node_type": err.get("node_type"), "exception_type": kind}
        if "OutOfMemory" in kind:  # the GPU was full: another attempt, after other work, may fit
            raise ProviderUnavailable(text[:MAX_MESSAGE], details=details)
        raise ProviderError(text[:MAX_MESSAGE], details=details)
    if "execution_interrupted" in found:
        data = found["execution_interrupted"]
        raise ProviderError(f"{CODE} interrupted the prompt in node {data.get('node_id')} ({data.get('node_type')}): "
                            f"someone stopped it on the server",
                            details={"provider": CODE, "http_status": 200, "prompt_id": prompt_id})
    raise ProviderError(f"{CODE} ended the prompt with an error", details={"provider": CODE, "http_status": 200,
                                                                          "prompt_id": prompt_id})


def _ran_prompt(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The workflow as the server ran it: history's "prompt" is [number, prompt_id, prompt, extra_data, outputs]."""
    prompt = entry.get("prompt")
    if isinstance(prompt, list) and len(prompt) > 2 and isinstance(prompt[2], dict):
        return prompt[2]
    return None


def _read_back(ran: Mapping[str, Any], template: Mapping[str, Any], name: str, sent: Any) -> Any:
    for node_id, input_name in wf.whole_value_paths(template, name):
        value = ran.get(node_id, {}).get("inputs", {}).get(input_name)
        if value is not None and not isinstance(value, list):
            return value
    return sent


def _model_of(graph: Mapping[str, Any]) -> str | None:
    for node in graph.values():
        inputs = node.get("inputs", {}) if isinstance(node, dict) else {}
        for key in ("ckpt_name", "unet_name"):
            if isinstance(inputs.get(key), str):
                return inputs[key]
    return None


def _timing(entry: dict[str, Any]) -> dict[str, Any]:
    """How long the server worked on the prompt, from its messages' timestamps (newer servers send them)."""
    status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
    stamps = {m[0]: m[1].get("timestamp") for m in status.get("messages") or []
              if isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)}
    start, end = stamps.get("execution_start"), stamps.get("execution_success")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        return {"execution_ms": int(end - start)}
    return {}


# --- waiting and stopping ---


def _open_ws(account: Account, client_id: str, deadline: float):
    """The progress websocket, or None when it cannot be had (a proxy that refuses upgrades, an old server): the
    call then polls the history instead."""
    from websockets.sync.client import connect

    config = account.config
    parts = urlsplit(config.endpoint)
    path = parts.path.rstrip("/") + "/ws"
    url = urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, path,
                      urlencode({"clientId": client_id}), ""))
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    try:
        # Entered as a context manager: websockets 17.1+ deprecates a bare connect() (its first recv warns).
        return connect(url, open_timeout=min(5.0, remaining), additional_headers=_auth(account),
                       max_size=64 * 1024 * 1024, close_timeout=1.0, user_agent_header="iat-toolkit").__enter__()
    except Exception:  # noqa: BLE001 - refused, reset, timed out, not a websocket: all mean "poll instead"
        return None


def _wait(http: "_Http", ws, prompt_id: str, cancel: threading.Event | None, deadline: float) -> dict[str, Any]:
    from websockets.exceptions import ConnectionClosed

    next_history = time.monotonic() + HISTORY_EVERY_S
    interval = POLL_FIRST_S
    while True:
        check_cancel(cancel)
        now = time.monotonic()
        if now >= deadline:
            raise ProviderTimeout(f"{CODE} did not finish the prompt in time", details={"provider": CODE,
                                                                                        "prompt_id": prompt_id})
        if ws is not None:
            try:
                message = ws.recv(timeout=min(WS_TICK_S, deadline - now))
            except TimeoutError:
                message = None
            except ConnectionClosed:
                ws = None  # the server or a proxy closed it: poll from here on
                continue
            if _is_done(message, prompt_id) or time.monotonic() >= next_history:
                next_history = time.monotonic() + HISTORY_EVERY_S
                entry = _history(http, prompt_id)
                if entry is not None:
                    return entry
            continue
        entry = _history(http, prompt_id)
        if entry is not None:
            return entry
        pause = min(interval, max(0.0, deadline - time.monotonic()))
        if cancel is not None:
            cancel.wait(pause)
        else:
            time.sleep(pause)
        interval = min(interval * 1.5, POLL_MAX_S)


def _is_done(message: Any, prompt_id: str) -> bool:
    """Whether a websocket message says this prompt has ended. Binary frames (previews) and other prompts'
    messages are skipped."""
    if not isinstance(message, str):
        return False
    try:
        body = json.loads(message)
    except ValueError:
        return False
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        return False
    kind, data = body.get("type"), body["data"]
    if data.get("prompt_id") != prompt_id:
        return False
    if kind == "executing":
        return data.get("node") is None
    return kind in ("execution_success", "execution_error", "execution_interrupted")


def _stop(http: "_Http", prompt_id: str) -> None:
    """Best effort: the prompt off the queue, and interrupted if it is the one running. Errors are swallowed (the
    caller is already raising Cancelled or a timeout)."""
    try:
        http.call("POST", "/queue", json={"delete": [prompt_id]}, limit=STOP_TIMEOUT_S)
        queue = json_of(http.call("GET", "/queue", limit=STOP_TIMEOUT_S), CODE)
        running = queue.get("queue_running", []) if isinstance(queue, dict) else []
        if any(isinstance(item, list) and len(item) > 1 and item[1] == prompt_id for item in running):
            http.call("POST", "/interrupt", json={"prompt_id": prompt_id}, limit=STOP_TIMEOUT_S)
    except ProviderError:
        pass


# --- HTTP ---


def _auth(account: Account) -> dict[str, str]:
    key = account.secrets.get("api_key")
    return {"Authorization": f"Bearer {key}"} if key else {}


class _Http:
    """One httpx2 client for one call, every request bounded by what is left of the attempt."""

    def __init__(self, account: Account, deadline: float) -> None:
        import httpx2

        self._httpx = httpx2
        self.deadline = deadline
        self.client = httpx2.Client(base_url=account.config.endpoint + "/", headers=_auth(account),
                                    follow_redirects=False)

    def __enter__(self) -> "_Http":
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()

    def call(self, method: str, path: str, *, checked: bool = True, limit: float | None = None, **kwargs):
        if limit is None:
            limit = self.deadline - time.monotonic()
            if limit <= 0:
                raise ProviderTimeout(f"{CODE} did not answer in time", details={"provider": CODE})
        try:
            response = self.client.request(method, path.lstrip("/"), timeout=limit, **kwargs)
        except (self._httpx.HTTPError, OSError) as exc:
            raise transport_error(exc, CODE) from None
        if checked:
            check(response, CODE)
        return response
