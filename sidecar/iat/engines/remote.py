"""`removebg` and `photoroom`: background removal by the paid APIs (`iat.providers.removebg`,
`iat.providers.photoroom`), each call through the project's ledger.

An engine is ready when it works for a project (`ctx.handle`) whose account of that provider is ready (enabled,
its api_key stored); finding that out reads the account and spends nothing. `process` sends the source picture
(as it is when it is a PNG or JPEG the vendors take, else re-encoded), makes the call with
`app.ledger.call(handle, account, "remove_background", ...)`, which records every attempt (provider_calls), retries
what may be retried (429 with its Retry-After, 5xx, timeouts) up to the account's max_attempts, enforces the
provider's concurrency and the project's budget, and records one cost event per success. The vendor's cut-out
becomes an RGBA PNG at the source's size (a smaller answer, from `size=preview` say, is resized with
premultiplied alpha), written atomically to `dst`.

A vendor's refusal (402 out of credits, 403 a bad key, 400 no foreground found, a 429 that outlasted the
retries) or the budget's refusal is raised as its typed error; the background-removal chain records it as the
engine's failed attempt and goes on to the next engine.
"""

from __future__ import annotations

import io
import threading
import uuid
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from pydantic import BaseModel

from iat.engines.base import EngineContext, EngineResult, EngineStatus, check_cancel, parse_options
from iat.errors import EngineError, IATError, ProviderError
from iat.imaging.io import has_alpha, open_image, save_png
from iat.providers.cutout import JPEG_MAGIC, PNG_MAGIC, decoded
from iat.providers.photoroom import PhotoRoomOptions
from iat.providers.removebg import RemoveBgOptions

OP = "remove_background"
# What both vendors take without complaint: remove.bg's documented limits are 12 MB per file (its API page now
# says 22 MB) and 50 megapixels in; a larger source is sent scaled down, and the answer scaled back up.
MAX_UPLOAD_BYTES = 12 * 1024 * 1024
MAX_UPLOAD_PIXELS = 25_000_000


class PaidRemoverEngine:
    code: ClassVar[str]
    op: ClassVar[str] = OP
    provider_code: ClassVar[str]
    options_model: ClassVar[type[BaseModel]]

    def available(self, ctx: EngineContext | None = None) -> EngineStatus:
        if ctx is None or ctx.app is None or ctx.handle is None:
            return EngineStatus(False, f"{self.code} is a paid API charged to a project's account: it works only "
                                       f"on a project's images")
        from iat.providers import accounts

        try:
            provider = accounts.provider_of(ctx.app, self.provider_code)
            account = accounts.account(ctx.app, ctx.handle, self.provider_code, reveal=False)
        except IATError as exc:  # an unknown provider, a stored configuration the provider refuses
            return EngineStatus(False, exc.message)
        status = provider.status(account)
        return EngineStatus(status.ready, status.reason or "")

    def process(self, src: Path, dst: Path, options: dict[str, Any], *,
                cancel: threading.Event | None = None, ctx: EngineContext | None = None) -> EngineResult:
        from iat.providers import accounts

        opts = parse_options(self.options_model, options, self.code)
        if ctx is None or ctx.app is None or ctx.handle is None:
            raise EngineError(f"{self.code} works only on a project's images (its calls are charged to the "
                              f"project's account)", details={"engine": self.code})
        check_cancel(cancel)
        src, dst = Path(src), Path(dst)
        source = open_image(src)
        upload, filename = _upload(src, source)
        app, handle = ctx.app, ctx.handle
        provider = accounts.provider_of(app, self.provider_code)
        account = accounts.account(app, handle, self.provider_code, reveal=True)
        status = provider.status(account)
        if not status.ready:
            raise EngineError(status.reason or f"provider {self.provider_code} is not ready",
                              details={"engine": self.code, "provider": self.provider_code})
        estimate = provider.estimate_cutout(account, opts)
        request_id = str(uuid.uuid4())  # ties the chain's attempt to the ledger's rows of this call
        result = app.ledger.call(
            handle, account, OP,
            lambda attempt: provider.remove_background(upload, filename, account, options=opts,
                                                       cancel=attempt.cancel, timeout=attempt.timeout),
            run_id=ctx.run_id, cancel=cancel, estimate_usd=estimate.cost_usd, enforce_budget=ctx.enforce_budget,
            meta={"engine": self.code, "request_id": request_id})
        check_cancel(cancel)
        image, resized = _normalised(result.image, source.size, self.provider_code, result.http_status)
        save_png(image, dst)
        usage = result.usage
        meta = {"provider": self.provider_code, "request_id": request_id, "cost_usd": usage.get("cost_usd"),
                "cost_source": usage.get("source"), "units": usage.get("units"),
                "vendor_size": [result.width, result.height], "resized": resized, "uploaded_bytes": len(upload)}
        for key in ("credits", "detected_type", "uncertainty", "size"):
            if key in usage:
                meta[key] = usage[key]
        return EngineResult(dst, image.width, image.height, meta)


class RemoveBgEngine(PaidRemoverEngine):
    code = "removebg"
    provider_code = "removebg"
    options_model = RemoveBgOptions


class PhotoRoomEngine(PaidRemoverEngine):
    code = "photoroom"
    provider_code = "photoroom"
    options_model = PhotoRoomOptions


def _upload(src: Path, image: Image.Image) -> tuple[bytes, str]:
    """The bytes to send and their file name: the source itself when it is a PNG or JPEG within the vendors'
    limits, else a PNG of it (a JPEG when the PNG is too large), scaled down over MAX_UPLOAD_PIXELS."""
    data = src.read_bytes()
    small = image.width * image.height <= MAX_UPLOAD_PIXELS
    if small and len(data) <= MAX_UPLOAD_BYTES and (data.startswith(PNG_MAGIC) or data.startswith(JPEG_MAGIC)):
        return data, src.stem + (".png" if data.startswith(PNG_MAGIC) else ".jpg")
    img = image
    if not small:
        scale = (MAX_UPLOAD_PIXELS / (image.width * image.height)) ** 0.5
        img = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))),
                           Image.Resampling.LANCZOS)
    img = img.convert("RGBA" if has_alpha(img) else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    if buf.tell() <= MAX_UPLOAD_BYTES:
        return buf.getvalue(), src.stem + ".png"
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue(), src.stem + ".jpg"


def _normalised(data: bytes, size: tuple[int, int], provider: str, status: int | None) -> tuple[Image.Image, bool]:
    """The vendor's cut-out as RGBA at the source's size (colour zeroed where alpha is 0). An answer of another
    framing (a crop) cannot be put back over the source: a ProviderError."""
    img = decoded(data, provider, status).convert("RGBA")
    resized = img.size != size
    if resized:
        (w, h), (sw, sh) = img.size, size
        if abs(h - sh * w / sw) > max(2.0, 0.01 * h):
            raise ProviderError(f"{provider} answered a {w}x{h} cut-out for a {sw}x{sh} picture (another framing)",
                                details={"provider": provider, "http_status": status, "width": w, "height": h})
        img = img.convert("RGBa").resize(size, Image.Resampling.LANCZOS).convert("RGBA")
    rgba = np.array(img)
    rgba[rgba[..., 3] == 0, :3] = 0
    return Image.fromarray(rgba, "RGBA"), resized
