"""`preview`: the built-in offline generation provider, a deterministic renderer that costs nothing.

It draws what a real model would be asked for, plainly enough that a person can tell stages and shots apart on a
contact sheet:

- style_lock (text2img): the style palette as a flat background (or a sky, ground and props from the scene's
  words), each character of the shot as its own on-model figure, left to right; the seed moves poses and
  placement only. img2img at this stage maps the input onto the style palette instead.
- light_time: a grade for the time of day over the previous output (dawn warm from the left, day neutral and
  bright, dusk orange and purple from the right, night dark blue with a moon).
- weather_effects: rain streaks, snow flakes, a fog veil; clear leaves the pixels as they are.
- advanced: an ink outline and a vignette.

With `params["cutout"]` the style-lock background is one flat colour chosen away from every figure colour, with a
margin around the figures, and later stages change the figures only, so the key engine, which reads the
background off the border, can take it out cleanly after any stage.

Same request, same bytes: the only randomness is `Rand` (random.Random seeded from the request), pixel maths is
elementwise add/multiply/divide in float32 (exact in IEEE, so SIMD paths agree), and PNGs are encoded without
time chunks at a fixed compression level.
"""

from __future__ import annotations

import io
import threading
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from iat.errors import ProviderError
from iat.providers.base import (
    Account, BaseProvider, GenerateRequest, GenerateResult, check_cancel, encode_png, hex_to_rgb,
)
from iat.providers.preview_draw import (
    DEFAULT_PALETTE, HALF_WIDTH, HAT_ROOM, RGB, Rand, digest, distance2, draw_figure, draw_scene, figure_spec,
)

MODEL = "iat-preview-1"
SUPERSAMPLE = 2  # figures are drawn at twice the size and reduced, for smooth edges without an anti-aliasing API
PNG_LEVEL = 1  # zlib level 1: a third of level 6's time on graded pictures, for files about 1.4x larger
MASK_TOLERANCE = 24  # how far from the flat background a pixel must be to count as figure (cut-out mode)


class PreviewProvider(BaseProvider):
    code = "preview"

    def probe(self, account: Account, *, timeout: float) -> dict[str, Any]:
        return {"model": MODEL}  # in-process: nothing to reach

    def generate(self, request: GenerateRequest, account: Account | None = None, *,
                 cancel: threading.Event | None = None, timeout: float | None = None) -> GenerateResult:
        check_cancel(cancel)
        seed = request.seed if request.seed is not None else _seed_from(request)
        cutout = bool(request.params.get("cutout"))
        strength = _strength(request.params)
        if request.init_image:
            image = _decode(request.init_image, request.width, request.height)
            if request.stage == "style_lock":
                image = _palette_map(image, _style_palette(request), strength)
        else:
            image = render_style_lock(request, seed, cutout)
        check_cancel(cancel)
        # A text2img call for a later stage renders the style-lock picture first, then that stage on top of it.
        if request.stage != "style_lock":
            before = image
            stage = request.stage
            if stage == "light_time":
                image = light_time(image, request.scene.time_of_day, seed, strength)
            elif stage == "weather_effects":
                image = weather(image, request.scene.weather, seed, strength)
            else:
                image = finish(image, strength)
            if cutout and image is not before:
                raw = np.asarray(before)
                image = Image.fromarray(np.where(figure_mask(raw) > 0, np.asarray(image), raw), "RGB")
        check_cancel(cancel)
        png = encode_png(image, compress_level=PNG_LEVEL)
        return GenerateResult(image=png, seed=seed, model=MODEL, width=image.width, height=image.height,
                              usage={"units": 1.0, "cost_usd": self.estimate(request, account).cost_usd,
                                     "currency": "USD", "source": "pricing"})


def _seed_from(request: GenerateRequest) -> int:
    """A seed for a request that names none: still a function of the request, so it reproduces."""
    scene = request.scene.model_dump_json()
    return int.from_bytes(digest("seed", request.stage, request.prompt, scene)[:6], "big")


