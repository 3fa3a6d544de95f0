"""`a1111`: AUTOMATIC1111 stable-diffusion-webui and its fork Forge, through the webui's own API (`--api`).

The contract, as the webui's code states it (AUTOMATIC1111/stable-diffusion-webui v1.10 `modules/api/api.py`,
`modules/api/models.py`, `modules/processing.py`, `modules/progress.py`; lllyasviel/stable-diffusion-webui-forge
keeps the same routes and shapes):

- `POST /sdapi/v1/txt2img` and `/sdapi/v1/img2img` take a model generated from StableDiffusionProcessing's
  __init__: every field optional, unknown keys ignored, a value of the wrong type refused by FastAPI with 422
  `{"detail": [{"loc", "msg", "type"}]}`. The answer is `{"images": [base64], "parameters": {...}, "info": "<the
  JSON text of Processed.js()>"}`; info carries the seed really used (-1 becomes random.randrange(4294967294)),
  `all_seeds`, `sd_model_name`, `sd_model_hash`, `sampler_name`, `steps`. Images are PNG, or JPEG/WebP when the
  webui's samples_format says so (encode_pil_to_base64); all three are read and re-encoded as PNG here.
- The latent is width/8 x height/8, so a size that is not a multiple of 8 comes back floored to one; the picture
  is resized (LANCZOS) to the size asked.
- Failures go through api_middleware's handle_exception: `{"error": <exception type>, "detail", "body", "errors":
  str(e)}` with the exception's status (500 for a plain exception). `--api-auth` is HTTP Basic; wrong credentials
  are 401 "Incorrect username or password". Without `--api` the /sdapi routes do not exist: 404
  `{"detail": "Not Found"}`.
- An `override_settings.sd_model_checkpoint` the webui does not know: A1111 drops it and generates with the loaded
  checkpoint (process_images), Forge raises RuntimeError("model 'x' not found") (a 500). So the configured model
  is resolved against `GET /sdapi/v1/sd-models` (cached a while) before generating, the aliases matched the way
  CheckpointInfo.ids does, and the answer's sd_model_name/sd_model_hash checked against it.
- `POST /sdapi/v1/interrupt` stops whatever job runs now, and that job still answers 200 with its half-done
  picture. A cancel (or a timeout) therefore asks `POST /internal/progress {"id_task"}` whether the call's own
  task (sent as force_task_id) is the active one, interrupts only then, and keeps watching in the background
  while it is still queued behind another caller's job (or not yet registered). Only a server that cannot say
  (API-only `--nowebui` has no /internal/progress) is interrupted blindly; a webui too old to take force_task_id
  never names the task active, so its job runs to the end and the answer is dropped.

Reference images have no place in the A1111 API (ControlNet/IP-Adapter units are an extension's alwayson_scripts
with installation-specific model names, not sent here): they are ignored and the result's usage says so.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import threading
import time
import uuid
from typing import Any, Mapping

from pydantic import Field, field_validator

from iat.errors import ProviderAuthFailed, ProviderBadRequest, ProviderError, ProviderTimeout
from iat.providers.base import (
    MAX_SEED, Account, BaseProvider, Cancelled, GenerateRequest, GenerateResult, ProviderConfig, ProviderStatus,
    check_cancel, encode_png,
)
from iat.providers.http import MAX_MESSAGE, error_for, json_of, transport_error, vendor_message

CODE = "a1111"
DEFAULT_ENDPOINT = "http://127.0.0.1:7860"
POLL_S = 0.05  # how often a call in flight looks at its cancel event
WATCH_S = 0.25  # how often a cancelled call still queued on the server asks whether it has started
WATCH_MAX_S = 60.0  # the longest a cancelled call watches for its queued task to start
CONTROL_TIMEOUT_S = 3.0  # /internal/progress and /interrupt: small local answers
MODELS_TTL_S = 300.0  # how long a server's checkpoint list is trusted before it is read again
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # what encode_pil_to_base64 can send (opts.samples_format)
FORGE_MODEL_MISSING = re.compile(r"model '.*' not found")


class A1111Config(ProviderConfig):
    """provider_accounts.config_json of `a1111`. A stage's own parameters (the style guide's `steps`, `cfg`,
    `strength`, `sampler`, `scheduler`) override these defaults key by key."""

    endpoint: str = Field(DEFAULT_ENDPOINT, max_length=2048, description="Base URL of the webui (started with --api)")
    model: str | None = Field(None, min_length=1, max_length=256,
                              description="Checkpoint: its title as /sdapi/v1/sd-models lists it "
                                          "('name.safetensors [hash]'), its name or its hash; none: the one loaded")
    steps: int = Field(25, ge=1, le=500, description="Sampling steps")
    cfg_scale: float = Field(7.0, ge=0, le=100, description="Classifier-free guidance scale")
    sampler_name: str = Field("DPM++ 2M", min_length=1, max_length=64, description="Sampler, as /sdapi/v1/samplers "
                                                                                    "names it")
    scheduler: str = Field("Automatic", min_length=1, max_length=64, description="Schedule type (webui 1.9+)")
    denoising_strength: float = Field(0.5, ge=0, le=1, description="img2img: how far from the input image to go")
    resize_mode: int = Field(0, ge=0, le=3, description="img2img: 0 just resize, 1 crop and resize, 2 resize and "
                                                        "fill, 3 latent upscale")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


class A1111Provider(BaseProvider):
    code = CODE
    config_model = A1111Config
    optional_secrets = ("username", "password")  # the webui's --api-auth user:password (HTTP Basic)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client = None
        self._models: dict[tuple[str, str], tuple[float, list[dict]]] = {}  # (endpoint, user) -> (read at, list)

    # --- the interface ---

    def status(self, account: Account) -> ProviderStatus:
        base = super().status(account)
        if base.ready and account.secrets.get("password") and not account.secrets.get("username"):
            return ProviderStatus(False, "provider a1111 has a password but no username; store the username of the "
                                         "webui's --api-auth with secrets.set")
        return base

    def probe(self, account: Account, *, timeout: float) -> dict[str, Any]:
        config = _config(account)
        deadline = time.monotonic() + timeout
        models = self._read_models(config.endpoint, account, deadline)
        found = None
        if config.model:
            found = _find_checkpoint(models, config.model)
            if found is None:
                raise _missing_model(config.model, models)
        titles = [m.get("title") for m in models]
        return {"endpoint": config.endpoint, "models": titles[:50], "model_count": len(models),
                "model": found.get("title") if found else None}

    def generate(self, request: GenerateRequest, account: Account | None = None, *,
                 cancel: threading.Event | None = None, timeout: float | None = None) -> GenerateResult:
        check_cancel(cancel)
        account = account or self.default_account()
        config = _config(account)
        deadline = time.monotonic() + (timeout if timeout is not None else config.timeout_s)
        settings = _settings(config, request.params)
        checkpoint = None
        if config.model:
            checkpoint = self._resolve(config, account, deadline)
            check_cancel(cancel)

        task_id = f"task(iat-{uuid.uuid4().hex})"
        payload: dict[str, Any] = {
            "prompt": request.prompt, "negative_prompt": request.negative_prompt,
            "seed": request.seed if request.seed is not None else -1,
            "width": request.width, "height": request.height,
            "steps": settings["steps"], "cfg_scale": settings["cfg_scale"],
            "sampler_name": settings["sampler_name"], "scheduler": settings["scheduler"],
            "batch_size": 1, "n_iter": 1,
            # The checkpoint for this call only: the webui's own setting is put back afterwards.
            "override_settings": {"sd_model_checkpoint": config.model} if config.model else {},
            "override_settings_restore_afterwards": True,
            "send_images": True, "save_images": False,
            "force_task_id": task_id,  # tells a cancel this call's job from others' (older webuis ignore it)
        }
        path = "/sdapi/v1/txt2img"
        if request.mode == "img2img":
            path = "/sdapi/v1/img2img"
            payload["init_images"] = [base64.b64encode(request.init_image).decode("ascii")]
            payload["denoising_strength"] = settings["denoising_strength"]
            payload["resize_mode"] = config.resize_mode

        response = self._post_watched(config.endpoint, path, payload, account, task_id, deadline, cancel)
        check_cancel(cancel)
        image, info = _read_answer(response)
        if checkpoint is not None and not _same_checkpoint(checkpoint, info):
            with self._lock:  # the list was stale: read it again next time
                self._models.pop(_models_key(config.endpoint, account), None)
            raise ProviderBadRequest(
                f"a1111 generated with checkpoint {info.get('sd_model_name')!r} instead of {config.model!r} (the "
                f"webui falls back to its loaded checkpoint when it cannot load the one asked for)",
                details={"provider": CODE, "http_status": response.status_code, "model": config.model,
                         "used": info.get("sd_model_name"), "used_hash": info.get("sd_model_hash")})
        seed = _seed(info, response.status_code)
        if image.size != (request.width, request.height):
            image = image.resize((request.width, request.height), _lanczos())
        usage: dict[str, Any] = {"units": 1.0, "cost_usd": config.pricing.usd_per_image, "currency": "USD",
                                 "source": "pricing"}
        for key in ("steps", "sampler_name", "sd_model_hash"):
            if info.get(key) is not None:
                usage[key] = info[key]
        if request.reference_images:
            usage["reference_images_ignored"] = len(request.reference_images)
            usage["note"] = "the A1111 API takes no reference images; they were not sent"
        model = info.get("sd_model_name") or (checkpoint or {}).get("title") or config.model or "a1111"
        return GenerateResult(image=encode_png(image), seed=seed, model=str(model), width=request.width,
                              height=request.height, usage=usage, http_status=response.status_code)

    # --- HTTP ---

    def _http(self):
        with self._lock:
            if self._client is None:
                import httpx2

                # No proxies from the environment: the webui is a local or LAN server.
                self._client = httpx2.Client(trust_env=False, follow_redirects=False)
            return self._client

    def _request(self, method: str, url: str, account: Account, timeout: float, **kwargs):
        import httpx2

        try:
            return self._http().request(method, url, auth=_auth(account),
                                        timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)), **kwargs)
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes a typed error
            raise transport_error(exc, CODE) from None

    def _post_watched(self, endpoint: str, path: str, payload: dict, account: Account, task_id: str,
                      deadline: float, cancel: threading.Event | None):
        """The generation POST in a worker thread, so that a cancel or the deadline is noticed while the webui is
        still sampling; then the webui is told to stop this call's job."""
        box: dict[str, Any] = {}
        done = threading.Event()
        remaining = _remaining(deadline)

        def work() -> None:
            try:
                box["response"] = self._request("POST", endpoint + path, account, remaining, json=payload)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name="a1111-generate", daemon=True).start()
        while not done.wait(POLL_S):
            if cancel is not None and cancel.is_set():
                self._stop(endpoint, account, task_id, done)
                raise Cancelled()
            if time.monotonic() > deadline + 1.0:  # the client's own timeout should have fired first
                self._stop_later(endpoint, account, task_id)
                raise ProviderTimeout(f"{CODE} did not answer in time", details={"provider": CODE})
        error = box.get("error")
        if error is not None:
            if isinstance(error, ProviderTimeout):  # the webui may still be sampling (or not yet started) it
                self._stop_later(endpoint, account, task_id)
            raise error
        response = box["response"]
        if not 200 <= response.status_code < 300:
            raise _error(response)
        return response

    def _stop(self, endpoint: str, account: Account, task_id: str, request_done: threading.Event | None) -> None:
        """Interrupts this call's job when it is the one running. When it is still queued behind someone else's
        job (or not registered yet), a watcher interrupts it once it starts; it gives up when the call's request
        ends (`request_done`, None when the client already gave up on it), or after WATCH_MAX_S."""
        state = self._task_state(endpoint, account, task_id)
        if state == "waiting" and not (request_done is not None and request_done.is_set()):
            threading.Thread(target=self._watch, args=(endpoint, account, task_id, request_done or threading.Event()),
                             daemon=True, name="a1111-interrupt-watch").start()
        elif state in ("active", "unknown"):
            self._interrupt(endpoint, account)

    def _stop_later(self, endpoint: str, account: Account, task_id: str) -> None:
        """After a timeout: the same, in the background, so that the attempt ends at its deadline."""
        threading.Thread(target=self._stop, args=(endpoint, account, task_id, None), daemon=True,
                         name="a1111-timeout-stop").start()

    def _watch(self, endpoint: str, account: Account, task_id: str, request_done: threading.Event) -> None:
        until = time.monotonic() + WATCH_MAX_S
        while not request_done.wait(WATCH_S) and time.monotonic() < until:
            state = self._task_state(endpoint, account, task_id)
            if state in ("active", "unknown"):
                self._interrupt(endpoint, account)
                return
            if state in ("completed", "gone"):
                return

    def _task_state(self, endpoint: str, account: Account, task_id: str) -> str:
        """active | waiting (queued, or not registered yet) | completed | unknown (the server cannot say: no
        /internal/progress, as with --nowebui) | gone (the server does not answer)."""
        try:
            response = self._request("POST", endpoint + "/internal/progress", account, CONTROL_TIMEOUT_S,
                                     json={"id_task": task_id, "id_live_preview": -1})
        except ProviderError:
            return "gone"
        if response.status_code != 200:
            return "unknown"
        try:
            body = response.json()
        except ValueError:
            return "unknown"
        if not isinstance(body, dict):
            return "unknown"
        if body.get("active"):
            return "active"
        if body.get("completed"):
            return "completed"
        return "waiting"

    def _interrupt(self, endpoint: str, account: Account) -> None:
        try:
            self._request("POST", endpoint + "/sdapi/v1/interrupt", account, CONTROL_TIMEOUT_S)
        except ProviderError:
            pass  # the webui is gone: nothing is left to stop

    # --- checkpoints ---

    def _read_models(self, endpoint: str, account: Account, deadline: float) -> list[dict]:
        response = self._request("GET", endpoint + "/sdapi/v1/sd-models", account, _remaining(deadline))
        if not 200 <= response.status_code < 300:
            raise _error(response)
        body = json_of(response, CODE)
        if not isinstance(body, list) or not all(isinstance(m, dict) and isinstance(m.get("title"), str)
                                                 for m in body):
            raise ProviderError("a1111 answered /sdapi/v1/sd-models with something that is not a list of "
                                "checkpoints", details={"provider": CODE, "http_status": response.status_code})
        with self._lock:
            self._models[_models_key(endpoint, account)] = (time.monotonic(), body)
        return body

    def _resolve(self, config: A1111Config, account: Account, deadline: float) -> dict:
        """The configured checkpoint's entry in the server's list, read again when it is old or lacks the model."""
        with self._lock:
            cached = self._models.get(_models_key(config.endpoint, account))
        if cached is not None and time.monotonic() - cached[0] < MODELS_TTL_S:
            found = _find_checkpoint(cached[1], config.model)
            if found is not None:
                return found
        models = self._read_models(config.endpoint, account, deadline)
        found = _find_checkpoint(models, config.model)
        if found is None:
            raise _missing_model(config.model, models)
        return found


