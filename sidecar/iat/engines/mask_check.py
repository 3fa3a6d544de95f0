"""The background-removal chain's acceptance check of a result mask.

A mask passes when it is neither empty nor full, and its edges look like a cut-out rather than noise:

- `not_empty` / `not_full`: coverage, the fraction of pixels with alpha >= 0.5, within [min_coverage,
  max_coverage].
- `edge_roughness`: boundary pixels of the hard mask divided by the perimeter of a disc with the same area (the
  smaller of the opaque and transparent areas). A disc scores ~1, a detailed character 2-5, a crowd of figures
  ~10, salt-and-pepper noise 50 and more.
- `speck_fraction`: share of the opaque area in pieces smaller than `speck_area` of the image (a keyed noisy
  backdrop leaves thousands of them; a cut-out has one to a few large pieces).
- `soft_band_px`: semi-transparent pixels (0.04 < alpha < 0.96) per boundary pixel, i.e. the mean width of the
  soft edge; a haze over the image instead of an edge makes it large.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from iat.imaging import components, filters
from iat.imaging.io import ImageSource, has_alpha, open_image


class MaskThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_coverage: float = Field(0.005, ge=0, le=1, description="least opaque fraction; below it the mask is empty")
    max_coverage: float = Field(0.95, ge=0, le=1, description="most opaque fraction; above it nothing was removed")
    max_edge_roughness: float = Field(30.0, gt=0, description="boundary length over a same-area disc's perimeter")
    max_speck_fraction: float = Field(0.05, ge=0, le=1, description="most opaque area in small pieces")
    speck_area: float = Field(2e-4, gt=0, le=1, description="a piece smaller than this fraction of the image is a "
                              "speck")
    max_soft_band_px: float = Field(8.0, gt=0, description="widest mean soft edge, in pixels")


@dataclass(frozen=True)
class MaskMetric:
    name: str
    value: float
    threshold: float
    kind: Literal["min", "max"]   # value must be >= (min) or <= (max) the threshold
    passed: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MaskCheck:
    passed: bool
    reason: str          # "" when passed; else the failed metrics' messages
    metrics: list[MaskMetric]

    def metric(self, name: str) -> MaskMetric:
        return next(m for m in self.metrics if m.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "metrics": [m.to_dict() for m in self.metrics]}


def _metric(name: str, value: float, threshold: float, kind: Literal["min", "max"], what: str) -> MaskMetric:
    passed = value >= threshold if kind == "min" else value <= threshold
    rel = ">=" if kind == "min" else "<="
    msg = f"{what}: {value:.4g} ({'ok' if passed else 'must be'} {rel} {threshold:.4g})"
    return MaskMetric(name, round(float(value), 6), float(threshold), kind, bool(passed), msg)


def alpha_of(source: ImageSource | np.ndarray) -> np.ndarray | None:
    """Alpha in 0..1 (float32) from an array (uint8 0..255 or float 0..1) or an image; None without alpha."""
    if isinstance(source, np.ndarray):
        a = source
        if a.ndim == 3:
            if a.shape[2] != 4:
                return None
            a = a[..., 3]
        return (a.astype(np.float32) / 255.0) if a.dtype == np.uint8 else np.clip(a.astype(np.float32), 0, 1)
    img = open_image(source)
    if not has_alpha(img):
        return None
    return np.asarray(img.convert("RGBA"))[..., 3].astype(np.float32) / 255.0


def check_mask(source: ImageSource | np.ndarray, thresholds: MaskThresholds | None = None) -> MaskCheck:
    t = thresholds or MaskThresholds()
    alpha = alpha_of(source)
    if alpha is None:
        m = MaskMetric("has_alpha", 0.0, 1.0, "min", False, "the result has no alpha channel")
        return MaskCheck(False, m.message, [m])
    h, w = alpha.shape
    n = h * w
    hard = alpha >= 0.5
    area = int(hard.sum())
    coverage = area / n
    edge = int(filters.boundary(hard).sum())
    small = min(area, n - area)
    roughness = edge / (2.0 * math.sqrt(math.pi * small)) if small else 0.0
    if area:
        comp = components.label(hard)
        piece = comp.areas[1:]
        speck = float(piece[piece < max(1.0, t.speck_area * n)].sum()) / area
    else:
        speck = 0.0
    soft = int(((alpha > 0.04) & (alpha < 0.96)).sum())
    band = soft / edge if edge else float(soft)
    metrics = [
        _metric("not_empty", coverage, t.min_coverage, "min", "opaque fraction"),
        _metric("not_full", coverage, t.max_coverage, "max", "opaque fraction"),
        _metric("edge_roughness", roughness, t.max_edge_roughness, "max", "edge roughness"),
        _metric("speck_fraction", speck, t.max_speck_fraction, "max", "opaque area in specks"),
        _metric("soft_band_px", band, t.max_soft_band_px, "max", "mean soft-edge width (px)"),
    ]
    failed = [m.message for m in metrics if not m.passed]
    return MaskCheck(not failed, "; ".join(failed), metrics)


__all__ = ["MaskCheck", "MaskMetric", "MaskThresholds", "alpha_of", "check_mask"]
