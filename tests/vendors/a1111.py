"""A loopback AUTOMATIC1111 / Forge webui API: the routes, bodies and failures the `a1111` connector meets.

Shapes come from AUTOMATIC1111/stable-diffusion-webui v1.10 (fastapi 0.94, pydantic 1.x):
- modules/api/api.py: the /sdapi/v1 routes; api_middleware.handle_exception's error body {"error", "detail",
  "body", "errors"} with the exception's status_code or 500; --api-auth as HTTPBasic (401 "Not authenticated",
  "Incorrect username or password", answered through handle_exception, so without a WWW-Authenticate header);
  text2imgapi/img2imgapi (task ids, sampler fallback, "Init image not found" 404, alwayson script 422, the queue
  lock, decode_base64_to_image's 500 "Invalid encoded image", send_images), interruptapi, progressapi,
  get_sd_models.
- modules/api/models.py: request models generated from StableDiffusionProcessing's __init__: every field optional,
  unknown keys ignored, pydantic v1 coercion and its error texts in FastAPI's 422 {"detail": [{"loc", "msg",
  "type"}]}; TextToImageResponse {"images", "parameters", "info"}.
- modules/processing.py: get_fixed_seed (-1 -> random.randrange(4294967294)), an unknown override checkpoint
  dropped for the loaded one (process_images), the latent at width//8 x height//8, Processed.js() as `info`,
  the infotext; modules/sd_models.py CheckpointInfo (title, model_name, short hash, the alias list);
  modules/progress.py /internal/progress; modules/shared_state.py State (begin/end/interrupt).
- Forge (lllyasviel/stable-diffusion-webui-forge modules/api/api.py): txt2img refuses an unknown checkpoint with
  RuntimeError("model 'x' not found"), a 500.

Pictures are made, not sampled: a gradient and shapes chosen by a hash of prompt, negative prompt, seed, size and
checkpoint, so the same request always gives the same pixels; img2img blends the resized input with it by
denoising_strength (0 gives back the input); an interrupted job answers 200 with a noisy half-done picture.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web
from PIL import Image, ImageDraw, PngImagePlugin

MODELS_DIR = "/srv/webui/models/Stable-diffusion"
VERSION = "v1.10.1"


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint file as modules/sd_models.py CheckpointInfo describes it."""

    relpath: str  # under the models folder, e.g. "sdxl/juggernaut.safetensors"
    sha256: str

    @property
    def filename(self) -> str:
        return f"{MODELS_DIR}/{self.relpath}"

    @property
    def name_for_extra(self) -> str:
        return self.relpath.rsplit("/", 1)[-1].rsplit(".", 1)[0]

    @property
    def model_name(self) -> str:
        return self.relpath.replace("/", "_").rsplit(".", 1)[0]

    @property
    def shorthash(self) -> str:
        return self.sha256[:10]

    @property
    def legacy_hash(self) -> str:  # model_hash(): a hash of a slice of the file, 8 digits
        return hashlib.sha256(self.relpath.encode()).hexdigest()[:8]

    @property
    def title(self) -> str:
        return f"{self.relpath} [{self.shorthash}]"

    def ids(self) -> list[str]:
        name = self.relpath
        return [self.legacy_hash, self.model_name, self.title, name, self.name_for_extra,
                f"{name} [{self.legacy_hash}]", self.shorthash, self.sha256, f"{name} [{self.shorthash}]",
                f"{self.name_for_extra} [{self.shorthash}]"]

    def item(self) -> dict:  # SDModelItem
        return {"title": self.title, "model_name": self.model_name, "hash": self.shorthash, "sha256": self.sha256,
                "filename": self.filename, "config": None}


def checkpoint(relpath: str) -> Checkpoint:
    return Checkpoint(relpath, hashlib.sha256(("ckpt:" + relpath).encode()).hexdigest())


