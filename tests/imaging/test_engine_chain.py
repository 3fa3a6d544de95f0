"""The background-removal chain with real engines: key, and a second engine that takes alpha from a mask file."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from iat.engines import default_engines
from iat.engines.base import Cancelled, EngineResult, EngineStatus, check_cancel
from iat.engines.chain import remove_background
from iat.errors import EngineError, InvalidParams
from iat.plugins import LazyRegistry

from imaging_art import SKIN, SHIRT, PANTS, background, character, compose, iou


class MaskFileEngine:
    """Background removal from a given mask image: its luminance becomes the alpha of the source."""

    code: ClassVar[str] = "mask_file"
    op: ClassVar[str] = "remove_background"

    def available(self, ctx=None) -> EngineStatus:
        return EngineStatus(True, "")

    def process(self, src: Path, dst: Path, options: dict[str, Any], *,
                cancel: threading.Event | None = None, ctx=None) -> EngineResult:
        check_cancel(cancel)
        mask_path = options.get("mask")
        if not mask_path:
            raise InvalidParams("mask_file needs a 'mask' option")
        if not Path(mask_path).exists():
            raise EngineError("mask file is missing", details={"mask": str(mask_path)})
        img = Image.open(src).convert("RGB")
        mask = Image.open(mask_path).convert("L")
        if mask.size != img.size:
            raise EngineError("mask size differs from the image")
        img.putalpha(mask)
        img.save(dst)
        return EngineResult(Path(dst), img.size[0], img.size[1], {"engine": self.code})


class OfflineEngine(MaskFileEngine):
    code: ClassVar[str] = "offline"

    def available(self, ctx=None) -> EngineStatus:
        return EngineStatus(False, "no network")


class BrokenEngine(MaskFileEngine):
    code: ClassVar[str] = "broken"

    def process(self, src, dst, options, *, cancel=None, ctx=None):
        Path(dst).write_bytes(b"half")   # writes a partial file, then fails the way a bug does
        raise RuntimeError("boom")


@pytest.fixture
def registry() -> LazyRegistry:
    reg = LazyRegistry("engine", default_engines())
    reg.register("mask_file", MaskFileEngine())
    reg.register("offline", OfflineEngine())
    reg.register("broken", BrokenEngine())
    return reg


@pytest.fixture
def photo(tmp_path) -> tuple[Path, Path, np.ndarray]:
    """A busy picture the key engine cannot separate, and the true mask for the mask-file engine."""
    rng = np.random.default_rng(5)
    art = compose(character((128, 128), {"head": SKIN, "body": SHIRT, "legs": PANTS}),
                  background((128, 128), "flat", (128, 128, 128)))
    rgb = np.where(art.truth[..., None], art.rgb, rng.integers(0, 256, (128, 128, 3))).astype(np.uint8)
    src, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.fromarray(rgb).save(src)
    Image.fromarray((art.coverage * 255).astype(np.uint8), "L").save(mask)
    return src, mask, art.truth


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_falls_back_to_the_next_engine_and_records_every_attempt(registry, photo, tmp_path):
    src, mask, truth = photo
    dst = tmp_path / "cut.png"
    result = remove_background(registry, ["offline", "key", "broken", "mask_file"], src, dst,
                               options={"mask_file": {"mask": str(mask)}, "broken": {"mask": str(mask)}})
    assert result.engine == "mask_file" and result.result.path == dst
    assert [a.engine for a in result.attempts] == ["offline", "key", "broken", "mask_file"]
    assert [a.ok for a in result.attempts] == [False, False, False, True]
    offline, key, broken, winner = result.attempts
    assert offline.reason == "unavailable: no network" and offline.check is None
    assert key.reason.startswith("mask rejected:") and key.check is not None and not key.check["passed"]
    assert key.meta["engine"] == "key" and key.duration_s > 0
    assert broken.reason == "engine crashed: RuntimeError"
    assert winner.reason == "" and winner.check["passed"]
    assert iou(np.asarray(Image.open(dst))[..., 3] > 127, truth) > 0.99
    assert _leftovers(tmp_path, {"photo.png", "mask.png", "cut.png"}) == []
    assert all(isinstance(a.to_dict()["duration_s"], float) for a in result.attempts)


def test_the_first_acceptable_result_wins(registry, tmp_path):
    art = compose(character((128, 128), {"head": SKIN, "body": SHIRT, "legs": PANTS}),
                  background((128, 128), "flat", (250, 250, 250)))
    Image.fromarray(art.rgb).save(tmp_path / "art.png")
    result = remove_background(registry, ["key", "mask_file"], tmp_path / "art.png", tmp_path / "cut.png")
    assert result.engine == "key" and len(result.attempts) == 1 and result.check.passed


def test_every_engine_failing_is_an_engine_error_with_the_attempts(registry, photo, tmp_path):
    src, mask, _ = photo
    with pytest.raises(EngineError) as info:
        remove_background(registry, ["key", "mask_file"], src, tmp_path / "cut.png",
                          options={"mask_file": {"mask": str(tmp_path / "missing.png")}})
    attempts = info.value.details["attempts"]
    assert [a["engine"] for a in attempts] == ["key", "mask_file"]
    assert not any(a["ok"] for a in attempts)
    assert attempts[1]["reason"] == "engine_error: mask file is missing"
    assert info.value.to_object()["data"]["name"] == "engine_error"
    assert _leftovers(tmp_path, {"photo.png", "mask.png"}) == []


@pytest.mark.parametrize("order", [[], ["nope"], ["lanczos"], ["key", "key"]])
def test_bad_orders_are_invalid_params(registry, photo, tmp_path, order):
    src, _, _ = photo
    with pytest.raises(InvalidParams):
        remove_background(registry, order, src, tmp_path / "cut.png")
    assert not (tmp_path / "cut.png").exists()


def test_bad_input_stops_the_chain_before_output(registry, photo, tmp_path):
    src, _, _ = photo
    with pytest.raises(InvalidParams):   # options for an engine not in the order
        remove_background(registry, ["key"], src, tmp_path / "cut.png", options={"mask_file": {}})
    with pytest.raises(InvalidParams):   # an engine refusing its options
        remove_background(registry, ["mask_file"], src, tmp_path / "cut.png")
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(InvalidParams):
        remove_background(registry, ["key"], tmp_path / "junk.png", tmp_path / "cut.png")
    assert _leftovers(tmp_path, {"photo.png", "mask.png", "junk.png"}) == []


def test_cancel_stops_the_chain(registry, photo, tmp_path):
    src, mask, _ = photo
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        remove_background(registry, ["key", "mask_file"], src, tmp_path / "cut.png",
                          options={"mask_file": {"mask": str(mask)}}, cancel=cancel)
    assert _leftovers(tmp_path, {"photo.png", "mask.png"}) == []


def test_default_engines_resolve_lazily():
    reg = LazyRegistry("engine", default_engines())
    assert {"key", "lanczos"} <= set(reg.codes())   # and the model-based and paid engines
    assert (reg.get("key").op, reg.get("lanczos").op) == ("remove_background", "upscale")
