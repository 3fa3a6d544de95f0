"""QA guard metrics for one image: pure, deterministic, every threshold from `QAThresholds`.

`check_image(...)` returns a `QualityReport` whose `checks` are dicts
`{name, value, threshold, severity: "hard"|"soft", passed, message}`, in a fixed order:

hard  readable        the bytes/path decode as an image (if not, this is the only check)
hard  size            |w - W| / W and |h - H| / H at most `size_tolerance` (only with `expected_size`)
hard  aspect          |w/h - A| / A at most `aspect_tolerance` (only with `expected_aspect`)
hard  blank           fraction of visible pixels farther than `blank_delta` (OKLab) from the image's median
                      colour at least `min_detail_fraction` (an empty canvas, a flat fill, a fully transparent image)
hard  uniform         RMS OKLab deviation of the visible pixels from their mean at least `min_std`
hard  transparency    fraction of pixels with alpha < 128 at least `min_transparent_fraction` (only when
                      transparency is required; no alpha channel counts as 0)
hard  border_cut      fraction of the 1-px image border that is opaque (alpha >= 128) at most
                      `max_border_opaque_fraction` (cut-outs only: images with alpha and some transparency, or
                      when transparency is required): a subject cut by the frame touches it
soft  chroma          fraction of visible pixels with OKLab chroma over the limit at most `max_chroma_fraction`;
                      the limit is the style guide's `max_chroma`, else `QAThresholds.max_chroma`
soft  palette         mean OKLab distance from the visible pixels to their nearest palette colour at most
                      `max_palette_distance` (only with a palette)
soft  exposure        mean OKLab lightness L of the visible pixels inside `exposure[time_of_day]` (only with a time
                      of day)
soft  contrast        RMS contrast (standard deviation of L over the visible pixels) at least `min_contrast`
soft  duplicate       smallest pHash Hamming distance to the sibling hashes greater than `duplicate_max_distance`
                      (only with sibling hashes)

"Visible" pixels: alpha >= 128 (all pixels without alpha). The report also carries `chroma_exceedance`, the mean
over visible pixels of max(0, chroma - limit) (0 for a compliant image; the ranking uses it), the image's
`phash` (for later siblings), and `quality_score` in [0, 1], the mean of these per-metric scores over the
metrics that apply (1 when none does), a tie-breaker for ranking:
    chroma    exp(-chroma_exceedance / 0.01)
    palette   clip(1 - distance / (2 * max_palette_distance), 0, 1)
    exposure  1 inside the range, else max(0, 1 - distance_outside / 0.2)
    contrast  min(1, contrast / (1.5 * min_contrast))
    duplicate min(1, hamming / (2 * (duplicate_max_distance + 1)))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Iterable, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from iat.errors import InvalidParams
from iat.imaging.io import ImageSource, open_image, to_arrays
from iat.imaging.oklab import chroma, hex_to_oklab, srgb8_to_oklab
from iat.imaging.phash import hamming, phash
from iat.knowledge.rules import json_integer

TimeOfDay = Literal["dawn", "day", "dusk", "night"]

DEFAULT_EXPOSURE: dict[str, tuple[float, float]] = {
    # Mean OKLab L (0 black .. 1 white; sRGB #808080 is 0.60) a picture of that time of day may have.
    "dawn": (0.40, 0.85),
    "day": (0.55, 0.95),
    "dusk": (0.30, 0.75),
    "night": (0.05, 0.50),
}


# An exposure range: two mean OKLab lightnesses, in either order (kept low first). Equal bounds are a range of one
# lightness: the soft exposure check then passes only an image of exactly that mean lightness.
ExposureRange = Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=2, max_length=2)]


class QAThresholds(BaseModel):
    """Thresholds of the QA guard, with their defaults. A style guide's QA block overrides any of them by name;
    these names and meanings are stable (stored with every quality report)."""

    # Strict, as the style rules holding it are (iat.knowledge.rules): a number must be a JSON number.
    model_config = ConfigDict(extra="forbid", strict=True)

    size_tolerance: float = Field(0.0, ge=0, le=1, description="relative deviation of width and height allowed "
                                  "from the expected size")
    aspect_tolerance: float = Field(0.01, ge=0, le=1, description="relative deviation of width/height allowed "
                                    "from the expected aspect ratio")
    blank_delta: float = Field(0.04, gt=0, le=1, description="OKLab distance from the median colour above which "
                               "a pixel counts as detail")
    min_detail_fraction: float = Field(0.002, ge=0, le=1, description="least fraction of detail pixels; below it "
                                       "the image is blank")
    min_std: float = Field(0.015, ge=0, le=1, description="least RMS OKLab deviation from the mean colour; below "
                           "it the image is uniform")
    min_transparent_fraction: float = Field(0.01, ge=0, le=1, description="least fraction of pixels with alpha < "
                                            "128 when transparency is required")
    max_border_opaque_fraction: float = Field(0.02, ge=0, le=1, description="most fraction of the 1-px border "
                                              "that may be opaque in a cut-out")
    max_chroma: float = Field(0.25, gt=0, le=0.5, description="OKLab chroma limit used when the style guide sets "
                              "none")
    max_chroma_fraction: float = Field(0.01, ge=0, le=1, description="most fraction of visible pixels over the "
                                       "chroma limit")
    max_palette_distance: float = Field(0.12, gt=0, le=2, description="most mean OKLab distance to the nearest "
                                        "palette colour")
    exposure: dict[TimeOfDay, ExposureRange] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_EXPOSURE.items()},
        description="mean OKLab L range [low, high] per time of day (0..1; given in either order, kept low first; "
                    "equal bounds pass only that lightness); missing times keep their defaults")
    min_contrast: float = Field(0.06, ge=0, le=1, description="least standard deviation of OKLab L")
    duplicate_max_distance: Annotated[int, Field(ge=0, le=64), BeforeValidator(json_integer)] = Field(
        6, description="pHash Hamming distance at or below which two images are near-duplicates")

    @field_validator("exposure")
    @classmethod
    def _exposure(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        # A pair's order carries no meaning the schema could check, so it is not a reason to refuse: low first.
        return {**{k: list(r) for k, r in DEFAULT_EXPOSURE.items()}, **{k: sorted(r) for k, r in v.items()}}


@dataclass
class QualityReport:
    checks: list[dict[str, Any]]
    hard_failures: int
    soft_warnings: int
    chroma_exceedance: float
    quality_score: float
    phash: str | None = None
    width: int | None = None
    height: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """No hard failure."""
        return self.hard_failures == 0

    def check(self, name: str) -> dict[str, Any] | None:
        return next((c for c in self.checks if c["name"] == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _check(name: str, value: float, threshold: Any, severity: str, passed: bool, message: str) -> dict[str, Any]:
    if isinstance(threshold, (tuple, list)):
        threshold = [float(t) for t in threshold]
    return {"name": name, "value": round(float(value), 6), "threshold": threshold, "severity": severity,
            "passed": bool(passed), "message": message}


def _expected_aspect(value: float | str | tuple[int, int] | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            w, _, h = value.partition(":")
            value = float(w) / float(h) if h else float(w)
        except (ValueError, ZeroDivisionError):
            raise InvalidParams(f"expected aspect {value!r} is not a ratio like '16:9'") from None
    elif isinstance(value, (tuple, list)):
        value = float(value[0]) / float(value[1])
    if not value > 0:
        raise InvalidParams("expected aspect must be positive")
    return float(value)


def check_image(source: ImageSource, *, thresholds: QAThresholds | None = None,
                expected_size: tuple[int, int] | None = None, expected_aspect: float | str | None = None,
                require_transparency: bool = False, palette: list[str] | None = None,
                max_chroma: float | None = None, time_of_day: TimeOfDay | None = None,
                sibling_hashes: Iterable[str] = ()) -> QualityReport:
    """Runs every applicable check on one image (bytes, a path or a PIL image)."""
    t = thresholds or QAThresholds()
    aspect = _expected_aspect(expected_aspect)
    if time_of_day is not None and time_of_day not in t.exposure:
        raise InvalidParams(f"unknown time of day {time_of_day!r}", details={"known": sorted(t.exposure)})
    pal = None
    if palette:
        try:
            pal = hex_to_oklab(list(palette))
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None
    limit = max_chroma if max_chroma is not None else t.max_chroma
    try:
        img = open_image(source)
        rgb, alpha = to_arrays(img)
    except InvalidParams as exc:
        chk = _check("readable", 0, 1, "hard", False, f"unreadable: {exc.message}")
        return QualityReport([chk], 1, 0, 0.0, 0.0)
    h, w = rgb.shape[:2]
    checks = [_check("readable", 1, 1, "hard", True, f"{img.format or 'image'} {w}x{h}")]
    scores: list[float] = []

    if expected_size is not None:
        ew, eh = int(expected_size[0]), int(expected_size[1])
        dev = max(abs(w - ew) / ew, abs(h - eh) / eh)
        checks.append(_check("size", dev, t.size_tolerance, "hard", dev <= t.size_tolerance + 1e-12,
                             f"{w}x{h}, expected {ew}x{eh}"))
    if aspect is not None:
        dev = abs(w / h - aspect) / aspect
        checks.append(_check("aspect", dev, t.aspect_tolerance, "hard", dev <= t.aspect_tolerance + 1e-12,
                             f"aspect {w / h:.4f}, expected {aspect:.4f}"))

    lab = srgb8_to_oklab(rgb).reshape(-1, 3)
    visible = np.ones(h * w, dtype=bool) if alpha is None else alpha.reshape(-1) >= 128
    vis = lab[visible]
    if len(vis):
        median = np.median(vis[::max(1, len(vis) // 65536)], axis=0)   # the dominant colour, from a subsample
        detail = float((np.sqrt(((vis - median) ** 2).sum(-1)) > t.blank_delta).mean())
        std = float(np.sqrt(vis.var(axis=0).sum()))
    else:
        detail = std = 0.0
    checks.append(_check("blank", detail, t.min_detail_fraction, "hard", detail >= t.min_detail_fraction,
                         "nothing visible" if not len(vis) else f"{detail:.2%} of the visible pixels are detail"))
    checks.append(_check("uniform", std, t.min_std, "hard", std >= t.min_std, f"colour deviation {std:.4f}"))

    transparent = 0.0 if alpha is None else float((alpha < 128).mean())
    if require_transparency:
        msg = "no alpha channel" if alpha is None else f"{transparent:.2%} of the pixels are transparent"
        checks.append(_check("transparency", transparent, t.min_transparent_fraction, "hard",
                             transparent >= t.min_transparent_fraction, msg))
    if alpha is not None and (require_transparency or transparent >= t.min_transparent_fraction):
        border = np.concatenate([alpha[0], alpha[-1], alpha[1:-1, 0], alpha[1:-1, -1]])
        touching = float((border >= 128).mean())
        checks.append(_check("border_cut", touching, t.max_border_opaque_fraction, "hard",
                             touching <= t.max_border_opaque_fraction,
                             f"{touching:.2%} of the border is opaque"))

    exceedance = 0.0
    if len(vis):
        c = chroma(vis)
        over = float((c > limit).mean())
        exceedance = float(np.maximum(c - limit, 0.0).mean())
        checks.append(_check("chroma", over, t.max_chroma_fraction, "soft", over <= t.max_chroma_fraction,
                             f"{over:.2%} of the pixels over chroma {limit:.3f}, mean exceedance "
                             f"{exceedance:.4f}"))
        scores.append(math.exp(-exceedance / 0.01))
        if pal is not None:
            step = max(1, int(math.ceil(len(vis) / 65536)))   # a mean: a regular subsample measures it
            sub = vis[::step]
            d2 = ((sub[:, None, :] - pal[None, :, :]) ** 2).sum(-1)
            dist = float(np.sqrt(d2.min(axis=1)).mean())
            checks.append(_check("palette", dist, t.max_palette_distance, "soft", dist <= t.max_palette_distance,
                                 f"mean distance to the palette {dist:.4f}"))
            scores.append(min(1.0, max(0.0, 1 - dist / (2 * t.max_palette_distance))))
        L = vis[:, 0]
        if time_of_day is not None:
            lo, hi = t.exposure[time_of_day]
            mean_l = float(L.mean())
            outside = max(lo - mean_l, mean_l - hi, 0.0)
            verdict = "fits" if not outside else ("too dark" if mean_l < lo else "too bright")
            checks.append(_check("exposure", mean_l, [lo, hi], "soft", outside == 0.0,
                                 f"mean lightness {mean_l:.3f} {verdict} for {time_of_day}"))
            scores.append(max(0.0, 1 - outside / 0.2))
        contrast = float(L.std())
        checks.append(_check("contrast", contrast, t.min_contrast, "soft", contrast >= t.min_contrast,
                             f"RMS contrast {contrast:.4f}"))
        scores.append(min(1.0, contrast / (1.5 * t.min_contrast)) if t.min_contrast else 1.0)

    own_hash = phash(img)
    siblings = [s for s in sibling_hashes if s]
    if siblings:
        try:
            dists = [hamming(own_hash, s) for s in siblings]
        except ValueError:
            raise InvalidParams("sibling hashes must be 16 hex digits") from None
        nearest = int(min(dists))
        checks.append(_check("duplicate", nearest, t.duplicate_max_distance, "soft",
                             nearest > t.duplicate_max_distance,
                             f"pHash distance {nearest} to sibling #{dists.index(nearest)}"))
        scores.append(min(1.0, nearest / (2 * (t.duplicate_max_distance + 1))))

    hard = sum(1 for c in checks if c["severity"] == "hard" and not c["passed"])
    soft = sum(1 for c in checks if c["severity"] == "soft" and not c["passed"])
    score = round(float(np.mean(scores)), 6) if scores else 1.0
    return QualityReport(checks, hard, soft, round(exceedance, 6), score, own_hash, w, h,
                         {"chroma_limit": limit, "transparent_fraction": round(transparent, 6)})