DEFAULT_CHECKPOINTS = (checkpoint("v1-5-pruned-emaonly.safetensors"), checkpoint("sdxl/juggernautXL_v9.safetensors"))
SAMPLERS = ("DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "Euler a", "Euler", "LMS", "Heun", "DPM2", "DDIM", "UniPC")
SCHEDULERS = ("Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
              "Align Your Steps", "Simple", "Normal", "DDIM", "Beta")


@dataclass
class A1111State:
    """The webui's configuration, its switchable failure modes, and what it received."""

    checkpoints: tuple[Checkpoint, ...] = DEFAULT_CHECKPOINTS
    loaded: str | None = None  # title of opts.sd_model_checkpoint; None: the first checkpoint
    flavor: str = "a1111"  # "forge": txt2img refuses an unknown checkpoint with a 500
    api: bool = True  # False: started without --api, so no /sdapi routes (404)
    nowebui: bool = False  # --nowebui: the API alone, without the UI's /internal/progress
    users: dict[str, str] = field(default_factory=dict)  # --api-auth user:password pairs
    fail_word: str = "__oom__"  # a prompt holding it fails inside sampling (CUDA out of memory, a 500)
    fail_after: int | None = None  # after this many pictures every generation fails that way (a dying GPU)
    step_s: float = 0.0  # seconds per sampling step, so that a job is in flight long enough to cancel
    samples_format: str = "png"  # opts.samples_format: png, jpg or webp
    received: list[tuple[str, dict]] = field(default_factory=list)  # (path, body) of every generation request
    interrupts: list[str | None] = field(default_factory=list)  # the task running at each /interrupt
    answered: list[tuple[str, int, bool]] = field(default_factory=list)  # (task id, steps done, interrupted)
    # modules/shared_state.py State and modules/progress.py
    job: str = ""
    job_count: int = 0
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    time_start: float = 0.0
    current_task: str | None = None
    pending: dict[str, float] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)

    def loaded_checkpoint(self) -> Checkpoint:
        for ckpt in self.checkpoints:
            if ckpt.title == self.loaded:
                return ckpt
        return self.checkpoints[0]

    def alias(self, name: Any) -> Checkpoint | None:
        for ckpt in self.checkpoints:
            if name in ckpt.ids():
                return ckpt
        return None


class HTTPError(Exception):
    """fastapi.HTTPException: answered by handle_exception as {"error": "HTTPException", ...}."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


class ProcessingError(Exception):
    """Any other exception inside a route (RuntimeError, OutOfMemoryError): a 500 with its type's name."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind, self.text = kind, text


def handle_exception(exc: Exception) -> web.Response:
    if isinstance(exc, HTTPError):
        err = {"error": "HTTPException", "detail": exc.detail, "body": "", "errors": str(exc)}
        return _json(err, exc.status)
    assert isinstance(exc, ProcessingError)
    return _json({"error": exc.kind, "detail": "", "body": "", "errors": exc.text}, 500)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


# --- request validation: the generated pydantic v1 models ---

COMMON_FIELDS = {
    "prompt": "str", "negative_prompt": "str", "styles": "list", "seed": "int", "subseed": "int",
    "subseed_strength": "float", "seed_resize_from_h": "int", "seed_resize_from_w": "int", "sampler_name": "str",
    "scheduler": "str", "batch_size": "int", "n_iter": "int", "steps": "int", "cfg_scale": "float", "width": "int",
    "height": "int", "restore_faces": "bool", "tiling": "bool", "do_not_save_samples": "bool",
    "do_not_save_grid": "bool", "eta": "float", "denoising_strength": "float", "s_min_uncond": "float",
    "s_churn": "float", "s_tmax": "float", "s_tmin": "float", "s_noise": "float", "override_settings": "dict",
    "override_settings_restore_afterwards": "bool", "refiner_checkpoint": "str", "refiner_switch_at": "float",
    "disable_extra_networks": "bool", "comments": "dict", "sampler_index": "str", "script_name": "str",
    "script_args": "list", "send_images": "bool", "save_images": "bool", "alwayson_scripts": "dict",
    "force_task_id": "str", "infotext": "str",
}
TXT2IMG_FIELDS = {**COMMON_FIELDS, "enable_hr": "bool", "firstphase_width": "int", "firstphase_height": "int",
                  "hr_scale": "float", "hr_upscaler": "str", "hr_second_pass_steps": "int", "hr_resize_x": "int",
                  "hr_resize_y": "int", "hr_checkpoint_name": "str", "hr_sampler_name": "str",
                  "hr_scheduler": "str", "hr_prompt": "str", "hr_negative_prompt": "str"}
