"""The preview provider: deterministic, and each stage, shot and character visibly its own."""

from __future__ import annotations

import io
import struct
import threading

import numpy as np
import pytest
from PIL import Image

from iat.errors import InvalidParams, ProviderError
from iat.plugins import LazyRegistry
from iat.providers import default_providers
from iat.providers.base import Cancelled, GenerateRequest, ImageProvider
from iat.providers.preview import PreviewProvider

PALETTE = ["#f4f1de", "#e07a5f", "#3d405b", "#81b29a", "#f2cc8f"]
MIRA = {"code": "mira", "name": "Mira", "palette": ["#f1c27d", "#e63946", "#1d3557", "#a8dadc"],
        "appearance": "long hair, glasses", "outfit": "red dress"}
BOLT = {"code": "bolt", "name": "Bolt", "palette": ["#2a9d8f", "#264653", "#ffb703"],
        "appearance": "tall, spiky hair", "outfit": "jacket, scarf"}


def request(stage="style_lock", *, init=None, seed=7, width=384, height=256, cutout=False, text="a city street",
            time_of_day="day", weather="clear", characters=(MIRA, BOLT), **extra) -> GenerateRequest:
    return GenerateRequest.parse({
        "mode": "img2img" if init is not None else "text2img", "stage": stage, "prompt": f"storybook, {text}",
        "width": width, "height": height, "seed": seed, "init_image": init, "params": {"cutout": cutout},
        "scene": {"text": text, "palette": PALETTE, "characters": list(characters),
                  "time_of_day": time_of_day, "weather": weather}, **extra})


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def luminance(png: bytes) -> float:
    px = pixels(png).astype(np.float64)
    return float((0.2126 * px[..., 0] + 0.7152 * px[..., 1] + 0.0722 * px[..., 2]).mean())


def chain(provider, *, stages=("style_lock", "light_time", "weather_effects", "advanced"), **kw) -> list[bytes]:
    outs: list[bytes] = []
    for stage in stages:
        outs.append(provider.generate(request(stage, init=outs[-1] if outs else None, **kw)).image)
    return outs


def count_colour(px: np.ndarray, hex_colour: str) -> int:
    rgb = [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]
    return int((px == np.asarray(rgb, dtype=np.int16)).all(axis=2).sum())


def png_chunks(data: bytes) -> list[str]:
    names, pos = [], 8
    while pos < len(data):
        length, name = struct.unpack(">I4s", data[pos:pos + 8])
        names.append(name.decode("ascii"))
        pos += 12 + length
    return names


def test_interface_and_registration():
    registry: LazyRegistry[ImageProvider] = LazyRegistry("provider", default_providers())
    provider = registry.get("preview")
    assert isinstance(provider, ImageProvider) and provider.code == "preview"
    assert provider.status(provider.default_account()).ready
    estimate = provider.estimate(request())
    assert estimate.cost_usd == 0 and estimate.currency == "USD"
    result = provider.generate(request())
    assert result.usage["cost_usd"] == 0 and result.model and result.seed == 7


def test_same_request_same_bytes_across_every_stage():
    first = chain(PreviewProvider(), time_of_day="dusk", weather="rain")
    again = chain(PreviewProvider(), time_of_day="dusk", weather="rain")
    assert first == again
    assert len(set(first)) == 4  # every stage changed the picture
    for png in first:
        assert set(png_chunks(png)) == {"IHDR", "IDAT", "IEND"}  # no time or software chunks


def test_another_seed_or_shot_gives_another_picture():
    p = PreviewProvider()
    base = p.generate(request()).image
    assert p.generate(request(seed=8)).image != base
    assert p.generate(request(text="a forest by the lake")).image != base
    assert p.generate(request(characters=(BOLT, MIRA))).image != base


def test_text2img_at_a_later_stage_equals_the_chain():
    p = PreviewProvider()
    locked = p.generate(request()).image
    assert p.generate(request("light_time", time_of_day="night")).image == \
        p.generate(request("light_time", init=locked, time_of_day="night")).image


def test_no_seed_picks_a_reproducible_one():
    p = PreviewProvider()
    a, b = p.generate(request(seed=None)), p.generate(request(seed=None))
    assert a.image == b.image and a.seed == b.seed and isinstance(a.seed, int)


def test_night_is_dark_and_dawn_dusk_differ_from_day():
    p = PreviewProvider()
    locked = p.generate(request()).image
    lit = {t: p.generate(request("light_time", init=locked, time_of_day=t)).image
           for t in ("dawn", "day", "dusk", "night")}
    day, night = luminance(lit["day"]), luminance(lit["night"])
    assert night < 0.55 * day
    assert luminance(lit["dusk"]) < day and luminance(lit["dawn"]) < day
    # Dawn is lit from the left, dusk from the right: the warm (red minus blue) side differs.
    def warm_left_minus_right(png):
        px = pixels(png).astype(np.float64)
        warmth = px[..., 0] - px[..., 2]
        half = px.shape[1] // 2
        return warmth[:, :half].mean() - warmth[:, half:].mean()
    base = warm_left_minus_right(locked)
    assert warm_left_minus_right(lit["dawn"]) > base + 5
    assert warm_left_minus_right(lit["dusk"]) < base - 5


