"""A loopback remove.bg API v1.0: the routes, parameters, answers and failures the `removebg` connector meets.

The contract, from remove.bg's OpenAPI document (https://www.remove.bg/api/swagger.yaml, as mirrored by
APIs-guru/openapi-directory APIs/remove.bg/1.0.0/openapi.yaml) and its API page (https://www.remove.bg/api):

- `POST /v1.0/removebg`, the key in `X-Api-Key` (403 `{"errors": [{"title": "Missing API Key"}]}` without one; a
  wrong one gets the same status, worded here "API Key invalid"). The body is multipart/form-data (also
  x-www-form-urlencoded or JSON, with image_url or image_file_b64): exactly one of `image_file`, `image_file_b64`,
  `image_url` (400 `missing_source` / `multiple_sources`; a URL cannot be fetched from loopback:
  `failed_image_download`); `size` preview|full|auto and the aliases small, regular, medium, hd, 4k (400
  `invalid_size`); `format` auto|png|jpg|zip (`invalid_format`); `channels` rgba|alpha (`invalid_channels`);
  `type` auto|person|product|car; `crop` (crops to the subject); `bg_color` (hex, or a few colour names:
  `invalid_bg_color`).
- Inputs: JPG or PNG (`invalid_file_type` "Expected jpg/png, received ..."), up to 12 MB (`file_too_large`,
  "File exceeds limit of 12MB"), up to 50 megapixels (`resolution_too_high`), decodable (`failed_to_read_image`);
  a picture without a foreground is `unknown_foreground`. Every 400 is `{"errors": [{"title", "code"[, "detail"]}]}`
  and charges nothing.
- Resolution and price: preview (and small/regular) is at most 0.25 megapixels for 0.25 credits; full (and
  medium, hd, 4k) the original up to 10 megapixels as PNG (25 as JPG or ZIP) for 1 credit; auto is full when the
  account has a credit, else preview. Too few credits: 402 `{"errors": [{"title": "Insufficient credits"}]}`.
- 200: the image (image/png, image/jpeg, or application/zip holding color.jpg and alpha.png), or with
  `Accept: application/json` `{"data": {"result_b64"}}`; headers `X-Credits-Charged`, `X-Width`, `X-Height`,
  `X-Type`. Every answer carries `X-RateLimit-Limit`, `-Remaining` and `-Reset` (a Unix time); over the limit
  (images per minute) the answer is 429 `{"errors": [{"title": "Rate limit exceeded"}]}` with `Retry-After`.
- `GET /v1.0/account`: `{"data": {"attributes": {"credits": {"total", "subscription", "payg", "enterprise"},
  "api": {"free_calls", "sizes": "all"}}}}`.

The cut-out itself is `vendors.segment.cut_out`: real pixels, so the chain's mask check judges a real mask.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web
from PIL import Image

from vendors.segment import cut_out, fit

KEY = "rbg-loopback-key-7f3c9a"
PREVIEW = ("preview", "small", "regular")
FULL = ("full", "4k", "medium", "hd")
SIZES = PREVIEW + FULL + ("auto",)
FORMATS = ("auto", "png", "jpg", "zip")
CHANNELS = ("rgba", "alpha")
TYPES = ("auto", "person", "product", "car")
COLOUR_NAMES = {"white": (255, 255, 255), "black": (0, 0, 0), "red": (255, 0, 0), "green": (0, 128, 0),
                "blue": (0, 0, 255)}
MAX_FILE_BYTES = 12 * 1024 * 1024
MAX_INPUT_PIXELS = 50_000_000
PREVIEW_PIXELS = 250_000
FULL_PNG_PIXELS, FULL_OTHER_PIXELS = 10_000_000, 25_000_000


@dataclass
class RemoveBgState:
    keys: set[str] = field(default_factory=lambda: {KEY})
    subscription: float = 50.0  # credits
    payg: float = 0.0
    free_calls: int = 50
    per_minute: int = 500  # images per minute before 429
    window_start: float = 0.0
    window_used: int = 0
    received: list[dict] = field(default_factory=list)  # what each authenticated removebg request asked for
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def credits(self) -> float:
        return self.subscription + self.payg

    def charge(self, credits: float) -> None:
        from_subscription = min(self.subscription, credits)
        self.subscription -= from_subscription
        self.payg -= credits - from_subscription


STATE = web.AppKey("removebg_state", RemoveBgState)


def make_app(state: RemoveBgState) -> web.Application:
    app = web.Application(client_max_size=64 * 2**20)
    app[STATE] = state
    app.router.add_post("/v1.0/removebg", _removebg)
    app.router.add_get("/v1.0/account", _account)
    return app


class Refused(Exception):
    def __init__(self, status: int, title: str, code: str | None = None, detail: str | None = None) -> None:
        super().__init__(title)
        self.status, self.title, self.code, self.detail = status, title, code, detail

    def response(self, headers: dict[str, str]) -> web.Response:
        error: dict[str, Any] = {"title": self.title}
        if self.code:
            error["code"] = self.code
        if self.detail:
            error["detail"] = self.detail
        return _json({"errors": [error]}, self.status, headers)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json",
                        headers=headers or {})


def _authenticate(state: RemoveBgState, request: web.Request) -> None:
    key = request.headers.get("X-Api-Key")
    if not key:
        raise Refused(403, "Missing API Key")
    if key not in state.keys:
        raise Refused(403, "API Key invalid")


def _rate(state: RemoveBgState) -> tuple[dict[str, str], bool]:
    """The rate-limit headers of this request, and whether it is over the limit (counted when not)."""
    now = time.time()
    with state.lock:
        if now - state.window_start >= 60:
            state.window_start, state.window_used = now, 0
        over = state.window_used >= state.per_minute
        if not over:
            state.window_used += 1
        reset = state.window_start + 60
        headers = {"X-RateLimit-Limit": str(state.per_minute),
                   "X-RateLimit-Remaining": str(max(0, state.per_minute - state.window_used)),
                   "X-RateLimit-Reset": str(int(math.ceil(reset)))}
        if over:
            headers["Retry-After"] = str(max(1, int(math.ceil(reset - now))))
    return headers, over


async def _account(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        _authenticate(state, request)
    except Refused as exc:
        return exc.response({})
    return _json({"data": {"attributes": {
        "credits": {"total": state.credits, "subscription": state.subscription, "payg": state.payg,
                    "enterprise": 0},
        "api": {"free_calls": state.free_calls, "sizes": "all"}}}})


async def _fields(request: web.Request) -> dict[str, Any]:
    """The request's parameters: multipart (files as (filename, content type, bytes)), urlencoded or JSON."""
    ctype = request.content_type
    if ctype == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise Refused(400, "Invalid JSON body", "invalid_json") from None
        return body if isinstance(body, dict) else {}
    form = await request.post()
    out: dict[str, Any] = {}
    for name, value in form.items():
        if isinstance(value, web.FileField):
            out[name] = (value.filename, value.content_type, value.file.read())
        else:
            out[name] = value
    return out


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None or str(value).lower() in ("false", "0", ""):
        return False
    if str(value).lower() in ("true", "1"):
        return True
    raise Refused(400, f"Invalid {name} parameter given", f"invalid_{name}")


