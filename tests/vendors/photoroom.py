"""A loopback PhotoRoom Remove Background API (Basic plan) and its account call: what the `photoroom` connector
meets.

The contract, from PhotoRoom's documentation (https://docs.photoroom.com, "Remove Background API (Basic plan)",
"Account Details v1"), its OpenAPI document (as vendored in tryAGI/Photoroom src/libs/Photoroom/openapi.yaml) and
its samples (Photoroom/api-code-samples):

- `POST /v1/segment` (host sdk.photoroom.com), the key in `x-api-key`; multipart/form-data with `image_file`
  (required: 400 `{"detail": "Please provide an image.", "status_code": 400, "type": "missing_image"}`), `format`
  png (default) | jpg | webp, `channels` rgba (default) | alpha, `bg_color` (hex or an HTML colour name: the result
  becomes opaque), `size` preview (0.25 MP) | medium (1.5 MP) | hd (4 MP) | full (36 MP, default), `crop` and
  `despill` ("true" | "false"). A value outside these is a 400 in the same shape (its `type` worded here
  "invalid_parameter"; PhotoRoom does not document it).
- 200: the image, with `x-uncertainty-score` (0 confident .. 1 unsure); with `Accept: application/json`,
  `{"base64img"}`. One credit per image. No credits left: 402 in the same shape, the detail PhotoRoom documents
  ("API credits exhausted. Visit https://app.photoroom.com/api-dashboard to purchase more API credits").
  A missing or unknown key: 403 (documented as "Forbidden" with no body; this one sends the same JSON shape).
- A picture without a subject comes back fully transparent (PhotoRoom does not refuse it); the chain's mask check
  is what rejects that.
- `GET /v1/account` (host image-api.photoroom.com): `{"credits": {"available", "subscription"}}`.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web
from PIL import Image, ImageColor

from vendors.segment import cut_out, fit

KEY = "sk_pr_loopback_4e1b2d"
SIZES = {"preview": 250_000, "medium": 1_500_000, "hd": 4_000_000, "full": 36_000_000}
FORMATS = ("png", "jpg", "webp")
CHANNELS = ("rgba", "alpha")
NO_CREDITS = "API credits exhausted. Visit https://app.photoroom.com/api-dashboard to purchase more API credits"


@dataclass
class PhotoRoomState:
    keys: set[str] = field(default_factory=lambda: {KEY})
    available: int = 100
    subscription: int = 100
    received: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


STATE = web.AppKey("photoroom_state", PhotoRoomState)


def make_app(state: PhotoRoomState) -> web.Application:
    app = web.Application(client_max_size=64 * 2**20)
    app[STATE] = state
    app.router.add_post("/v1/segment", _segment)
    app.router.add_get("/v1/account", _account)
    return app


class Refused(Exception):
    def __init__(self, status: int, detail: str, kind: str) -> None:
        super().__init__(detail)
        self.status, self.detail, self.kind = status, detail, kind

    def response(self) -> web.Response:
        return _json({"detail": self.detail, "status_code": self.status, "type": self.kind}, self.status)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json",
                        headers=headers or {})


def _authenticate(state: PhotoRoomState, request: web.Request) -> None:
    key = request.headers.get("x-api-key")
    if not key or key not in state.keys:
        raise Refused(403, "Forbidden: missing or invalid API key", "forbidden")


async def _account(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        _authenticate(state, request)
    except Refused as exc:
        return exc.response()
    return _json({"credits": {"available": state.available, "subscription": state.subscription}})


def _choice(fields: dict, name: str, allowed, default: str) -> str:
    value = str(fields.get(name, default))
    if value not in allowed:
        raise Refused(400, f"{name} must be one of: {', '.join(allowed)}", "invalid_parameter")
    return value


async def _segment(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        _authenticate(state, request)
        if not request.content_type.startswith("multipart/"):
            raise Refused(400, "Please provide an image.", "missing_image")
        form = await request.post()
        upload = form.get("image_file")
        if not isinstance(upload, web.FileField):
            raise Refused(400, "Please provide an image.", "missing_image")
        fields = {k: v for k, v in form.items() if not isinstance(v, web.FileField)}
        fmt = _choice(fields, "format", FORMATS, "png")
        channels = _choice(fields, "channels", CHANNELS, "rgba")
        size = _choice(fields, "size", tuple(SIZES), "full")
        crop = _choice(fields, "crop", ("true", "false"), "false") == "true"
        despill = _choice(fields, "despill", ("true", "false"), "false") == "true"
        bg = None
        if fields.get("bg_color"):
            try:
                bg = ImageColor.getrgb(str(fields["bg_color"]))
            except ValueError:
                raise Refused(400, "bg_color must be a hex code or an HTML colour", "invalid_parameter") from None
        data = upload.file.read()
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except Exception:  # noqa: BLE001 - whatever the decoder says
            raise Refused(400, "The image could not be decoded", "invalid_image") from None
        with state.lock:
            if state.available < 1:
                raise Refused(402, NO_CREDITS, "payment_required")
            state.available -= 1
        cut = cut_out(fit(image, SIZES[size]))
        alpha = np.asarray(cut.getchannel("A"))
        # The model's doubt, here: the share of the subject's pixels that are neither clearly in nor out.
        subject = alpha > 0
        uncertainty = float(((alpha > 0) & (alpha < 255)).sum() / subject.sum()) if subject.any() else 1.0
        if crop and subject.any():
            cut = cut.crop(cut.getchannel("A").getbbox())
        if bg is not None:
            cut = Image.alpha_composite(Image.new("RGBA", cut.size, (*bg[:3], 255)), cut)
        out = cut.getchannel("A") if channels == "alpha" else cut
        buf = io.BytesIO()
        if fmt == "jpg":
            flat = out if out.mode == "L" else Image.alpha_composite(
                Image.new("RGBA", out.size, (255, 255, 255, 255)), out).convert("RGB")
            flat.save(buf, format="JPEG", quality=92)
        else:
            out.save(buf, format=fmt.upper())
        state.received.append({"fields": fields, "filename": upload.filename, "content_type": upload.content_type,
                               "input_size": image.size, "output_size": cut.size, "despill": despill})
    except Refused as exc:
        return exc.response()
    headers = {"x-uncertainty-score": f"{uncertainty:.3f}"}
    body = buf.getvalue()
    if request.headers.get("Accept", "").startswith("application/json"):
        return _json({"base64img": base64.b64encode(body).decode("ascii")}, 200, headers)
    return web.Response(status=200, body=body, content_type=f"image/{'jpeg' if fmt == 'jpg' else fmt}",
                        headers=headers)
