"""A loopback OpenAI Images API: what the `openai` connector talks to in tests.

Served through `LoopbackServer` (tests/vendors/loopback.py), under /v1 like the real base URL
https://api.openai.com/v1. Where each shape comes from:

- Requests: the openai SDK's own encoding (openai-python, src/openai/resources/images.py and models.py):
  POST /v1/images/generations with a JSON body; POST /v1/images/edits as multipart/form-data, the input images as
  repeated `image[]` file parts (the SDK's "brackets" array format; a single `image` part is taken too) and every
  other parameter as a form field; GET /v1/models/{model}. Auth is `Authorization: Bearer <key>`, with the optional
  `OpenAI-Organization` and `OpenAI-Project` headers (the SDK's organization / project).
- Answers: ImagesResponse (src/openai/types/images_response.py): created, data[].b64_json, background,
  output_format, quality, size, usage {input_tokens, input_tokens_details {text_tokens, image_tokens},
  output_tokens, total_tokens}. GPT image models always answer base64 (no `url`, no `response_format`).
- Errors: OpenAI's body `{"error": {"message", "type", "param", "code"}}` (API reference, "Error codes" guide):
  401 invalid_api_key (the key masked in the message, as the real API does), 401 invalid_organization, 400
  invalid_request_error (invalid_value / missing_required_parameter / unknown parameter), 400 moderation_blocked
  (type image_generation_user_error), 404 model_not_found, 429 rate_limit_exceeded with Retry-After and the
  x-ratelimit-* headers (rate limits guide, "Rate limits in headers"), 429 insufficient_quota, 500 server_error.
  The Images API takes no seed: a `seed` field is an unrecognized argument, as it is for the real API.

Deterministic stand-ins for what only the real model knows: the picture (a pattern from the prompt and size; an
edit blends the first input image under it, so tests can see the input was used), and usage: text tokens
ceil(len(prompt) / 4), image input tokens by the classic vision tile rule (85 + 170 per 512 px tile after fitting
2048 and a 768 short side), output tokens from OpenAI's published table per size and quality (gpt-image-1 family).

`state.received` lists what each image request carried (endpoint, fields, images as (field, filename, content type,
bytes), organization, project), so tests check what the connector really sent.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image, ImageDraw

FIXED_SIZES = ("1024x1024", "1536x1024", "1024x1536")
# Output image tokens per size and quality, as OpenAI publishes them for the gpt-image-1 family.
OUTPUT_TOKENS = {
    ("1024x1024", "low"): 272, ("1024x1536", "low"): 408, ("1536x1024", "low"): 400,
    ("1024x1024", "medium"): 1056, ("1024x1536", "medium"): 1584, ("1536x1024", "medium"): 1568,
    ("1024x1024", "high"): 4160, ("1024x1536", "high"): 6240, ("1536x1024", "high"): 6208,
}
IMAGE_MODELS = ("gpt-image-1", "gpt-image-1.5", "gpt-image-1-mini", "gpt-image-2", "chatgpt-image-latest")
OTHER_MODELS = ("gpt-4o", "text-embedding-3-small")
GENERATE_FIELDS = {"prompt", "model", "n", "size", "quality", "output_format", "output_compression", "background",
                   "moderation", "user", "safety_identifier", "stream", "partial_images", "response_format", "style"}
EDIT_FIELDS = {"prompt", "model", "n", "size", "quality", "output_format", "output_compression", "background",
               "input_fidelity", "user", "safety_identifier", "stream", "partial_images", "response_format"}
MAX_EDIT_IMAGES = 16


@dataclass
class OpenAIState:
    api_key: str = "sk-test"
    organizations: tuple[str, ...] = ("org-test",)  # OpenAI-Organization values the key belongs to
    blocked_words: tuple[str, ...] = ("forbidden-subject",)  # prompts the safety system rejects
    images_per_minute: int | None = None  # the account's IPM limit; None: no limit
    rate_limited: int = 0  # the next N image requests answer 429 rate_limit_exceeded
    retry_after_s: int = 2
    quota_exhausted: bool = False  # every image request answers 429 insufficient_quota
    server_errors: int = 0  # the next N image requests answer 500 server_error (after any rate_limited ones)
    fail_after: int | None = None  # once this many images were served, every image request answers 500
    served: int = 0  # image answers given
    omit_usage: bool = False  # answer without the usage block (some OpenAI-compatible servers do)
    received: list[dict[str, Any]] = field(default_factory=list)
    _window: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(message, type_, param, code), status=status,
                             headers={"x-request-id": _request_id(), **(headers or {})})


def _request_id() -> str:
    return "req_" + uuid.uuid4().hex


def _invalid(message: str, param: str | None, code: str | None = "invalid_value") -> web.Response:
    return _error(400, message, "invalid_request_error", param, code)


def _mask(key: str) -> str:
    return key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 7 else "*" * len(key)


def _authenticate(state: OpenAIState, request: web.Request) -> web.Response | None:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        return _error(401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                           "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                      "invalid_request_error")
    key = auth[7:].strip()
    if key != state.api_key:
        return _error(401, f"Incorrect API key provided: {_mask(key)}. You can find your API key at "
                           "https://platform.openai.com/account/api-keys.", "invalid_request_error", None,
                      "invalid_api_key")
    org = request.headers.get("OpenAI-Organization")
    if org is not None and org not in state.organizations:
        return _error(401, f"No such organization: {org}.", "invalid_request_error", None, "invalid_organization")
    return None


def _limits(state: OpenAIState) -> web.Response | None:
    """The account-level answers that come before any validation of the request."""
    with state._lock:
        if state.quota_exhausted:
            return _error(429, "You exceeded your current quota, please check your plan and billing details. For "
                               "more information on this error, read the docs: "
                               "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                          "insufficient_quota", None, "insufficient_quota")
        now = time.monotonic()
        limit = state.images_per_minute
        if state.rate_limited > 0:
            state.rate_limited -= 1
            return _rate_limited(state.retry_after_s, limit or 5, 0)
        if state.server_errors > 0 or (state.fail_after is not None and state.served >= state.fail_after):
            state.server_errors = max(0, state.server_errors - 1)
            return _error(500, "The server had an error while processing your request. Sorry about that!",
                          "server_error")
        if limit is not None:
            state._window = [t for t in state._window if now - t < 60.0]
            if len(state._window) >= limit:
                wait = max(1, math.ceil(60.0 - (now - state._window[0])))
                return _rate_limited(wait, limit, 0)
            state._window.append(now)
    return None


def _rate_limited(retry_after: int, limit: int, remaining: int) -> web.Response:
    return _error(429, f"Rate limit reached for images per minute (IPM): Limit {limit}, Used {limit}, Requested 1. "
                       f"Please try again in {retry_after}s. Visit https://platform.openai.com/account/rate-limits "
                       "to learn more.", "requests", None, "rate_limit_exceeded",
                  headers={"Retry-After": str(retry_after), "x-ratelimit-limit-requests": str(limit),
                           "x-ratelimit-remaining-requests": str(remaining),
                           "x-ratelimit-reset-requests": f"{retry_after}s"})


def _check_common(fields: dict[str, Any], allowed: set[str]) -> tuple[web.Response | None, dict[str, Any]]:
    """Validates what generations and edits share; returns (error answer, normalized parameters)."""
    for name in fields:
        if name not in allowed:
            return _error(400, f"Unrecognized request argument supplied: {name}", "invalid_request_error"), {}
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return _invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"), {}
    if len(prompt) > 32000:
        return _invalid("Invalid 'prompt': string too long. Expected a string with maximum length 32000, but got "
                        f"a string with length {len(prompt)} instead.", "prompt", "string_above_max_length"), {}
    model = fields.get("model") or "gpt-image-1"
    if model not in IMAGE_MODELS:
        return _invalid(f"Invalid value: '{model}'. Value must be one of {', '.join(IMAGE_MODELS)}.", "model"), {}
    size = fields.get("size") or "auto"
    if size not in FIXED_SIZES + ("auto",):
        return _invalid(f"Invalid value: '{size}'. Supported values are: '1024x1024', '1024x1536', '1536x1024', "
                        "and 'auto'.", "size"), {}
    quality = fields.get("quality") or "auto"
    if quality not in ("low", "medium", "high", "auto"):
        return _invalid(f"Invalid value: '{quality}'. Supported values are: 'low', 'medium', 'high', and 'auto'.",
                        "quality"), {}
    try:
        n = int(fields.get("n", 1))
    except (TypeError, ValueError):
        return _invalid(f"Invalid type for 'n': expected an integer, but got {fields.get('n')!r} instead.", "n",
                        "invalid_type"), {}
    if not 1 <= n <= 10:
        return _invalid(f"Invalid 'n': integer {'below minimum' if n < 1 else 'above maximum'} value.", "n"), {}
    fmt = fields.get("output_format") or "png"
    if fmt not in ("png", "jpeg", "webp"):
        return _invalid(f"Invalid value: '{fmt}'. Supported values are: 'png', 'jpeg', and 'webp'.",
                        "output_format"), {}
    background = fields.get("background") or "auto"
    if background not in ("transparent", "opaque", "auto"):
        return _invalid(f"Invalid value: '{background}'. Supported values are: 'transparent', 'opaque', and 'auto'.",
                        "background"), {}
    if background == "transparent" and fmt == "jpeg":
        return _invalid("Transparent background is not supported for the jpeg output format.", "background"), {}
    if "response_format" in fields:
        return _error(400, "Unknown parameter: 'response_format'.", "invalid_request_error", "response_format",
                      "unknown_parameter"), {}
    if fields.get("stream") in (True, "true"):
        return _invalid("Streaming is not supported by this test server.", "stream"), {}
    return None, {"prompt": prompt, "model": model, "size": size, "quality": quality, "n": n, "format": fmt,
                  "background": background}


def _blocked(state: OpenAIState, prompt: str) -> web.Response | None:
    if any(word in prompt.lower() for word in state.blocked_words):
        return _error(400, "Your request was rejected as a result of our safety system. Your request may contain "
                           "content that is not allowed by our safety system.", "image_generation_user_error", None,
                      "moderation_blocked")
    return None


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def render(prompt: str, size: str, base: Image.Image | None = None, *, background: str = "opaque") -> Image.Image:
    """The deterministic picture for a prompt and size: a two-colour gradient with a few discs; an edit blends its
    first input image under it so the input shows through."""
    w, h = (int(v) for v in size.split("x"))
    d = _digest(prompt, size)
    top, bottom = (d[0], d[1], d[2]), (d[3], d[4], d[5])
    ramp = Image.linear_gradient("L").resize((w, h))
    img = Image.composite(Image.new("RGB", (w, h), bottom), Image.new("RGB", (w, h), top), ramp)
    draw = ImageDraw.Draw(img)
    for i in range(4):
        x, y, r = d[6 + 3 * i] * w // 255, d[7 + 3 * i] * h // 255, 20 + d[8 + 3 * i] % 120
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(d[20 + i], d[24 + i], d[28 + i]))
    if base is not None:
        img = Image.blend(base.convert("RGB").resize((w, h), Image.Resampling.BILINEAR), img, 0.35)
    if background == "transparent":
        img = img.convert("RGBA")
        img.putalpha(Image.new("L", (w, h), 255))
        ImageDraw.Draw(img).rectangle((0, 0, w // 8, h), fill=(0, 0, 0, 0))
    return img


def vision_tokens(width: int, height: int) -> int:
    """Image input tokens by the classic tile rule: fit 2048, short side 768, then 85 + 170 per 512 px tile."""
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def _answer(state: OpenAIState, params: dict[str, Any], images: list[Image.Image]) -> web.Response:
    size = params["size"] if params["size"] != "auto" else "1024x1024"
    quality = params["quality"] if params["quality"] != "auto" else "medium"
    background = "transparent" if params["background"] == "transparent" else "opaque"
    data = []
    for i in range(params["n"]):
        img = render(params["prompt"] + ("" if i == 0 else f"#{i}"), size, images[0] if images else None,
                     background=background)
        buf = io.BytesIO()
        img.save(buf, format={"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[params["format"]])
        data.append({"b64_json": base64.b64encode(buf.getvalue()).decode()})
    text_tokens = math.ceil(len(params["prompt"]) / 4)
    image_tokens = sum(vision_tokens(*im.size) for im in images)
    output_tokens = OUTPUT_TOKENS[(size, quality)] * params["n"]
    body: dict[str, Any] = {"created": int(time.time()), "data": data, "background": background,
                            "output_format": params["format"], "quality": quality, "size": size}
    if not state.omit_usage:
        body["usage"] = {"input_tokens": text_tokens + image_tokens,
                         "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
                         "output_tokens": output_tokens,
                         "total_tokens": text_tokens + image_tokens + output_tokens}
    with state._lock:
        state.served += 1
    return web.json_response(body, headers={"x-request-id": _request_id(), "openai-processing-ms": "12"})


def make_app(state: OpenAIState) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)

    def record(request: web.Request, endpoint: str, fields: dict[str, Any], files: list[tuple]) -> None:
        with state._lock:
            state.received.append({"endpoint": endpoint, "fields": fields, "images": files,
                                   "organization": request.headers.get("OpenAI-Organization"),
                                   "project": request.headers.get("OpenAI-Project")})

    async def generations(request: web.Request) -> web.Response:
        if (denied := _authenticate(state, request)) is not None:
            return denied
        try:
            fields = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "We could not parse the JSON body of your request. (HINT: This likely means you "
                               "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                               "but what was sent was not valid JSON.)", "invalid_request_error")
        if not isinstance(fields, dict):
            return _invalid("Invalid type for request body: expected an object.", None, "invalid_type")
        record(request, "generations", fields, [])
        if (limited := _limits(state)) is not None:
            return limited
        problem, params = _check_common(fields, GENERATE_FIELDS)
        if problem is not None:
            return problem
        if fields.get("moderation", "auto") not in ("low", "auto"):
            return _invalid(f"Invalid value: '{fields['moderation']}'. Supported values are: 'low' and 'auto'.",
                            "moderation")
        return _blocked(state, params["prompt"]) or _answer(state, params, [])

    async def edits(request: web.Request) -> web.Response:
        if (denied := _authenticate(state, request)) is not None:
            return denied
        if not request.content_type.startswith("multipart/"):
            return _invalid("Invalid Content-Type header (application/json), expected multipart/form-data.",
                            None, "invalid_content_type")
        fields: dict[str, Any] = {}
        files: list[tuple[str, str, str, bytes]] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.filename is not None:
                files.append((part.name, part.filename, part.headers.get("Content-Type", ""), await part.read()))
            else:
                fields[part.name] = await part.text()
        record(request, "edits", fields, files)
        if (limited := _limits(state)) is not None:
            return limited
        extra = [name for name, *_ in files if name not in ("image", "image[]", "mask")]
        if extra:
            return _error(400, f"Unrecognized request argument supplied: {extra[0]}", "invalid_request_error")
        problem, params = _check_common(fields, EDIT_FIELDS)
        if problem is not None:
            return problem
        inputs = [f for f in files if f[0] in ("image", "image[]")]
        if not inputs:
            return _invalid("Missing required parameter: 'image'.", "image", "missing_required_parameter")
        if len(inputs) > MAX_EDIT_IMAGES:
            return _invalid(f"Invalid 'image': array too long. Expected an array with maximum length "
                            f"{MAX_EDIT_IMAGES}, but got an array with length {len(inputs)} instead.", "image",
                            "array_above_max_length")
        fidelity = fields.get("input_fidelity")
        if fidelity is not None:
            model = params["model"]
            allowed = {"gpt-image-1": ("high", "low"), "gpt-image-1.5": ("high", "low"),
                       "gpt-image-1-mini": ("low",)}.get(model, ())
            if fidelity not in allowed:
                return _invalid(f"Invalid value: '{fidelity}'. input_fidelity is not supported for {model}"
                                + (f"; supported values are: {', '.join(allowed)}." if allowed else "."),
                                "input_fidelity")
        images = []
        for index, (_, _, _, data) in enumerate(inputs, start=1):
            try:
                with Image.open(io.BytesIO(data)) as im:
                    if im.format not in ("PNG", "JPEG", "WEBP"):
                        raise ValueError(im.format)
                    im.load()
                    images.append(im.convert("RGBA"))
            except Exception:  # noqa: BLE001 - any unreadable upload is the same 400
                return _invalid(f"Invalid image file or mode for image {index}, please check your image file.",
                                "image", "invalid_image_format")
        return _blocked(state, params["prompt"]) or _answer(state, params, images)

    async def model(request: web.Request) -> web.Response:
        if (denied := _authenticate(state, request)) is not None:
            return denied
        name = request.match_info["model"]
        if name not in IMAGE_MODELS + OTHER_MODELS:
            return _error(404, f"The model '{name}' does not exist", "invalid_request_error", "model",
                          "model_not_found")
        return web.json_response({"id": name, "object": "model", "created": 1_745_000_000, "owned_by": "system"},
                                 headers={"x-request-id": _request_id()})

    async def models(request: web.Request) -> web.Response:
        if (denied := _authenticate(state, request)) is not None:
            return denied
        data = [{"id": n, "object": "model", "created": 1_745_000_000, "owned_by": "system"}
                for n in IMAGE_MODELS + OTHER_MODELS]
        return web.json_response({"object": "list", "data": data})

    app.router.add_post("/v1/images/generations", generations)
    app.router.add_post("/v1/images/edits", edits)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model}", model)
    return app


def decoded(entry: dict[str, Any], index: int = 0) -> Image.Image:
    """The `index`th input image of a recorded edit request, decoded."""
    images = [f for f in entry["images"] if f[0] in ("image", "image[]")]
    with Image.open(io.BytesIO(images[index][3])) as im:
        im.load()
        return im.copy()