def _colour(value: str) -> tuple[int, int, int, int]:
    text = value.strip().lower().lstrip("#")
    if text in COLOUR_NAMES:
        return (*COLOUR_NAMES[text], 255)
    if len(text) in (3, 4):
        text = "".join(c * 2 for c in text)
    try:
        if len(text) == 6:
            return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16), 255)
        if len(text) == 8:
            return tuple(int(text[i:i + 2], 16) for i in (0, 2, 4, 6))  # type: ignore[return-value]
    except ValueError:
        pass
    raise Refused(400, "Invalid bg_color parameter given", "invalid_bg_color")


def _source(fields: dict[str, Any]) -> bytes:
    given = [name for name in ("image_file", "image_file_b64", "image_url") if fields.get(name)]
    if not given:
        raise Refused(400, "No image given", "missing_source",
                      "Please provide the source image in the image_url, image_file or image_file_b64 parameter.")
    if len(given) > 1:
        raise Refused(400, "Multiple image sources given: Please provide either the image_url, image_file or "
                           "image_file_b64 parameter.", "multiple_sources")
    if given[0] == "image_url":
        raise Refused(400, f"Failed to download image from given image_url: {fields['image_url']}",
                      "failed_image_download")
    if given[0] == "image_file_b64":
        try:
            return base64.b64decode(fields["image_file_b64"], validate=True)
        except (binascii.Error, ValueError):
            raise Refused(400, "There was an error reading the image.", "failed_to_read_image") from None
    value = fields["image_file"]
    return value[2] if isinstance(value, tuple) else str(value).encode()


