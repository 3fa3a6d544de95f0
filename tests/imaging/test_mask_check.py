"""The chain's acceptance check: empty, full and noisy masks fail with a reason; cut-out masks pass."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from iat.engines.mask_check import MaskThresholds, check_mask

from imaging_art import gallery


@pytest.fixture(scope="module")
def good_masks() -> dict[str, np.ndarray]:
    return {name: art.coverage for name, art in gallery((256, 256)).items()}


def test_cutout_masks_pass(good_masks):
    for name, mask in good_masks.items():
        result = check_mask(mask)
        assert result.passed, (name, result.reason)
        assert result.reason == ""
        assert {m.name for m in result.metrics} == {"not_empty", "not_full", "edge_roughness", "speck_fraction",
                                                   "soft_band_px"}
        assert all(m.passed for m in result.metrics)


def _failed(mask, **thresholds) -> set[str]:
    result = check_mask(mask, MaskThresholds(**thresholds) if thresholds else None)
    assert not result.passed and result.reason
    return {m.name for m in result.metrics if not m.passed}


def test_empty_and_full_masks_fail():
    assert "not_empty" in _failed(np.zeros((128, 128), np.uint8))
    assert "not_full" in _failed(np.full((128, 128), 255, np.uint8))
    assert "not_full" in _failed(np.full((128, 128), 0.9, np.float32))


def test_noise_masks_fail():
    rng = np.random.default_rng(0)
    assert "edge_roughness" in _failed(rng.random((256, 256)) > 0.5)
    assert "speck_fraction" in _failed((rng.random((256, 256)) > 0.98).astype(np.float32))


def test_haze_fails_on_its_soft_band():
    yy, xx = np.mgrid[0:256, 0:256]
    mask = np.where((yy - 128) ** 2 + (xx - 128) ** 2 < 40 ** 2, 1.0, 0.3).astype(np.float32)
    assert _failed(mask) == {"soft_band_px"}


def test_thresholds_are_configurable(good_masks):
    mask = good_masks["flat_white"]
    assert _failed(mask, min_coverage=0.5) == {"not_empty"}
    assert check_mask(mask, MaskThresholds(max_coverage=0.99)).passed


def test_metrics_carry_value_threshold_and_verdict(good_masks):
    result = check_mask(np.zeros((64, 64)))
    metric = result.metric("not_empty")
    assert metric.value == 0.0 and metric.threshold == MaskThresholds().min_coverage and metric.kind == "min"
    assert not metric.passed and "opaque fraction" in metric.message
    assert result.to_dict()["metrics"][0]["name"] == "not_empty"


def test_images_and_files_are_read(tmp_path, good_masks):
    alpha = (good_masks["flat_green"] * 255).astype(np.uint8)
    rgba = np.dstack([np.zeros(alpha.shape + (3,), np.uint8), alpha])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    assert check_mask(tmp_path / "m.png").passed
    assert check_mask(rgba).passed
    Image.new("RGB", (32, 32)).save(tmp_path / "rgb.png")
    result = check_mask(tmp_path / "rgb.png")
    assert not result.passed and "no alpha" in result.reason