# --- helpers ---


def _config(account: Account) -> A1111Config:
    if isinstance(account.config, A1111Config):
        return account.config
    return A1111Config.model_validate(account.config.model_dump(exclude_unset=True))


def _auth(account: Account):
    user = account.secrets.get("username")
    if not user:
        return None
    import httpx2

    return httpx2.BasicAuth(user, account.secrets.get("password") or "")


def _models_key(endpoint: str, account: Account) -> tuple[str, str]:
    return endpoint, account.secrets.get("username") or ""


def _remaining(deadline: float) -> float:
    return max(0.05, deadline - time.monotonic())


def _lanczos():
    from PIL import Image

    return Image.Resampling.LANCZOS


def _settings(config: A1111Config, params: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling settings of this call: the stage's parameters over the account's defaults, checked before
    anything is sent (a bad style-guide value is the caller's mistake, not the webui's)."""

    def pick(*names: str, default: Any) -> tuple[str, Any]:
        for name in names:
            if name in params:
                return name, params[name]
        return names[0], default

    def number(name: str, value: Any, low: float, high: float, *, integer: bool = False) -> float | int:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and integer:
            ok = float(value).is_integer()
        if not ok or not low <= value <= high:
            kind = "an integer" if integer else "a number"
            raise ProviderBadRequest(f"params.{name} must be {kind} from {low:g} to {high:g}",
                                     details={"provider": CODE, "param": name})
        return int(value) if integer else float(value)

    def text(name: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > 64:
            raise ProviderBadRequest(f"params.{name} must be a name of at most 64 characters",
                                     details={"provider": CODE, "param": name})
        return value.strip()

    name, steps = pick("steps", default=config.steps)
    out: dict[str, Any] = {"steps": number(name, steps, 1, 500, integer=True)}
    name, cfg = pick("cfg", "cfg_scale", default=config.cfg_scale)
    out["cfg_scale"] = number(name, cfg, 0, 100)
    name, strength = pick("strength", "denoising_strength", default=config.denoising_strength)
    out["denoising_strength"] = number(name, strength, 0, 1)
    name, sampler = pick("sampler", "sampler_name", default=config.sampler_name)
    out["sampler_name"] = text(name, sampler)
    name, scheduler = pick("scheduler", default=config.scheduler)
    out["scheduler"] = text(name, scheduler)
    return out


def _error(response) -> ProviderError:
    """The typed error of a webui failure (the mapping of iat.providers.http), in the webui's own words."""
    status = response.status_code
    try:
        body = json.loads(response.text)
    except Exception:  # noqa: BLE001 - not JSON (or not even text): the generic reading below
        body = None
    message, extra = _vendor_words(body)
    if message is None:
        message = vendor_message(response)
    details = {"provider": CODE, "http_status": status, **extra}
    if status == 404 and body == {"detail": "Not Found"}:
        path = response.request.url.path if response.request is not None else ""
        return ProviderBadRequest(f"a1111 answered 404 for {path}: the webui's API is not enabled; start the webui "
                                  f"with --api (COMMANDLINE_ARGS=--api in webui-user)", details=details)
    if status == 500 and isinstance(body, dict) and FORGE_MODEL_MISSING.search(str(body.get("errors", ""))):
        return ProviderBadRequest(f"a1111 answered 500: {message} (the checkpoint is not on the server)",
                                  details=details)
    err = error_for(status, CODE, message, response.headers)
    if isinstance(err, ProviderAuthFailed):
        return ProviderAuthFailed(f"a1111 answered {status}: {message} (the secrets username and password must "
                                  f"match the webui's --api-auth)", details=details)
    err.details.update(extra)
    return err


def _vendor_words(body: Any) -> tuple[str | None, dict[str, Any]]:
    """The message of the webui's error bodies: FastAPI's validation list, handle_exception's dict, or a detail."""
    if not isinstance(body, dict):
        return None, {}
    detail = body.get("detail")
    if isinstance(detail, list):  # FastAPI's RequestValidationError: [{"loc", "msg", "type"}]
        problems = [{"loc": [str(p) for p in e.get("loc", [])], "msg": str(e.get("msg", "")),
                     "type": str(e.get("type", ""))} for e in detail if isinstance(e, dict)]
        words = "; ".join(f"{'.'.join(p['loc'])}: {p['msg']}" for p in problems)
        return words[:MAX_MESSAGE] or "invalid request", {"validation_errors": problems[:10]}
    if "error" in body and "errors" in body:  # api_middleware's handle_exception
        kind = str(body.get("error") or "")
        words = detail if isinstance(detail, str) and detail else str(body.get("errors") or "")
        if kind and kind != "HTTPException":
            words = f"{kind}: {words}"
        return words[:MAX_MESSAGE], {"vendor_error": kind}
    if isinstance(detail, str):
        return detail[:MAX_MESSAGE], {}
    return None, {}


def _read_answer(response) -> tuple[Any, dict]:
    """The picture and the parsed info of a 200 from txt2img/img2img; anything else there is a broken answer."""
    from PIL import Image

    status = response.status_code
    details = {"provider": CODE, "http_status": status}
    body = json_of(response, CODE)
    if not isinstance(body, dict):
        raise ProviderError("a1111 answered with JSON that is not an object", details=details)
    images = body.get("images")
    if not isinstance(images, list) or not images or not isinstance(images[0], str):
        raise ProviderError("a1111 answered without an image", details=details)
    encoded = images[0]
    if encoded.startswith("data:image/"):
        encoded = encoded.partition(",")[2]
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ProviderError("a1111 answered with an image that is not base64", details=details) from None
    try:
        with Image.open(io.BytesIO(data)) as src:
            if src.format not in IMAGE_FORMATS:
                raise ValueError(src.format)
            src.load()
            image = src.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data; all mean the same here
        raise ProviderError(f"a1111 answered with an image Pillow cannot read as PNG, JPEG or WebP "
                            f"({type(exc).__name__})", details=details) from None
    try:
        info = json.loads(body.get("info") or "")
    except (TypeError, ValueError):
        info = None
    if not isinstance(info, dict):
        raise ProviderError("a1111 answered without a readable info (the generation's seed and model)",
                            details=details)
    return image, info


def _seed(info: dict, status: int) -> int:
    seed = info.get("seed")
    if seed is None and isinstance(info.get("all_seeds"), list) and info["all_seeds"]:
        seed = info["all_seeds"][0]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ProviderError(f"a1111 answered with no usable seed in its info ({seed!r})",
                            details={"provider": CODE, "http_status": status})
    return seed


# --- checkpoint names, as modules/sd_models.py CheckpointInfo.ids makes them ---


def _stem(path: str) -> str:
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def checkpoint_aliases(entry: Mapping[str, Any]) -> set[str]:
    """Every name the webui accepts for one /sdapi/v1/sd-models entry (title, name, model_name, the file's stem,
    short hash, sha256, "name [hash]"); the legacy 8-digit hash is not in the listing."""
    title = str(entry.get("title") or "")
    short = entry.get("hash") or None
    name = title[: -len(f" [{short}]")] if short and title.endswith(f" [{short}]") else title
    stem = _stem(str(entry.get("filename") or name))
    names = {title, name, stem, str(entry.get("model_name") or "")}
    if short:
        names |= {short, f"{name} [{short}]", f"{stem} [{short}]"}
    if entry.get("sha256"):
        names.add(str(entry["sha256"]))
    names.discard("")
    return names


def _find_checkpoint(models: list[dict], wanted: str | None) -> dict | None:
    if not wanted:
        return None
    for entry in models:
        if wanted in checkpoint_aliases(entry):
            return entry
    return None


def _same_checkpoint(entry: Mapping[str, Any], info: Mapping[str, Any]) -> bool:
    """Whether the answer's info names the checkpoint asked for (hash first; the file stem when no hash)."""
    used_hash, used_name = info.get("sd_model_hash"), info.get("sd_model_name")
    if used_hash and entry.get("hash"):
        return str(used_hash) == str(entry["hash"])
    if used_name:
        return str(used_name) == _stem(str(entry.get("filename") or entry.get("title") or ""))
    return True  # a webui that names no model in its info: nothing to compare


def _missing_model(wanted: str, models: list[dict]) -> ProviderBadRequest:
    titles = [str(m.get("title")) for m in models]
    shown = ", ".join(titles[:10]) + (f" and {len(titles) - 10} more" if len(titles) > 10 else "")
    return ProviderBadRequest(f"a1111 has no checkpoint {wanted!r}; it has: {shown or 'none'}",
                              details={"provider": CODE, "model": wanted, "models": titles[:20]})
