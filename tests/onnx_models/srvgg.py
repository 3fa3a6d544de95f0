"""A super-resolution model with the architecture of Real-ESRGAN's compact models (SRVGGNetCompact, the network of
realesr-general-x4v3 and realesr-animevideov3): a 3x3 conv to `feats` channels, `convs` x (3x3 conv feats->feats
+ PReLU), a 3x3 conv to 3*s*s channels, DepthToSpace, plus the nearest-neighbour upsampled input. I/O as
Real-ESRGAN: [1, 3, H, W] float in [0, 1] -> [1, 3, sH, sW].

The weights are random from a fixed seed, scaled so activations stay in range and the output stays near the
upsampled input: what matters here is the cost, 9 * (3*feats + convs*feats^2 + feats*3*s^2) multiply-adds per
input px (realesr-general-x4v3, feats=64 and convs=32: 1.21 M; the default feats=32, convs=8: 0.08 M), the
activation memory (feats float32 maps at the input's size) and the receptive field (a radius of convs + 2 input
px), not the picture quality.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_models import model


def srvgg(scale: int = 4, *, feats: int = 32, convs: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(name: str, src: str, cin: int, cout: int, gain: float) -> str:
        w = (rng.normal(0, 1, (cout, cin, 3, 3)) * gain * np.sqrt(2.0 / (9 * cin))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{name}_w"))
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b"))
        nodes.append(helper.make_node("Conv", [src, f"{name}_w", f"{name}_b"], [name], pads=[1, 1, 1, 1]))
        return name

    def prelu(name: str, src: str) -> str:
        inits.append(numpy_helper.from_array(np.full((feats, 1, 1), 0.25, np.float32), f"{name}_slope"))
        nodes.append(helper.make_node("PRelu", [src, f"{name}_slope"], [name]))
        return name

    current = prelu("a0", conv("c0", "x", 3, feats, 1.0))
    for i in range(convs):
        current = prelu(f"a{i + 1}", conv(f"c{i + 1}", current, feats, feats, 0.7))
    current = conv("c_out", current, feats, 3 * scale * scale, 0.5)
    nodes.append(helper.make_node("DepthToSpace", [current], ["shuffled"], blocksize=scale, mode="CRD"))
    inits.append(numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "up_scales"))
    nodes.append(helper.make_node("Resize", ["x", "", "up_scales"], ["base"], mode="nearest"))
    nodes.append(helper.make_node("Add", ["shuffled", "base"], ["y"]))
    graph = helper.make_graph(nodes, "srvgg",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "H", "W"])], inits)
    return model(graph)
