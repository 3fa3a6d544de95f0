"""Super-resolution models with Real-ESRGAN's I/O: [1, 3, H, W] -> [1, 3, sH, sW], values in [0, 1].

`conv_depth_to_space(scale)`: a 3x3 convolution to 3*s*s channels, then DepthToSpace (pixel shuffle), the last
layers of ESRGAN-style networks. Its weights copy each input pixel (nearest-neighbour) plus a small learned-looking
perturbation from a fixed seed, so the output is deterministic, close to the input and sensitive to every
neighbour within the kernel: tiling errors show.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_models import model


def conv_depth_to_space(scale: int = 2, *, layers: int = 1, seed: int = 0, static_side: int | None = None):
    rng = np.random.default_rng(seed)
    side = [static_side, static_side] if static_side else ["h", "w"]
    nodes, inits, current = [], [], "x"
    for i in range(layers - 1):  # extra 3x3 layers widen the receptive field (and the tile overlap needed)
        w = np.zeros((3, 3, 3, 3), np.float32)
        for c in range(3):
            w[c, c, 1, 1] = 1.0
        w += rng.normal(0, 0.02, w.shape).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [current, f"w{i}"], [f"h{i}"], pads=[1, 1, 1, 1]))
        current = f"h{i}"
    w = np.zeros((3 * scale * scale, 3, 3, 3), np.float32)
    for c in range(3):
        w[c * scale * scale:(c + 1) * scale * scale, c, 1, 1] = 1.0   # CRD order: channel-major blocks
    w += rng.normal(0, 0.02, w.shape).astype(np.float32)
    inits.append(numpy_helper.from_array(w, "w_out"))
    nodes += [helper.make_node("Conv", [current, "w_out"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("DepthToSpace", ["c"], ["y"], blocksize=scale, mode="CRD")]
    out_side = [s * scale for s in side] if static_side else ["H", "W"]
    graph = helper.make_graph(nodes, "superres",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, *side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, *out_side])], inits)
    return model(graph)