IMG2IMG_FIELDS = {**COMMON_FIELDS, "init_images": "list", "resize_mode": "int", "image_cfg_scale": "float",
                  "mask": "str", "mask_blur_x": "int", "mask_blur_y": "int", "mask_blur": "int",
                  "inpainting_fill": "int", "inpaint_full_res": "bool", "inpaint_full_res_padding": "int",
                  "inpainting_mask_invert": "int", "initial_noise_multiplier": "float",
                  "include_init_images": "bool"}
DEFAULTS = {"prompt": "", "negative_prompt": None, "styles": None, "seed": -1, "subseed": -1, "subseed_strength": 0,
            "sampler_name": None, "scheduler": None, "batch_size": 1, "n_iter": 1, "steps": 50, "cfg_scale": 7.0,
            "width": 512, "height": 512, "denoising_strength": None, "override_settings": None,
            "override_settings_restore_afterwards": True, "sampler_index": "Euler", "script_name": None,
            "script_args": [], "send_images": True, "save_images": False, "alwayson_scripts": {},
            "force_task_id": None, "infotext": None}
IMG2IMG_DEFAULTS = {**DEFAULTS, "init_images": None, "resize_mode": 0, "denoising_strength": 0.75, "mask": None,
                    "include_init_images": False}
V1_ERRORS = {  # pydantic v1's message and type of each coercion failure
    "int": ("value is not a valid integer", "type_error.integer"),
    "float": ("value is not a valid float", "type_error.float"),
    "str": ("str type expected", "type_error.str"),
    "bool": ("value could not be parsed to a boolean", "type_error.bool"),
    "dict": ("value is not a valid dict", "type_error.dict"),
    "list": ("value is not a valid list", "type_error.list"),
}
TRUE_WORDS = {"1", "on", "t", "true", "y", "yes"}
FALSE_WORDS = {"0", "off", "f", "false", "n", "no"}


def _coerce(kind: str, value: Any) -> Any:
    """pydantic v1's lax coercion (Optional[...]: None passes); ValueError when it refuses."""
    if value is None:
        return None
    if kind == "int":
        if isinstance(value, (int, float)):  # bools too, and floats truncated, as pydantic v1 does
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError
    if kind == "float":
        if isinstance(value, (int, float, str)):
            return float(value)
        raise ValueError
    if kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)):
            return str(value)
        raise ValueError
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in TRUE_WORDS | FALSE_WORDS:
            return value.lower() in TRUE_WORDS
        raise ValueError
    if kind == "dict":
        if isinstance(value, dict):
            return value
        raise ValueError
    if isinstance(value, list):
        return value
    raise ValueError


def validate(body: Any, fields: dict[str, str], defaults: dict[str, Any]) -> tuple[dict | None, list[dict]]:
    if not isinstance(body, dict):
        return None, [{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}]
    values, errors = dict(defaults), []
    for key, value in body.items():
        kind = fields.get(key)
        if kind is None:
            continue  # Extra.ignore
        try:
            values[key] = _coerce(kind, value)
        except (ValueError, TypeError, OverflowError):
            msg, typ = V1_ERRORS[kind]
            errors.append({"loc": ["body", key], "msg": msg, "type": typ})
    return values, errors


# --- the app ---

STATE = web.AppKey("a1111_state", A1111State)
QUEUE_LOCK = web.AppKey("a1111_queue_lock", asyncio.Lock)


