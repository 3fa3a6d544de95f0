"""QA guard: planted defects are flagged by the right check, clean images pass every hard check."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from iat.engines.key import key_image
from iat.errors import InvalidParams
from iat.imaging.quality import DEFAULT_EXPOSURE, QAThresholds, check_image

from imaging_art import PANTS, SHIRT, SKIN, background, character, compose

WHO = {"head": SKIN, "body": SHIRT, "legs": PANTS}
PALETTE = ["#e8bea0", "#c83c32", "#32468c", "#f5f0e6", "#1e1923"]


@pytest.fixture(scope="module")
def clean() -> Image.Image:
    return compose(character((256, 256), WHO), background((256, 256), "flat", (245, 240, 230))).image()


@pytest.fixture(scope="module")
def cutout(clean) -> Image.Image:
    alpha, rgb, _ = key_image(np.asarray(clean))
    return Image.fromarray(np.dstack([rgb, np.floor(alpha * 255 + 0.5).astype(np.uint8)]), "RGBA")


def _failed(report) -> dict[str, str]:
    return {c["name"]: c["severity"] for c in report.checks if not c["passed"]}


def test_clean_images_pass_every_hard_check(clean, cutout):
    report = check_image(clean, expected_size=(256, 256), expected_aspect="1:1", palette=PALETTE,
                         time_of_day="day", max_chroma=0.2)
    assert report.passed and report.hard_failures == 0, report.checks
    assert _failed(report) == {}
    assert [c["name"] for c in report.checks] == ["readable", "size", "aspect", "blank", "uniform", "chroma",
                                                  "palette", "exposure", "contrast"]
    for c in report.checks:
        assert set(c) == {"name", "value", "threshold", "severity", "passed", "message"}
    cut = check_image(cutout, require_transparency=True, expected_size=(256, 256))
    assert cut.passed, cut.checks
    assert {c["name"] for c in cut.checks} >= {"transparency", "border_cut"}
    assert 0.9 < report.quality_score <= 1.0 and report.chroma_exceedance == 0.0
    assert len(report.phash) == 16


def test_unreadable_is_the_only_check(tmp_path):
    report = check_image(b"\x89PNG\r\n\x1a\n broken")
    assert [c["name"] for c in report.checks] == ["readable"] and report.hard_failures == 1
    report = check_image(tmp_path / "missing.png")
    assert _failed(report) == {"readable": "hard"}


def test_blank_and_uniform_are_hard_failures():
    white = check_image(Image.new("RGB", (128, 128), (255, 255, 255)))
    assert _failed(white).get("blank") == "hard" and _failed(white).get("uniform") == "hard"
    rng = np.random.default_rng(0)
    faint = np.clip(128 + rng.normal(0, 1.0, (128, 128, 3)), 0, 255).astype(np.uint8)
    assert _failed(check_image(Image.fromarray(faint))).get("uniform") == "hard"
    empty = check_image(Image.new("RGBA", (64, 64), (200, 0, 0, 0)))
    assert _failed(empty).get("blank") == "hard"


def test_wrong_size_and_aspect(clean):
    report = check_image(clean.resize((256, 200)), expected_size=(256, 256), expected_aspect=1.0)
    assert _failed(report) == {"size": "hard", "aspect": "hard"}
    assert check_image(clean.resize((250, 250)), expected_size=(256, 256),
                       thresholds=QAThresholds(size_tolerance=0.05)).passed
    assert check_image(clean.resize((320, 180)), expected_aspect="16:9").passed


def test_missing_transparency(clean):
    assert _failed(check_image(clean, require_transparency=True)) == {"transparency": "hard"}
    opaque = clean.convert("RGBA")
    failed = _failed(check_image(opaque, require_transparency=True))
    assert failed == {"transparency": "hard", "border_cut": "hard"}


def test_cut_subject(cutout):
    arr = np.asarray(cutout)
    shifted = np.zeros_like(arr)
    shifted[:, :146] = arr[:, 110:]   # the figure now runs off the left edge
    report = check_image(Image.fromarray(shifted, "RGBA"), require_transparency=True)
    assert _failed(report) == {"border_cut": "hard"}
    assert check_image(cutout, require_transparency=True).check("border_cut")["passed"]


def test_oversaturated_is_a_soft_warning_with_its_exceedance(clean):
    vivid = ImageEnhance.Color(clean).enhance(3.0)
    report = check_image(vivid, max_chroma=0.15)
    assert _failed(report) == {"chroma": "soft"}
    assert report.passed and report.soft_warnings == 1 and report.chroma_exceedance > 0.001
    assert report.quality_score < check_image(clean, max_chroma=0.15).quality_score
    half_red = np.zeros((64, 64, 3), np.uint8)
    half_red[:, :32] = (255, 0, 0)
    half_red[:, 32:] = (128, 128, 128)
    exact = check_image(Image.fromarray(half_red), max_chroma=0.2)
    assert exact.chroma_exceedance == pytest.approx(0.5 * (0.257683 - 0.2), abs=1e-4)
    assert exact.check("chroma")["value"] == pytest.approx(0.5)


def test_exposure_for_the_time_of_day(clean):
    dark = ImageEnhance.Brightness(clean).enhance(0.35)
    assert _failed(check_image(dark, time_of_day="day")) == {"exposure": "soft"}
    assert check_image(dark, time_of_day="night").check("exposure")["passed"]
    assert _failed(check_image(clean, time_of_day="night")) == {"exposure": "soft"}
    assert "too bright" in check_image(clean, time_of_day="night").check("exposure")["message"]
    with pytest.raises(InvalidParams):
        check_image(clean, time_of_day="noon")


def test_low_contrast(clean):
    flat = ImageEnhance.Contrast(clean).enhance(0.15)
    report = check_image(flat)
    assert _failed(report) == {"contrast": "soft"}


def test_palette_distance(clean):
    assert check_image(clean, palette=PALETTE).check("palette")["passed"]
    far = check_image(clean, palette=["#00ff00", "#ff00ff"])
    assert _failed(far) == {"palette": "soft"}
    with pytest.raises(InvalidParams):
        check_image(clean, palette=["#nothex"])


def test_near_duplicate_by_phash(clean):
    sibling = check_image(clean).phash
    buf = io.BytesIO()
    clean.resize((200, 200)).save(buf, "JPEG", quality=80)   # the same picture, re-encoded smaller
    report = check_image(buf.getvalue(), sibling_hashes=[sibling])
    assert _failed(report) == {"duplicate": "soft"}
    other = compose(character((256, 256), WHO, cx=0.3, scale=0.6),
                    background((256, 256), "vertical", (40, 40, 90), (200, 120, 60))).image()
    assert check_image(other, sibling_hashes=[sibling]).check("duplicate")["passed"]
    with pytest.raises(InvalidParams):
        check_image(clean, sibling_hashes=["abc"])


def test_thresholds_override_and_document_their_defaults(clean):
    strict = QAThresholds(min_contrast=0.5, exposure={"day": [0.2, 0.1]})
    report = check_image(clean, thresholds=strict, time_of_day="day")
    assert _failed(report) == {"contrast": "soft", "exposure": "soft"}
    assert strict.exposure["day"] == [0.1, 0.2]   # a pair in either order, kept low first
    assert strict.exposure["night"] == list(DEFAULT_EXPOSURE["night"])   # unset times keep their defaults
    schema = QAThresholds.model_json_schema()
    assert all(prop.get("description") for prop in schema["properties"].values())
    # Equal bounds are a range of one lightness: the check warns about anything else.
    point = QAThresholds(exposure={"day": [0.5, 0.5]})
    exposure = check_image(clean, thresholds=point, time_of_day="day").check("exposure")
    assert exposure["threshold"] == [0.5, 0.5] and not exposure["passed"]
    # Strict as the schema states: a number is a JSON number, the range two of them within 0..1.
    for bad in ({"unknown": 1}, {"duplicate_max_distance": False}, {"duplicate_max_distance": "6"},
                {"min_contrast": "0.5"}, {"exposure": {"day": [0.1]}}, {"exposure": {"day": [0.1, 1.5]}},
                {"exposure": {"noon": [0.1, 0.2]}}, {"exposure": {"day": ["0.1", 0.2]}}):
        with pytest.raises(ValueError):
            QAThresholds.model_validate(bad)
    assert QAThresholds.model_validate({"duplicate_max_distance": 3.0}).duplicate_max_distance == 3


def test_report_is_deterministic_and_serialisable(clean):
    import json
    a = check_image(clean, palette=PALETTE, time_of_day="dusk").to_dict()
    b = check_image(clean, palette=PALETTE, time_of_day="dusk").to_dict()
    assert a == b and json.loads(json.dumps(a)) == a
