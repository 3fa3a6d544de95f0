"""Reading any image the pipeline meets and writing deterministic PNGs.

`open_image` decodes fully (so a truncated file fails here, not later) and turns every decoder failure into
InvalidParams; `save_png` writes the same bytes for the same pixels (no timestamps, fixed compression) and
replaces the destination atomically, so a crash never leaves half a PNG under the final name.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from iat.errors import InvalidParams

ImageSource = bytes | bytearray | str | os.PathLike | Image.Image


def open_image(source: ImageSource) -> Image.Image:
    """A fully loaded PIL image from bytes, a path or an image; InvalidParams when it cannot be decoded."""
    if isinstance(source, Image.Image):
        return source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(source, (bytes, bytearray)):
                img = Image.open(io.BytesIO(bytes(source)))
            else:
                img = Image.open(Path(source))
            img.load()
    except FileNotFoundError as exc:
        raise InvalidParams("image file not found", details={"reason": "not_found"}) from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The decoder's own text may carry a file path: the class name says enough.
        raise InvalidParams(f"not a readable image ({type(exc).__name__})",
                            details={"reason": "unreadable", "error": type(exc).__name__}) from exc
    return img


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def to_arrays(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb uint8 HxWx3, alpha uint8 HxW or None when the image has no alpha channel)."""
    if has_alpha(img):
        rgba = np.asarray(img.convert("RGBA"))
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    return np.asarray(img.convert("RGB")), None


def from_arrays(rgb: np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if alpha is None:
        return Image.fromarray(rgb, "RGB")
    return Image.fromarray(np.dstack([rgb, np.asarray(alpha, dtype=np.uint8)]), "RGBA")


def png_bytes(img: Image.Image, text: dict[str, str] | None = None) -> bytes:
    """Deterministic PNG bytes; `text` becomes tEXt/iTXt chunks in key order."""
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for key in sorted(text):
            info.add_itxt(key, str(text[key]))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6, pnginfo=info)
    return buf.getvalue()


def save_png(img: Image.Image, dst: str | os.PathLike, text: dict[str, str] | None = None) -> Path:
    """Writes `img` as PNG to `dst` through a temporary file in the same folder and an atomic rename."""
    dst = Path(dst)
    data = png_bytes(img, text)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dst