def make_app(state: A1111State) -> web.Application:
    app = web.Application(middlewares=[_fastapi_like(state)], client_max_size=64 * 2**20)
    app[STATE] = state
    app[QUEUE_LOCK] = asyncio.Lock()  # the webui's queue_lock: one generation at a time
    app.router.add_post("/sdapi/v1/txt2img", _txt2img)
    app.router.add_post("/sdapi/v1/img2img", _img2img)
    app.router.add_post("/sdapi/v1/interrupt", _interrupt)
    app.router.add_get("/sdapi/v1/progress", _progress)
    app.router.add_get("/sdapi/v1/sd-models", _sd_models)
    app.router.add_post("/internal/progress", _internal_progress)
    return app


def _fastapi_like(state: A1111State):
    @web.middleware
    async def middleware(request: web.Request, handler):
        started = time.time()
        if request.path.startswith("/sdapi/") and not state.api:
            return _json({"detail": "Not Found"}, 404)  # without --api the routes were never added
        if request.path.startswith("/internal/") and state.nowebui:
            return _json({"detail": "Not Found"}, 404)
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            return _json({"detail": "Not Found"}, 404)
        except web.HTTPMethodNotAllowed:
            return _json({"detail": "Method Not Allowed"}, 405)
        except (HTTPError, ProcessingError) as exc:
            response = handle_exception(exc)
        response.headers["X-Process-Time"] = str(round(time.time() - started, 4))
        return response

    return middleware


async def _json_body(request: web.Request) -> tuple[Any, web.Response | None]:
    """FastAPI 0.94: the body is read and decoded before dependencies run (a decode error is a 422)."""
    try:
        raw = await request.read()
    except ConnectionResetError:  # the client left before its body was read: starlette's ClientDisconnect
        return None, web.Response(status=400, text="client disconnected")
    if not raw:
        return None, _json({"detail": [{"loc": ["body"], "msg": "field required", "type": "value_error.missing"}]},
                           422)
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", 0)
        msg = getattr(exc, "msg", str(exc))
        return None, _json({"detail": [{"loc": ["body", pos], "msg": msg, "type": "value_error.jsondecode",
                                        "ctx": {"msg": msg, "pos": pos}}]}, 422)


def _authorize(request: web.Request, state: A1111State) -> None:
    """Api.auth through HTTPBasic: its 401s go through handle_exception like any HTTPException."""
    if not state.users:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, param = header.partition(" ")
    if scheme.lower() != "basic" or not param:
        raise HTTPError(401, "Not authenticated")
    try:
        user, sep, password = base64.b64decode(param).decode("ascii").partition(":")
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise HTTPError(401, "Invalid authentication credentials") from None
    if not sep:
        raise HTTPError(401, "Invalid authentication credentials")
    if user not in state.users or state.users[user] != password:
        raise HTTPError(401, "Incorrect username or password")


async def _txt2img(request: web.Request) -> web.Response:
    return await _generate(request, "txt2img")


async def _img2img(request: web.Request) -> web.Response:
    return await _generate(request, "img2img")


def _sampler_and_scheduler(sampler: str | None, scheduler: str | None) -> tuple[str, str]:
    """sd_samplers.get_sampler_and_scheduler: an unknown name falls back to the first sampler/scheduler, and a
    sampler name may carry its schedule ("DPM++ 2M Karras")."""
    found_scheduler = scheduler if scheduler in SCHEDULERS else SCHEDULERS[0]
    name = sampler or SAMPLERS[0]
    for label in SCHEDULERS:
        if name.endswith(" " + label):
            found_scheduler, name = label, name[: -len(" " + label)]
            break
    return (name if name in SAMPLERS else SAMPLERS[0]), found_scheduler


def _fixed_seed(seed: Any) -> int:
    if seed is None or seed == "" or seed == -1:
        return int(random.randrange(4294967294))
    return int(seed)