def _strength(params: Mapping[str, Any]) -> float:
    try:
        value = float(params.get("strength", 1.0))
    except (TypeError, ValueError):
        raise ProviderError("params.strength must be a number between 0 and 1", details={"param": "strength"}) from None
    if not 0.0 <= value <= 1.0:
        raise ProviderError("params.strength must be a number between 0 and 1", details={"param": "strength"})
    return value


def _decode(data: bytes, width: int, height: int) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as src:
            src.load()
            image = src.convert("RGB")
    except Exception as exc:  # Pillow raises many types for bad data; all mean the same thing here
        raise ProviderError(f"init image is not a readable image: {type(exc).__name__}") from None
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


# --- style lock ---


def _style_palette(request: GenerateRequest) -> list[RGB]:
    return [hex_to_rgb(c) for c in request.scene.palette] or list(DEFAULT_PALETTE)


def _background(palette: list[RGB], figure_colours: list[RGB]) -> RGB:
    """The style colour farthest from every figure colour (light ones first), so figures stand out and keying
    them out later is easy."""
    candidates = list(palette) + [(236, 236, 236), (40, 44, 52)]
    if not figure_colours:
        return max(palette, key=lambda c: (sum(c), c))

    def score(c: RGB) -> tuple[int, int]:
        nearest = min(distance2(c, f) for f in figure_colours)
        return (min(nearest, 120**2), sum(c))  # far enough counts as equal; then prefer light

    best = max(candidates[:len(palette)], key=score)
    if score(best)[0] < 60**2:  # no style colour is distinct enough: use a neutral that is
        best = max(candidates, key=score)
    return best


def render_style_lock(request: GenerateRequest, seed: int, cutout: bool) -> Image.Image:
    w, h = request.width, request.height
    palette = _style_palette(request)
    chars = request.scene.characters
    specs = [figure_spec(c.code, tuple(hex_to_rgb(p) for p in c.palette), c.appearance, c.outfit) for c in chars]
    bg = _background(palette, [col for s in specs for col in s.colours()])
    sw, sh = w * SUPERSAMPLE, h * SUPERSAMPLE
    canvas = Image.new("RGB", (sw, sh), bg)
    d = ImageDraw.Draw(canvas)
    text = f"{request.scene.text} {request.prompt}".strip()

    if cutout:
        # A flat background with a margin all round: the key engine reads the background from the border.
        margin = max(8.0, 0.1 * min(sw, sh))
        top, bottom = margin, sh - margin
    else:
        ground = _ground_colour(palette, bg)
        horizon = draw_scene(d, sw, sh, text, palette, bg, ground)
        margin = 0.04 * min(sw, sh)
        top, bottom = margin, sh - margin
        bottom = min(bottom, max(horizon + (sh - horizon) * 0.75, sh * 0.6))

    n = max(1, len(specs))
    slot = (sw - 2 * margin) / n
    rnd = Rand("pose", seed, w, h)
    jitter = 0.06 * slot
    height = min((bottom - top) / (1 + HAT_ROOM), (slot - 2 * jitter) / (2 * HALF_WIDTH))
    for k, spec in enumerate(specs):
        char_rnd = Rand("pose", seed, k, chars[k].code)
        scale = char_rnd.u(0.92, 1.0)
        cx = margin + slot * (k + 0.5) + rnd.u(-jitter, jitter)
        if cutout:  # centred in the frame, so the margin is the same all round
            feet = bottom - (bottom - top - height * (1 + HAT_ROOM)) / 2
        else:
            feet = bottom - rnd.u(0.0, 0.04) * (bottom - top)
            _ellipse_shadow(d, cx, feet, height * scale, ground)
        draw_figure(d, spec, cx, feet, height * scale, char_rnd)
    return canvas.reduce(SUPERSAMPLE)


def _ground_colour(palette: list[RGB], sky: RGB) -> RGB:
    others = [c for c in palette if c != sky]
    if not others:
        return (int(sky[0] * 0.7), int(sky[1] * 0.75), int(sky[2] * 0.6))
    return max(others, key=lambda c: (min(distance2(c, sky), 140**2), -sum(c)))


