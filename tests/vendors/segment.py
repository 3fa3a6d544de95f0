"""What the loopback background-removal vendors (remove.bg, PhotoRoom) do to a picture: a real, if simple, cut-out.

The backdrop is the median colour of the border; a pixel's alpha ramps from 0 to 1 as its distance to that colour
goes from LOW to HIGH (0..255 per channel, Euclidean), so a subject on a flat or gently varying backdrop comes out
with a clean mask and soft anti-aliased edges, and colour is zeroed where alpha is 0. The tests build such
pictures (`subject_picture`) with their exact masks, so the IoU of what the connector brings back is known.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

LOW, HIGH = 24.0, 64.0


def alpha_of(rgb: np.ndarray) -> np.ndarray:
    """uint8 alpha (H, W) of an RGB uint8 picture (H, W, 3)."""
    img = rgb.astype(np.float32)
    ring = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    backdrop = np.median(ring, axis=0)
    distance = np.sqrt(((img - backdrop) ** 2).sum(axis=2))
    alpha = np.clip((distance - LOW) / (HIGH - LOW), 0.0, 1.0)
    return np.floor(alpha * 255.0 + 0.5).astype(np.uint8)


def cut_out(image: Image.Image) -> Image.Image:
    """The RGBA cut-out of `image` at its own size."""
    rgb = np.asarray(image.convert("RGB"))
    alpha = alpha_of(rgb)
    out = np.dstack([rgb, alpha])
    out[alpha == 0, :3] = 0
    return Image.fromarray(out, "RGBA")


def fit(image: Image.Image, max_pixels: float) -> Image.Image:
    """`image` scaled down (aspect kept) to at most `max_pixels`, as the vendors' size limits do."""
    w, h = image.size
    if w * h <= max_pixels:
        return image
    scale = (max_pixels / (w * h)) ** 0.5
    return image.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.LANCZOS)


def subject_picture(size: tuple[int, int] = (320, 240), *, backdrop=(236, 232, 224),
                    fill=(180, 60, 40)) -> tuple[Image.Image, np.ndarray]:
    """A subject (a head on a body) on a flat backdrop, drawn at 4x and scaled down so its edges are anti-aliased
    like a real picture's, and its true mask (bool, H x W: the subject's coverage >= 0.5)."""
    w, h = size
    big = (w * 4, h * 4)
    img = Image.new("RGB", big, backdrop)
    mask = Image.new("L", big, 0)
    for target, colour in ((img, fill), (mask, 255)):
        draw = ImageDraw.Draw(target)
        draw.ellipse((big[0] * 0.38, big[1] * 0.12, big[0] * 0.62, big[1] * 0.42), fill=colour)
        draw.rectangle((big[0] * 0.3, big[1] * 0.42, big[0] * 0.7, big[1] * 0.9), fill=colour)
    img = img.resize(size, Image.Resampling.BOX)
    return img, np.asarray(mask.resize(size, Image.Resampling.BOX)) >= 128


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def iou(alpha: np.ndarray, truth: np.ndarray) -> float:
    hard = alpha >= 128
    return float((hard & truth).sum() / max(1, (hard | truth).sum()))