def test_weather_changes_the_picture_and_clear_does_not():
    p = PreviewProvider()
    lit = p.generate(request("light_time", time_of_day="day")).image
    clear = p.generate(request("weather_effects", init=lit, weather="clear")).image
    assert np.array_equal(pixels(clear), pixels(lit))
    base = pixels(lit)
    for kind in ("rain", "snow", "fog"):
        out = pixels(p.generate(request("weather_effects", init=lit, weather=kind)).image)
        assert np.abs(out - base).mean() > 8, kind
    # Fog is a veil: it lowers contrast.
    fog = pixels(p.generate(request("weather_effects", init=lit, weather="fog")).image)
    assert fog.std() < 0.8 * base.std()


def test_characters_show_their_own_palettes_left_to_right():
    px = pixels(PreviewProvider().generate(request(width=512, height=384)).image)
    half = px.shape[1] // 2
    left, right = px[:, :half], px[:, half:]
    for colour in MIRA["palette"]:
        assert count_colour(left, colour) > 20, colour
        assert count_colour(right, colour) == 0, colour
    for colour in BOLT["palette"]:
        assert count_colour(right, colour) > 20, colour
        assert count_colour(left, colour) == 0, colour


def test_candidates_differ_but_stay_on_model():
    p = PreviewProvider()
    a, b = pixels(p.generate(request(seed=1)).image), pixels(p.generate(request(seed=2)).image)
    assert not np.array_equal(a, b)
    for colour in MIRA["palette"] + BOLT["palette"]:
        assert count_colour(a, colour) > 20 and count_colour(b, colour) > 20, colour


@pytest.mark.parametrize("size", [(384, 256), (200, 320), (640, 64)])
def test_size_is_honoured(size):
    w, h = size
    result = PreviewProvider().generate(request(width=w, height=h))
    assert (result.width, result.height) == (w, h)
    with Image.open(io.BytesIO(result.image)) as im:
        assert im.size == (w, h) and im.mode == "RGB"
    # img2img on an input of another size answers in the requested size.
    out = PreviewProvider().generate(request("light_time", init=result.image, width=300, height=200))
    with Image.open(io.BytesIO(out.image)) as im:
        assert im.size == (300, 200)


@pytest.mark.parametrize("time_of_day,weather", [("dawn", "rain"), ("dusk", "snow"), ("night", "fog")])
def test_cutout_keeps_a_flat_border_ring_at_every_stage(time_of_day, weather):
    outs = chain(PreviewProvider(), cutout=True, time_of_day=time_of_day, weather=weather)
    for stage, png in zip(("style_lock", "light_time", "weather_effects", "advanced"), outs):
        px = pixels(png)
        h, w = px.shape[:2]
        ring = max(2, round(0.05 * min(w, h)))
        border = np.concatenate([px[:ring].reshape(-1, 3), px[-ring:].reshape(-1, 3),
                                 px[:, :ring].reshape(-1, 3), px[:, -ring:].reshape(-1, 3)])
        assert (border == border[0]).all(), stage
        inner = px[ring:-ring, ring:-ring]
        assert (np.abs(inner - border[0]).max(axis=2) > 24).mean() > 0.03, stage  # figures are there


def test_bad_input_is_a_typed_error():
    with pytest.raises(InvalidParams) as err:
        GenerateRequest.parse({"mode": "img2img", "stage": "light_time", "width": 64, "height": 64})
    assert "init_image" in str(err.value.details)
    with pytest.raises(InvalidParams):
        request(characters=({"code": "x", "palette": ["#12345g"]},))
    with pytest.raises(InvalidParams):
        request(width=8)
    with pytest.raises(ProviderError):
        PreviewProvider().generate(request("light_time", init=b"not a picture"))
    with pytest.raises(ProviderError):
        PreviewProvider().generate(request(params={"cutout": False, "strength": 3}))


def test_cancel_stops_before_work():
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        PreviewProvider().generate(request(), cancel=cancel)


def test_img2img_style_lock_pulls_an_input_toward_the_style_palette():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    noise.save(buf, "PNG")
    out = pixels(PreviewProvider().generate(request(init=buf.getvalue(), width=96, height=64)).image)
    palette = np.asarray([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in PALETTE], dtype=np.int32)

    def mean_distance(px):
        d = ((px.astype(np.int32)[:, :, None, :] - palette[None, None]) ** 2).sum(axis=3)
        return float(np.sqrt(d.min(axis=2)).mean())
    assert mean_distance(out) < 0.4 * mean_distance(np.asarray(noise))