def _ellipse_shadow(d: ImageDraw.ImageDraw, cx: float, feet: float, height: float, ground: RGB) -> None:
    rx, ry = height * 0.22, height * 0.03
    shade = (ground[0] * 6 // 10, ground[1] * 6 // 10, ground[2] * 6 // 10)
    d.ellipse([round(cx - rx), round(feet - ry), round(cx + rx), round(feet + ry)], fill=shade)


def _palette_map(image: Image.Image, palette: list[RGB], strength: float) -> Image.Image:
    """img2img style lock: every pixel pulled toward its nearest style colour."""
    px = np.asarray(image, dtype=np.int32)
    pal = np.asarray(palette, dtype=np.int32)
    nearest = np.empty(px.shape, dtype=np.float32)
    for y in range(0, px.shape[0], 128):  # strips: the pixel x palette distance table stays small at any size
        strip = px[y:y + 128]
        dist = ((strip[:, :, None, :] - pal[None, None, :, :]) ** 2).sum(axis=3)
        nearest[y:y + 128] = pal[dist.argmin(axis=2)]
    out = px.astype(np.float32) + (nearest - px) * np.float32(0.8 * strength)
    return _to_image(out)


# --- pixel helpers ---


def _to_image(arr: np.ndarray) -> Image.Image:
    arr = np.clip(arr, 0, 255, out=arr if arr.dtype == np.float32 and arr.flags.writeable else None)
    arr += np.float32(0.5)  # round half up, then truncate: exact and the same on every CPU
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Column and row coordinates in 0..1 as broadcastable float32 arrays."""
    x = (np.arange(w, dtype=np.float32) / np.float32(max(1, w - 1)))[None, :, None]
    y = (np.arange(h, dtype=np.float32) / np.float32(max(1, h - 1)))[:, None, None]
    return x, y


def figure_mask(rgb: np.ndarray) -> np.ndarray:
    """1.0 where a pixel (uint8 H x W x 3) differs from the flat background read off the border, else 0.0."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    bg = np.median(border, axis=0).astype(np.int16)
    diff = np.abs(rgb.astype(np.int16) - bg).max(axis=2)
    return (diff > MASK_TOLERANCE).astype(np.float32)[:, :, None]


def _blend(src: np.ndarray, graded: np.ndarray, strength: float) -> np.ndarray:
    if strength == 1.0:
        return graded
    return src + (graded - src) * np.float32(strength)


# --- light and time ---

_TINT = {  # multiply, then add: the whole-picture grade of each time of day
    "dawn": ((1.0, 0.86, 0.84), (22, 6, 14)),
    "day": ((1.04, 1.04, 1.04), (8, 8, 8)),
    "dusk": ((0.78, 0.6, 0.66), (18, 0, 20)),
    "night": ((0.3, 0.36, 0.58), (4, 8, 26)),
}


def light_time(image: Image.Image, time_of_day: str | None, seed: int, strength: float) -> Image.Image:
    if time_of_day is None:
        return image
    px = np.asarray(image, dtype=np.float32)
    h, w = px.shape[:2]
    mul, add = _TINT[time_of_day]
    out = px * np.asarray(mul, dtype=np.float32) + np.asarray(add, dtype=np.float32)
    x, y = _grid(h, w)
    local = None  # light that varies over the picture
    if time_of_day == "dawn":
        side = (1 - x) * (1 - x)  # low sun on the left
        local = side * np.asarray((70, 28, 20), dtype=np.float32) - (x * np.float32(0.25)) * out
    elif time_of_day == "dusk":
        warm = x * x * (np.float32(0.4) + y * np.float32(0.6))  # low sun on the right, near the ground
        top = (1 - y) * (1 - y)
        local = warm * np.asarray((90, 36, -10), dtype=np.float32) + top * np.asarray((8, -12, 30), dtype=np.float32) \
            - ((1 - x) * np.float32(0.3)) * out  # the side away from the sun falls into long shadow
    elif time_of_day == "night":
        rnd = Rand("moon", seed)
        mx, my, r = rnd.u(0.6, 0.88) * w, rnd.u(0.1, 0.22) * h, 0.06 * min(w, h)
        xs = np.arange(w, dtype=np.float32)[None, :, None]
        ys = np.arange(h, dtype=np.float32)[:, None, None]
        d2 = ((xs - np.float32(mx)) ** 2 + (ys - np.float32(my)) ** 2) / np.float32((4 * r) ** 2)
        glow = np.clip(1 - d2, 0, 1)
        glow = glow * glow
        disc = (d2 <= np.float32(1 / 16)).astype(np.float32)
        local = glow * np.asarray((60, 66, 90), dtype=np.float32)
        out = out + local
        out = out + (np.asarray((235, 235, 215), dtype=np.float32) - out) * disc
        local = None
    if local is not None:
        out += local
    return _to_image(_blend(px, out, strength))


# --- weather ---


def weather(image: Image.Image, kind: str | None, seed: int, strength: float) -> Image.Image:
    if kind in (None, "clear") or strength == 0.0:
        return image
    px = np.asarray(image, dtype=np.float32)
    h, w = px.shape[:2]
    rnd = Rand("weather", kind, seed)
    scale = max(1.0, min(w, h) / 512)
    if kind == "fog":
        base = image.filter(ImageFilter.GaussianBlur(1.5 * scale))
        src = np.asarray(base, dtype=np.float32)
        _, y = _grid(h, w)
        veil = np.float32(0.3) + y * np.float32(0.35)  # thicker near the ground
        out = src + (np.asarray((214, 218, 224), dtype=np.float32) - src) * (veil * np.float32(strength))
        return _to_image(out)

    graded = px * np.float32(0.82) + np.asarray((0, 4, 14), dtype=np.float32) if kind == "rain" else \
        px * np.float32(0.9) + np.asarray((18, 20, 26), dtype=np.float32)
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    if kind == "rain":
        count = w * h // 1400
        lw = max(1, round(scale))
        for _ in range(count):
            x0, y0, length = rnd.u(-0.1 * w, w), rnd.u(-0.1 * h, h), rnd.u(0.04, 0.09) * h
            alpha = round(rnd.u(110, 190))
            d.line([(round(x0), round(y0)), (round(x0 + length * 0.28), round(y0 + length))],
                   fill=(205, 215, 235, alpha), width=lw)
    else:
        count = w * h // 1800
        _, y = _grid(h, w)  # snow lying on the lower part of the picture
        cover = np.clip((y - np.float32(0.82)) * np.float32(4.0), 0, 0.7)
        graded = graded + (np.float32(250) - graded) * cover
        for _ in range(count):
            x0, y0, r = rnd.u(0, w), rnd.u(0, h), rnd.u(0.8, 2.6) * scale
            d.ellipse([round(x0 - r), round(y0 - r), round(x0 + r), round(y0 + r)],
                      fill=(255, 255, 255, round(rnd.u(170, 255))))
    alpha = np.asarray(layer.getchannel("A"), dtype=np.float32)[:, :, None] / np.float32(255)
    colour = np.asarray(layer.convert("RGB"), dtype=np.float32)
    out = graded + (colour - graded) * alpha
    return _to_image(_blend(px, out, strength))


# --- finishing ---


def finish(image: Image.Image, strength: float) -> Image.Image:
    """An ink line where the picture has edges, a slight lift of contrast, and a vignette."""
    px = np.asarray(image, dtype=np.float32)
    h, w = px.shape[:2]
    # Central differences on integer luma (edge-padded, so the frame itself is no edge).
    luma = np.pad(np.asarray(image.convert("L"), dtype=np.int32), 1, mode="edge")
    edges = np.abs(luma[1:-1, 2:] - luma[1:-1, :-2]) + np.abs(luma[2:, 1:-1] - luma[:-2, 1:-1])
    ink = np.clip((edges.astype(np.float32)[:, :, None] - np.float32(40)) / np.float32(80), 0, 1) * np.float32(0.8)
    out = (px - np.float32(128)) * np.float32(1.08) + np.float32(128)
    out = out * (1 - ink) + np.asarray((25, 20, 30), dtype=np.float32) * ink
    x, y = _grid(h, w)
    r2 = ((x - np.float32(0.5)) ** 2 + (y - np.float32(0.5)) ** 2) * np.float32(2)  # 0 centre .. 1 corners
    out = out * (1 - r2 * np.float32(0.45))
    return _to_image(_blend(px, out, strength))

