"""Segmentation models with the I/O of the ones rembg runs, that really segment a family of synthetic scenes.

The scenes (`scene`): a figure of saturated colours (ellipses, rectangles, triangles in one to three hues) on a
grey backdrop, plain or a linear or radial gradient, with mild noise; the ground truth is the figure's pixels.
The models score chroma, max(R,G,B) - min(R,G,B), per pixel: first a 1x1 convolution undoes the normalisation
rembg applied (x * std + mean), giving the pixel scaled by the image's maximum (rembg divides by it), then six
ReLU'd channel differences whose sum is twice the chroma, then a ramp from "grey" to "coloured". Grey is
background whatever its brightness, so gradients and vignettes do not matter.

- `u2net(...)`: input [1, 3, 320, 320]; seven outputs [1, 1, 320, 320] like U^2-Net (d0, the fused map rembg
  uses, is the clipped ramp; d1..d6 side maps are sigmoids of it). `hidden` adds 3x3 convolutions of that many
  channels (`layers` of them) to make inference cost something (the benchmark's model); the chroma signal rides
  through on identity taps, the other channels are seeded noise that the output reads with small weights.
- `isnet()`: [1, 3, 1024, 1024] -> [1, 1, 1024, 1024] (rembg's DIS session: mean 0.5, std 1).
- `birefnet()`: [1, 3, 1024, 1024] -> [1, 1, 1024, 1024] logits (rembg's BiRefNet session applies a sigmoid).
- `blind()`: u2net-shaped, finds nothing: a flat map with one lit pixel in a corner (a flat map would be 0/0 in
  rembg's min-max), i.e. an empty mask.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_models import model

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (1.0, 1.0, 1.0))
U2NET_SIDE, DIS_SIDE = 320, 1024

# chroma ramp: 0 at LOW (a grey backdrop with noise is far below), 1 at HIGH (every figure colour is above)
LOW, HIGH = 0.14, 0.30

_PAIRS = ((0, 1), (1, 0), (1, 2), (2, 1), (2, 0), (0, 2))


def _features(mean, std) -> tuple[list, list]:
    """x (normalised) -> "f": six ReLU'd pairwise channel differences of the unnormalised pixel."""
    w = np.zeros((6, 3, 1, 1), np.float32)
    b = np.zeros(6, np.float32)
    for k, (i, j) in enumerate(_PAIRS):
        # (x_i*std_i + mean_i) - (x_j*std_j + mean_j)
        w[k, i, 0, 0], w[k, j, 0, 0] = std[i], -std[j]
        b[k] = mean[i] - mean[j]
    inits = [numpy_helper.from_array(w, "wf"), numpy_helper.from_array(b, "bf")]
    nodes = [helper.make_node("Conv", ["x", "wf", "bf"], ["fd"]), helper.make_node("Relu", ["fd"], ["f"])]
    return nodes, inits


def _ramp(src: str, channels: int, out: str, *, gain: float = 1.0, seed: int = 0, noise: float = 0.0):
    """1x1 conv: (0.5 * sum of the first six channels - LOW) / (HIGH - LOW) * gain."""
    rng = np.random.default_rng(seed)
    scale = gain / (HIGH - LOW)
    w = np.zeros((1, channels, 1, 1), np.float32)
    w[0, :6, 0, 0] = 0.5 * scale
    if channels > 6 and noise:
        w[0, 6:, 0, 0] = rng.normal(0, noise, channels - 6)
    b = np.array([-LOW * scale], np.float32)
    return ([helper.make_node("Conv", [src, f"w_{out}", f"b_{out}"], [out])],
            [numpy_helper.from_array(w, f"w_{out}"), numpy_helper.from_array(b, f"b_{out}")])


def _hidden(channels: int, layers: int, seed: int) -> tuple[list, list, str]:
    """3x3 conv + ReLU layers from "f": channels 0-5 carry f (centre tap 1), the rest seeded noise."""
    rng = np.random.default_rng(seed)
    nodes, inits, current, cin = [], [], "f", 6
    for i in range(layers):
        w = rng.normal(0, 0.01, (channels, cin, 3, 3)).astype(np.float32)
        w[:6] = 0.0
        for c in range(6):
            w[c, c, 1, 1] = 1.0
        inits.append(numpy_helper.from_array(w, f"wh{i}"))
        inits.append(numpy_helper.from_array(np.zeros(channels, np.float32), f"bh{i}"))
        nodes += [helper.make_node("Conv", [current, f"wh{i}", f"bh{i}"], [f"hc{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"hc{i}"], [f"h{i}"])]
        current, cin = f"h{i}", channels
    return nodes, inits, current


def _clip01(src: str, out: str) -> tuple[list, list]:
    lo, hi = numpy_helper.from_array(np.array(0, np.float32), f"lo_{out}"), numpy_helper.from_array(
        np.array(1, np.float32), f"hi_{out}")
    return [helper.make_node("Clip", [src, f"lo_{out}", f"hi_{out}"], [out])], [lo, hi]


def _io(side: int, outputs: list[str]):
    return ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 1, side, side]) for o in outputs])


