"""Generated test art with a known ground truth: a subject drawn at 5x and box-filtered down (anti-aliased edges),
composited in sRGB over flat, noisy, gradient, vignette or two-tone backgrounds. The ground-truth mask is the
subject's coverage >= 0.5."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SS = 5  # supersampling factor of the drawing (odd: no pixel is covered exactly half, so no ties at 0.5)


@dataclass
class Art:
    rgb: np.ndarray        # uint8 HxWx3
    coverage: np.ndarray   # float32 HxW in 0..1, the subject's exact coverage
    fg_rgb: np.ndarray     # float32 HxWx3 0..255, the subject's un-premultiplied colour where coverage > 0

    @property
    def truth(self) -> np.ndarray:
        return self.coverage >= 0.5

    def image(self) -> Image.Image:
        return Image.fromarray(self.rgb, "RGB")


def character(size: tuple[int, int], colors: dict[str, tuple[int, int, int]], *, cx: float = 0.5,
              bottom: float = 0.9, scale: float = 1.0, outline: tuple[int, int, int] | None = (30, 25, 35),
              eyes: bool = True) -> Image.Image:
    """A simple figure on a transparent canvas at SS x the size: body, head, arms, legs, eyes."""
    w, h = size[0] * SS, size[1] * SS
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    u = min(w, h) * 0.1 * scale
    x0, yb = cx * w, bottom * h
    ow = max(1, int(u * 0.08)) if outline else 0
    line = outline + (255,) if outline else None
    # legs, body, arms, head
    d.rounded_rectangle([x0 - 1.1 * u, yb - 3.0 * u, x0 - 0.3 * u, yb], radius=u * 0.3,
                        fill=colors["legs"] + (255,), outline=line, width=ow)
    d.rounded_rectangle([x0 + 0.3 * u, yb - 3.0 * u, x0 + 1.1 * u, yb], radius=u * 0.3,
                        fill=colors["legs"] + (255,), outline=line, width=ow)
    d.polygon([(x0 - 1.6 * u, yb - 2.6 * u), (x0 + 1.6 * u, yb - 2.6 * u), (x0 + 1.2 * u, yb - 5.6 * u),
               (x0 - 1.2 * u, yb - 5.6 * u)], fill=colors["body"] + (255,), outline=line, width=ow)
    d.line([(x0 - 1.2 * u, yb - 5.3 * u), (x0 - 2.6 * u, yb - 3.4 * u)], fill=colors["body"] + (255,),
           width=int(u * 0.5))
    d.line([(x0 + 1.2 * u, yb - 5.3 * u), (x0 + 2.4 * u, yb - 6.8 * u)], fill=colors["body"] + (255,),
           width=int(u * 0.5))
    d.ellipse([x0 - 1.1 * u, yb - 7.8 * u, x0 + 1.1 * u, yb - 5.5 * u], fill=colors["head"] + (255,),
              outline=line, width=ow)
    if eyes:
        for ex in (-0.45, 0.45):
            d.ellipse([x0 + (ex - 0.25) * u, yb - 7.0 * u, x0 + (ex + 0.25) * u, yb - 6.6 * u],
                      fill=(250, 250, 250, 255))
            d.ellipse([x0 + (ex - 0.1) * u, yb - 6.92 * u, x0 + (ex + 0.1) * u, yb - 6.7 * u],
                      fill=(20, 20, 20, 255))
    return img


def shapes(size: tuple[int, int], rng: np.random.Generator, palette: list[tuple[int, int, int]],
           n: int = 5) -> Image.Image:
    """A still life of overlapping ellipses, polygons and thick strokes, kept off the border."""
    w, h = size[0] * SS, size[1] * SS
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    for i in range(n):
        col = palette[i % len(palette)] + (255,)
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        r = rng.uniform(0.08, 0.18) * min(w, h)
        kind = i % 3
        if kind == 0:
            d.ellipse([cx - r, cy - r * 0.7, cx + r, cy + r * 0.7], fill=col)
        elif kind == 1:
            ang = np.sort(rng.uniform(0, 2 * np.pi, 6))
            d.polygon([(cx + r * np.cos(a), cy + r * np.sin(a)) for a in ang], fill=col)
        else:
            d.line([(cx - r, cy - r), (cx + r, cy + r * 0.5)], fill=col, width=int(r * 0.25))
    return img


def background(size: tuple[int, int], kind: str, c1: tuple[int, int, int], c2: tuple[int, int, int] | None = None,
               *, split: float = 0.6) -> np.ndarray:
    w, h = size
    a, b = np.array(c1, np.float32), np.array(c2 if c2 is not None else c1, np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "flat":
        t = np.zeros((h, w), np.float32)
    elif kind == "vertical":
        t = yy / (h - 1)
    elif kind == "diagonal":
        t = (xx / (w - 1) + yy / (h - 1)) / 2
    elif kind == "vignette":
        t = np.clip(np.hypot(xx / (w - 1) - 0.5, yy / (h - 1) - 0.5) / 0.7071, 0, 1)
    elif kind == "split":
        t = (yy >= split * h).astype(np.float32)
    else:
        raise ValueError(kind)
    return a + (b - a) * t[..., None]


def compose(subject: Image.Image, bg: np.ndarray, *, noise: float = 0.0, seed: int = 0) -> Art:
    """Box-filters the SS x subject down (premultiplied) and composites it over `bg` in sRGB."""
    h, w = bg.shape[:2]
    small = subject.convert("RGBa").resize((w, h), Image.Resampling.BOX).convert("RGBA")
    premult = np.asarray(subject.convert("RGBa").resize((w, h), Image.Resampling.BOX), np.float32)
    cov = premult[..., 3] / 255.0
    fg = np.asarray(small, np.float32)[..., :3]
    out = premult[..., :3] + bg * (1.0 - cov[..., None])
    if noise:
        out = out + np.random.default_rng(seed).normal(0.0, noise, out.shape)
    rgb = np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return Art(rgb, cov.astype(np.float32), fg)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    inter = np.logical_and(pred, truth).sum()
    union = np.logical_or(pred, truth).sum()
    return float(inter / union) if union else 1.0


SKIN, SHIRT, PANTS = (232, 190, 160), (200, 60, 50), (50, 70, 140)


def gallery(size: tuple[int, int] = (512, 512)) -> dict[str, Art]:
    """The named cases the key engine must separate with IoU >= 0.95."""
    rng = np.random.default_rng(7)
    who = {"head": SKIN, "body": SHIRT, "legs": PANTS}
    arts = {
        "flat_white": compose(character(size, who), background(size, "flat", (255, 255, 255))),
        "flat_green": compose(character(size, who), background(size, "flat", (40, 200, 70))),
        "flat_dark": compose(character(size, {"head": (90, 80, 100), "body": (60, 40, 90), "legs": (40, 40, 60)},
                                       outline=(10, 10, 12)), background(size, "flat", (18, 20, 30))),
        "noisy_beige": compose(character(size, who), background(size, "flat", (236, 226, 205)), noise=4.0,
                               seed=1),
        "very_noisy_gray": compose(shapes(size, rng, [(180, 40, 40), (40, 120, 180), (230, 200, 60)]),
                                   background(size, "flat", (128, 128, 128)), noise=8.0, seed=2),
        "gradient_sky": compose(character(size, who), background(size, "vertical", (120, 170, 230),
                                                                  (215, 230, 250))),
        "diagonal_warm": compose(shapes(size, rng, [(30, 90, 60), (120, 40, 100), (20, 20, 20)]),
                                 background(size, "diagonal", (250, 220, 180), (230, 160, 120)), noise=2.0,
                                 seed=3),
        "vignette": compose(character(size, who), background(size, "vignette", (240, 240, 235), (170, 170, 165))),
        "close_to_background": compose(
            character(size, {"head": (205, 205, 215), "body": (196, 198, 212), "legs": (210, 200, 210)},
                      outline=None, eyes=False),
            background(size, "flat", (232, 232, 236)), noise=1.5, seed=4),
        "close_hue": compose(shapes(size, rng, [(60, 150, 80), (70, 170, 100)], n=4),
                             background(size, "flat", (90, 190, 110)), noise=1.0, seed=5),
        "touching_bottom": compose(character(size, who, bottom=1.15, scale=1.3),
                                   background(size, "flat", (200, 220, 240)), noise=2.0, seed=6),
        "two_subjects": compose(Image.alpha_composite(character(size, who, cx=0.3, scale=0.7),
                                                      character(size, who, cx=0.72, scale=0.8)),
                                background(size, "flat", (245, 240, 230))),
    }
    return arts