def _decode(data: bytes) -> Image.Image:
    if len(data) > MAX_FILE_BYTES:
        raise Refused(400, "File too large", "file_too_large", "File exceeds limit of 12MB")
    if not (data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff")):
        received = "webp" if data[8:12] == b"WEBP" else "gif" if data.startswith(b"GIF8") else "unknown"
        raise Refused(400, "Invalid file type", "invalid_file_type", f"Expected jpg/png, received {received}")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_INPUT_PIXELS:
            megapixels = round(img.width * img.height / 1e6)
            raise Refused(400, "Image resolution too high", "resolution_too_high",
                          f"Input image has {megapixels} megapixels, maximum supported input resolution is 50 "
                          f"megapixels")
        img.load()
    except Refused:
        raise
    except Exception:  # noqa: BLE001 - whatever the decoder says
        raise Refused(400, "There was an error reading the image.", "failed_to_read_image") from None
    return img


def _encode(cut: Image.Image, fmt: str, channels: str, bg: tuple[int, int, int, int] | None) -> tuple[bytes, str]:
    alpha = cut.getchannel("A")
    if bg is not None:
        backdrop = Image.new("RGBA", cut.size, bg)
        cut = Image.alpha_composite(backdrop, cut)
    if fmt == "auto":
        fmt = "png" if np.asarray(cut.getchannel("A")).min() < 255 else "jpg"
    buf = io.BytesIO()
    if channels == "alpha" and fmt != "zip":
        alpha.save(buf, format="PNG" if fmt == "png" else "JPEG")
        return buf.getvalue(), "image/png" if fmt == "png" else "image/jpeg"
    if fmt == "png":
        cut.save(buf, format="PNG")
        return buf.getvalue(), "image/png"
    if fmt == "jpg":
        Image.alpha_composite(Image.new("RGBA", cut.size, (255, 255, 255, 255)), cut).convert("RGB").save(
            buf, format="JPEG", quality=92)
        return buf.getvalue(), "image/jpeg"
    colour, matte = io.BytesIO(), io.BytesIO()
    cut.convert("RGB").save(colour, format="JPEG", quality=92)
    alpha.save(matte, format="PNG")
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("color.jpg", colour.getvalue())
        archive.writestr("alpha.png", matte.getvalue())
    return buf.getvalue(), "application/zip"


async def _removebg(request: web.Request) -> web.Response:
    state = request.app[STATE]
    rate_headers: dict[str, str] = {}
    try:
        _authenticate(state, request)
        rate_headers, over = _rate(state)
        if over:
            raise Refused(429, "Rate limit exceeded")
        fields = await _fields(request)
        size = str(fields.get("size", "preview"))
        fmt = str(fields.get("format", "auto"))
        channels = str(fields.get("channels", "rgba"))
        kind = str(fields.get("type", "auto"))
        if size not in SIZES:
            raise Refused(400, "Invalid value for parameter 'size'", "invalid_size")
        if fmt not in FORMATS:
            raise Refused(400, "Invalid format parameter given", "invalid_format")
        if channels not in CHANNELS:
            raise Refused(400, "Invalid value for parameter 'channels'", "invalid_channels")
        if kind not in TYPES:
            raise Refused(400, "Invalid type parameter given", "invalid_type")
        crop = _flag(fields.get("crop"), "crop")
        bg = _colour(str(fields["bg_color"])) if fields.get("bg_color") else None
        image = _decode(_source(fields))
        with state.lock:
            credits = state.credits
        if size == "auto":
            size = "full" if credits >= 1 else "preview"
        cost = 0.25 if size in PREVIEW else 1.0
        if credits < cost:
            raise Refused(402, "Insufficient credits")
        limit = PREVIEW_PIXELS if size in PREVIEW else FULL_PNG_PIXELS if fmt in ("png", "auto") else FULL_OTHER_PIXELS
        cut = cut_out(fit(image, limit))
        alpha = np.asarray(cut.getchannel("A"))
        if (alpha >= 128).mean() < 0.001:
            raise Refused(400, "Could not identify foreground in image. For details and recommendations see "
                               "https://www.remove.bg/supported-images.", "unknown_foreground")
        if crop:
            cut = cut.crop(cut.getchannel("A").getbbox())
        data, content_type = _encode(cut, fmt, channels, bg)
        with state.lock:
            state.charge(cost)
        state.received.append({"size": fields.get("size"), "format": fields.get("format"),
                               "channels": fields.get("channels"), "type": fields.get("type"),
                               "crop": fields.get("crop"), "fields": sorted(fields),
                               "filename": fields["image_file"][0] if isinstance(fields.get("image_file"), tuple)
                               else None,
                               "content_type": fields["image_file"][1] if isinstance(fields.get("image_file"),
                                                                                     tuple) else None,
                               "input_size": image.size, "output_size": cut.size, "charged": cost})
    except Refused as exc:
        return exc.response(rate_headers)
    headers = {**rate_headers, "X-Credits-Charged": f"{cost:g}", "X-Width": str(cut.width),
               "X-Height": str(cut.height), "X-Type": "product" if kind == "auto" else kind}
    if request.headers.get("Accept", "").startswith("application/json"):
        return _json({"data": {"result_b64": base64.b64encode(data).decode("ascii")}}, 200, headers)
    return web.Response(status=200, body=data, content_type=content_type, headers=headers)