def u2net(*, hidden: int = 0, layers: int = 0, seed: int = 0):
    nodes, inits = _features(*IMAGENET)
    src, channels = "f", 6
    if hidden and layers:
        n, i, src = _hidden(hidden, layers, seed)
        nodes, inits, channels = nodes + n, inits + i, hidden
    n, i = _ramp(src, channels, "r", seed=seed, noise=0.002)
    nodes, inits = nodes + n, inits + i
    n, i = _clip01("r", "d0")
    nodes, inits = nodes + n, inits + i
    for k in range(1, 7):   # side outputs: sigmoids of the ramp at decreasing gain (rembg reads only d0)
        g = numpy_helper.from_array(np.array(4.0 / k, np.float32), f"g{k}")
        nodes += [helper.make_node("Mul", ["r", f"g{k}"], [f"s{k}"]), helper.make_node("Sigmoid", [f"s{k}"], [f"d{k}"])]
        inits.append(g)
    inputs, outputs = _io(U2NET_SIDE, [f"d{k}" for k in range(7)])
    return model(helper.make_graph(nodes, "u2net_chroma", inputs, outputs, inits))


def isnet():
    nodes, inits = _features(*HALF)
    n, i = _ramp("f", 6, "r")
    n2, i2 = _clip01("r", "y")
    inputs, outputs = _io(DIS_SIDE, ["y"])
    return model(helper.make_graph(nodes + n + n2, "isnet_chroma", inputs, outputs, inits + i + i2))


def birefnet():
    """Logits: 12 * (ramp - 0.5), clipped to +-8 (sigmoid 0.0003 .. 0.9997), so rembg's sigmoid gives the mask."""
    nodes, inits = _features(*IMAGENET)
    n, i = _ramp("f", 6, "r", gain=12.0)
    nodes, inits = nodes + n, inits + i
    inits.append(numpy_helper.from_array(np.array(6.0, np.float32), "half12"))
    inits += [numpy_helper.from_array(np.array(-8, np.float32), "lo"), numpy_helper.from_array(
        np.array(8, np.float32), "hi")]
    nodes += [helper.make_node("Sub", ["r", "half12"], ["logit"]),
              helper.make_node("Clip", ["logit", "lo", "hi"], ["y"])]
    inputs, outputs = _io(DIS_SIDE, ["y"])
    return model(helper.make_graph(nodes, "birefnet_chroma", inputs, outputs, inits))


def blind():
    """u2net-shaped, sees nothing: 0 * x plus a constant map lit at one corner pixel."""
    lit = np.zeros((1, 1, U2NET_SIDE, U2NET_SIDE), np.float32)
    lit[0, 0, 0, 0] = 1.0
    inits = [numpy_helper.from_array(np.zeros((1, 3, 1, 1), np.float32), "w0"),
             numpy_helper.from_array(lit, "lit")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["z"]), helper.make_node("Add", ["z", "lit"], ["d0"])]
    nodes += [helper.make_node("Identity", ["d0"], [f"d{k}"]) for k in range(1, 7)]
    inputs, outputs = _io(U2NET_SIDE, [f"d{k}" for k in range(7)])
    return model(helper.make_graph(nodes, "u2net_blind", inputs, outputs, inits))


# --- the scenes ---


def _hue_rgb(hue: float, chroma: float, base: float) -> np.ndarray:
    """A saturated sRGB colour (0..1): `chroma` between its largest and smallest channel."""
    h6 = (hue % 1.0) * 6
    x = 1 - abs(h6 % 2 - 1)
    r, g, b = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(h6) % 6]
    return np.clip(base + chroma * np.array([r, g, b]), 0, 1)


def backdrop(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Grey, plain or a linear or radial gradient, float 0..1, HxWx3."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b = rng.uniform(0.25, 0.95, 2)
    style = rng.integers(3)
    if style == 0:
        level = np.full((height, width), a, np.float32)
    elif style == 1:
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        level = a + (b - a) * t
    else:
        cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
        r = np.hypot(xx - cx, yy - cy) / np.hypot(width, height)
        level = a + (b - a) * np.clip(r * 1.6, 0, 1)
    tint = rng.normal(0, 0.01, 3)   # a barely warm or cool grey
    return np.clip(level[..., None] + tint, 0, 1).astype(np.float32)


def figure(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask bool HxW, colour float HxWx3): a body of 2-5 overlapping shapes near the middle, 1-3 hues."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    side = min(width, height)
    cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height
    mask = np.zeros((height, width), bool)
    colour = np.zeros((height, width, 3), np.float32)
    hues = rng.uniform(0, 1, rng.integers(1, 4))
    for k in range(rng.integers(2, 6)):
        ox, oy = rng.normal(0, 0.12, 2) * side
        rx, ry = rng.uniform(0.08, 0.22, 2) * side
        kind = rng.integers(3)
        if kind == 0:
            shape = ((xx - cx - ox) / rx) ** 2 + ((yy - cy - oy) / ry) ** 2 <= 1
        elif kind == 1:
            shape = (abs(xx - cx - ox) <= rx) & (abs(yy - cy - oy) <= ry)
        else:   # a triangle: three half-planes
            pts = [(cx + ox + rx * np.cos(t), cy + oy + ry * np.sin(t))
                   for t in rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2])]
            sign = []
            for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
                sign.append((x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0)
            shape = (sign[0] & sign[1] & sign[2]) | (~sign[0] & ~sign[1] & ~sign[2])
        c = _hue_rgb(hues[k % len(hues)], rng.uniform(0.5, 0.8), rng.uniform(0.0, 0.2))
        colour[shape] = c
        mask |= shape
    return mask, colour


def scene(seed: int, width: int = 512, height: int = 512, *, noise: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 HxWx3, ground-truth mask bool HxW) for `seed`."""
    rng = np.random.default_rng(seed)
    img = backdrop(rng, width, height)
    mask, colour = figure(rng, width, height)
    img[mask] = colour[mask]
    img += rng.normal(0, noise, img.shape).astype(np.float32)
    rgb = np.floor(np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return rgb, mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