async def _generate(request: web.Request, kind: str) -> web.Response:
    state: A1111State = request.app[STATE]
    body, refused = await _json_body(request)
    if refused is not None:
        return refused
    _authorize(request, state)
    fields, defaults = (TXT2IMG_FIELDS, DEFAULTS) if kind == "txt2img" else (IMG2IMG_FIELDS, IMG2IMG_DEFAULTS)
    req, errors = validate(body, fields, defaults)
    if errors:
        return _json({"detail": errors}, 422)
    state.received.append((request.path, body))
    overrides = req.get("override_settings") or {}
    wanted = overrides.get("sd_model_checkpoint")
    if kind == "txt2img" and state.flavor == "forge" and wanted is not None and state.alias(wanted) is None:
        raise ProcessingError("RuntimeError", f"model {wanted!r} not found")
    task_id = req.get("force_task_id") or f"task({kind}-{random.getrandbits(40):x})"
    if kind == "img2img" and req.get("init_images") is None:
        raise HTTPError(404, "Init image not found")
    if req.get("script_name"):
        raise HTTPError(422, f"Script '{req['script_name']}' not found")
    for name in req.get("alwayson_scripts") or {}:  # no extension scripts are installed here
        raise HTTPError(422, f"always on script {name} not found")
    sampler, scheduler = _sampler_and_scheduler(req.get("sampler_name") or req.get("sampler_index"),
                                                req.get("scheduler"))
    state.pending[task_id] = time.time()

    async with request.app[QUEUE_LOCK]:
        state.job, state.job_count, state.job_no = f"scripts_{kind}", -1, 0
        state.sampling_step, state.sampling_steps = 0, 0
        state.interrupted, state.time_start = False, time.time()
        state.current_task = task_id
        state.pending.pop(task_id, None)
        try:
            inits = [_decode_image(x) for x in req.get("init_images") or []] if kind == "img2img" else []
            # process_images: an override naming no known checkpoint is dropped for the loaded one.
            ckpt = state.alias(wanted) or state.loaded_checkpoint()
            seed = _fixed_seed(req.get("seed"))
            steps = int(req.get("steps") or 0)
            width, height = int(req.get("width") or 0), int(req.get("height") or 0)
            if width < 8 or height < 8 or steps < 1:
                raise ProcessingError("RuntimeError", "cannot sample an empty latent (width, height and steps "
                                                      "must be positive)")
            state.job_count, state.sampling_steps = int(req.get("n_iter") or 1), steps
            dying = state.fail_after is not None and len(state.answered) >= state.fail_after
            if dying or state.fail_word and state.fail_word in (req.get("prompt") or ""):
                raise ProcessingError("OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; "
                                                          "8.00 GiB total capacity)")
            done = 0
            for _ in range(steps):
                if state.interrupted:
                    break
                if state.step_s:
                    await asyncio.sleep(state.step_s)
                done += 1
                state.sampling_step = done
            interrupted = state.interrupted
            w8, h8 = width // 8 * 8, height // 8 * 8
            prompt, negative = req.get("prompt") or "", req.get("negative_prompt") or ""
            picture = render(prompt, negative, seed, w8, h8, ckpt.shorthash)
            if inits:
                strength = float(req["denoising_strength"] if req.get("denoising_strength") is not None else 0.75)
                base = _resize(inits[0], w8, h8, int(req.get("resize_mode") or 0))
                picture = base + (picture - base) * np.float32(strength)
            if interrupted:
                picture = _half_done(picture, seed, done / steps)
            infotext = _infotext(req, prompt, negative, seed, sampler, scheduler, w8, h8, ckpt, kind)
            image = Image.fromarray(np.clip(picture + 0.5, 0, 255).astype(np.uint8), "RGB")
            image.info["parameters"] = infotext
            encoded = _encode(image, state.samples_format)
            # finish_task runs only when processing returned (not in a finally): a failed job stays "current".
            state.finished.append(task_id)
            del state.finished[:-16]
            if state.current_task == task_id:
                state.current_task = None
            state.answered.append((task_id, done, interrupted))
        finally:
            state.job, state.job_count = "", 0

    info = {
        "prompt": prompt, "all_prompts": [prompt], "negative_prompt": negative, "all_negative_prompts": [negative],
        "seed": seed, "all_seeds": [seed], "subseed": seed + 1, "all_subseeds": [seed + 1],
        "subseed_strength": req.get("subseed_strength") or 0, "width": w8, "height": h8, "sampler_name": sampler,
        "cfg_scale": req.get("cfg_scale"), "steps": steps, "batch_size": 1, "restore_faces": None,
        "face_restoration_model": None, "sd_model_name": ckpt.name_for_extra, "sd_model_hash": ckpt.shorthash,
        "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": req.get("denoising_strength"), "extra_generation_params": {"Schedule type": scheduler},
        "index_of_first_image": 0, "infotexts": [infotext], "styles": req.get("styles") or [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": 1,
        "is_using_inpainting_conditioning": False, "version": VERSION,
    }
    parameters = {k: v for k, v in req.items()}
    if kind == "img2img" and not req.get("include_init_images"):
        parameters["init_images"], parameters["mask"] = None, None
    images = [encoded] if req.get("send_images", True) is not False else []
    return _json({"images": images, "parameters": parameters, "info": json.dumps(info)})


def _decode_image(encoding: Any) -> np.ndarray:
    """decode_base64_to_image: a data: URL or bare base64; anything unreadable is a 500 "Invalid encoded image"."""
    if not isinstance(encoding, str):
        raise HTTPError(500, "Invalid encoded image")
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";")[1].split(",")[1]
    try:
        with Image.open(io.BytesIO(base64.b64decode(encoding))) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32)
    except Exception:  # noqa: BLE001 - the webui catches everything here too
        raise HTTPError(500, "Invalid encoded image") from None


