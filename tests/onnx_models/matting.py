"""Matting models with ViTMatte's I/O as rembg runs it: one input `pixel_values` [1, 4, 1024, 1024] (RGB in [0, 1]
and the trimap in [0, 1]: 0 background, 128/255 unknown, 1 foreground) -> `alphas` [1, 1, 1024, 1024].

`colour_projection(fg, bg)`: definite trimap pixels keep their value; in the unknown band the alpha is the pixel's
colour projected on the line from `bg` to `fg` (a 1x1 convolution, clipped to [0, 1]). On a composite of those two
colours, alpha * fg + (1 - alpha) * bg, that is the exact alpha, so the refine pass's result can be checked against
the ground truth, and a mistake in the pre- or post-processing (channel order, scaling, the trimap's levels, the
resize back) shows as an error.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_models import model

SIDE = 1024  # rembg's ViTMatte checkpoints run at this fixed size


def colour_projection(fg: tuple[float, float, float], bg: tuple[float, float, float], *, side: int = SIDE):
    f, b = np.asarray(fg, np.float64), np.asarray(bg, np.float64)
    d = f - b
    w = d / float(d @ d)
    inits = [
        numpy_helper.from_array(w.reshape(1, 3, 1, 1).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([-(b @ w)], np.float32), "bias"),
        *(numpy_helper.from_array(np.array([i], np.int64), f"cuts_{i}") for i in (0, 3, 4)),  # Slice bounds
        numpy_helper.from_array(np.array([1], np.int64), "axis"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.25, np.float32), "low"),
        numpy_helper.from_array(np.array(0.75, np.float32), "high"),
    ]
    nodes = [
        helper.make_node("Slice", ["pixel_values", "cuts_0", "cuts_3", "axis"], ["rgb"]),
        helper.make_node("Slice", ["pixel_values", "cuts_3", "cuts_4", "axis"], ["trimap"]),
        helper.make_node("Conv", ["rgb", "w", "bias"], ["projected"]),
        helper.make_node("Clip", ["projected", "zero", "one"], ["band_alpha"]),
        helper.make_node("Greater", ["trimap", "high"], ["is_fg"]),
        helper.make_node("Greater", ["trimap", "low"], ["above_low"]),
        helper.make_node("Less", ["trimap", "high"], ["below_high"]),
        helper.make_node("And", ["above_low", "below_high"], ["is_unknown"]),
        helper.make_node("Cast", ["is_fg"], ["fg"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["is_unknown"], ["unknown"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["unknown", "band_alpha"], ["band"]),
        helper.make_node("Add", ["fg", "band"], ["alphas"]),
    ]
    graph = helper.make_graph(nodes, "vitmatte_like",
                              [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 4, side, side])],
                              [helper.make_tensor_value_info("alphas", TensorProto.FLOAT, [1, 1, side, side])], inits)
    return model(graph)