def _resize(pixels: np.ndarray, width: int, height: int, mode: int) -> np.ndarray:
    """images.resize_image: 0 just resize, 1 crop and resize (fill the frame, centre crop), 2 resize and fill
    (fit inside, edges stretched), 3 latent upscale (a plain resize here)."""
    image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")
    if mode == 1:
        ratio = max(width / image.width, height / image.height)
        scaled = image.resize((max(width, round(image.width * ratio)), max(height, round(image.height * ratio))),
                              Image.Resampling.LANCZOS)
        left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
        image = scaled.crop((left, top, left + width, top + height))
    elif mode == 2:
        ratio = min(width / image.width, height / image.height)
        fitted = image.resize((max(1, round(image.width * ratio)), max(1, round(image.height * ratio))),
                              Image.Resampling.LANCZOS)
        canvas = fitted.resize((width, height), Image.Resampling.BILINEAR)
        canvas.paste(fitted, ((width - fitted.width) // 2, (height - fitted.height) // 2))
        image = canvas
    else:
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.float32)


def render(prompt: str, negative: str, seed: int, width: int, height: int, model: str) -> np.ndarray:
    """The picture a request stands for: float32 H x W x 3, the same for the same inputs."""
    digest = hashlib.sha256("\x00".join([prompt, negative, str(seed), str(width), str(height), model]).encode())
    rng = np.random.default_rng(int.from_bytes(digest.digest()[:8], "big"))
    top, bottom = rng.uniform(20, 235, 3).astype(np.float32), rng.uniform(20, 235, 3).astype(np.float32)
    y = (np.arange(height, dtype=np.float32) / np.float32(max(1, height - 1)))[:, None, None]
    x = (np.arange(width, dtype=np.float32) / np.float32(max(1, width - 1)))[None, :, None]
    tilt = np.float32(rng.uniform(-0.4, 0.4))
    t = np.clip(y + (x - np.float32(0.5)) * tilt, 0, 1)
    picture = top + (bottom - top) * t
    image = Image.fromarray(np.clip(picture + 0.5, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.08, 0.25) * min(width, height)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    return np.asarray(image, dtype=np.float32)


def _half_done(picture: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    noise = np.random.default_rng(seed).uniform(0, 255, picture.shape).astype(np.float32)
    return noise + (picture - noise) * np.float32(fraction)


def _infotext(req: dict, prompt: str, negative: str, seed: int, sampler: str, scheduler: str, width: int,
              height: int, ckpt: Checkpoint, kind: str) -> str:
    """processing.create_infotext: the text the webui writes into the PNG's "parameters" chunk."""
    parts = [f"Steps: {req.get('steps')}", f"Sampler: {sampler}", f"Schedule type: {scheduler}",
             f"CFG scale: {req.get('cfg_scale')}", f"Seed: {seed}", f"Size: {width}x{height}",
             f"Model hash: {ckpt.shorthash}", f"Model: {ckpt.name_for_extra}"]
    if kind == "img2img":
        parts.append(f"Denoising strength: {req.get('denoising_strength')}")
    parts.append(f"Version: {VERSION}")
    negative_line = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{negative_line}\n{', '.join(parts)}"


def _encode(image: Image.Image, samples_format: str) -> str:
    """encode_pil_to_base64: PNG with the image's text chunks, or JPEG/WebP."""
    buf = io.BytesIO()
    if samples_format == "png":
        meta = PngImagePlugin.PngInfo()
        for key, value in image.info.items():
            meta.add_text(key, value)
        image.save(buf, format="PNG", pnginfo=meta)
    elif samples_format in ("jpg", "jpeg"):
        image.save(buf, format="JPEG", quality=90)
    else:
        image.save(buf, format="WEBP", quality=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


async def _interrupt(request: web.Request) -> web.Response:
    state: A1111State = request.app[STATE]
    _authorize(request, state)
    state.interrupted = True  # shared.state.interrupt(): whatever job runs now; the next begin() clears it
    state.interrupts.append(state.current_task if state.job else None)
    return _json({})


async def _progress(request: web.Request) -> web.Response:
    state: A1111State = request.app[STATE]
    _authorize(request, state)
    snapshot = {"skipped": False, "interrupted": state.interrupted, "stopping_generation": False, "job": state.job,
                "job_count": state.job_count, "job_timestamp": "0", "job_no": state.job_no,
                "sampling_step": state.sampling_step, "sampling_steps": state.sampling_steps}
    if state.job_count == 0:
        return _json({"progress": 0, "eta_relative": 0, "state": snapshot, "current_image": None, "textinfo": None})
    progress = 0.01
    if state.job_count > 0:
        progress += state.job_no / state.job_count
    if state.sampling_steps > 0 and state.job_count > 0:
        progress += 1 / state.job_count * state.sampling_step / state.sampling_steps
    elapsed = time.time() - state.time_start
    return _json({"progress": min(progress, 1), "eta_relative": elapsed / progress - elapsed, "state": snapshot,
                  "current_image": None, "textinfo": None})


async def _sd_models(request: web.Request) -> web.Response:
    state: A1111State = request.app[STATE]
    _authorize(request, state)
    return _json([c.item() for c in state.checkpoints])


async def _internal_progress(request: web.Request) -> web.Response:
    """modules/progress.py progressapi: on the UI's app, outside --api-auth."""
    state: A1111State = request.app[STATE]
    body, refused = await _json_body(request)
    if refused is not None:
        return refused
    id_task = body.get("id_task") if isinstance(body, dict) else None
    active = id_task is not None and id_task == state.current_task
    queued = id_task in state.pending
    completed = id_task in state.finished
    answer = {"active": active, "queued": queued, "paused": False, "completed": completed, "progress": None,
              "eta": None, "live_preview": None, "id_live_preview": -1,
              "textinfo": "Queued..." if queued else "Waiting..."}
    if active:
        steps = state.sampling_steps or 1
        answer.update(progress=min(state.sampling_step / steps, 1.0), textinfo=None)
    return _json(answer)
