"""What a model file's inputs and outputs must look like for its kind, read from the file itself.

- segmentation: one image input [1, 3, H, W]; the first output [1, 1, h, w] (u2net returns several such maps,
  the first is the fused one rembg uses).
- matting (ViTMatte): one input [1, 4, H, W] (RGB and the trimap); output [1, 1, H, W].
- super_resolution (Real-ESRGAN style): one input [1, 3, H, W]; output [1, 3, sH, sW]. The scale s is measured by
  running the model on a small input, since dynamic dimensions do not carry it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iat.errors import InvalidParams
from iat.models.manifest import IOSignature, TensorSpec

PROBE_SIDE = 16  # a super-resolution model's scale is measured on an input this size (where its size is dynamic)


def _dims(shape) -> list[int | str | None]:
    return [d if isinstance(d, (int, str)) or d is None else str(d) for d in shape]


def inspect(session) -> IOSignature:
    return IOSignature(inputs=[TensorSpec(name=t.name, shape=_dims(t.shape), dtype=t.type) for t in session.get_inputs()],
                       outputs=[TensorSpec(name=t.name, shape=_dims(t.shape), dtype=t.type)
                                for t in session.get_outputs()])


def _bad(message: str, io: IOSignature) -> InvalidParams:
    return InvalidParams(f"the model does not have the signature its kind needs: {message}",
                         details={"errors": [{"loc": ["kind"], "msg": message, "type": "value_error"}],
                                  "io": io.model_dump()})


def _channels(spec: TensorSpec, want: int, what: str, io: IOSignature) -> None:
    if len(spec.shape) != 4:
        raise _bad(f"{what} {spec.name!r} has rank {len(spec.shape)}, not 4 ([N, C, H, W])", io)
    if isinstance(spec.shape[1], int) and spec.shape[1] != want:
        raise _bad(f"{what} {spec.name!r} has {spec.shape[1]} channels, not {want}", io)
    if spec.dtype != "tensor(float)":
        raise _bad(f"{what} {spec.name!r} is {spec.dtype}, not tensor(float)", io)


def _static_side(spec: TensorSpec) -> tuple[int, int] | None:
    h, w = spec.shape[2], spec.shape[3]
    return (h, w) if isinstance(h, int) and isinstance(w, int) else None


def check(kind: str, session, io: IOSignature) -> int | None:
    """Raises InvalidParams when `io` does not fit `kind`; returns a super-resolution model's scale, else None."""
    if len(io.inputs) != 1 or not io.outputs:
        raise _bad(f"{len(io.inputs)} inputs and {len(io.outputs)} outputs (one input and at least one output)", io)
    inp, out = io.inputs[0], io.outputs[0]
    if kind == "segmentation":
        _channels(inp, 3, "input", io)
        _channels(out, 1, "output", io)
        return None
    if kind == "matting":
        _channels(inp, 4, "input", io)
        _channels(out, 1, "output", io)
        return None
    _channels(inp, 3, "input", io)
    _channels(out, 3, "output", io)
    side = _static_side(inp) or (PROBE_SIDE, PROBE_SIDE)
    try:
        result = session.run(None, {inp.name: np.zeros((1, 3, *side), dtype=np.float32)})[0]
    except Exception as exc:  # onnxruntime's own errors: a model that cannot run on a small image
        raise _bad(f"it failed to run on a {side[1]}x{side[0]} input ({type(exc).__name__})", io) from None
    sh, sw = result.shape[2] / side[0], result.shape[3] / side[1]
    if result.ndim != 4 or sh != sw or sh != int(sh) or not 2 <= sh <= 8:
        raise _bad(f"its output {list(result.shape)} for a {side[1]}x{side[0]} input is not an integer upscale of "
                   "2 to 8", io)
    return int(sh)


def load_and_check(path: Path, kind: str) -> tuple[IOSignature, int | None]:
    """Loads the file with onnxruntime (a file it cannot load is not a model) and checks it against its kind."""
    from iat.models.sessions import inference_session

    try:
        session = inference_session(str(path), ["CPUExecutionProvider"])
    except Exception as exc:
        raise InvalidParams(f"the file is not a model onnxruntime can load ({type(exc).__name__})",
                            details={"errors": [{"loc": ["path"], "msg": "not an ONNX model", "type": "value_error"}]}
                            ) from None
    io = inspect(session)
    return io, check(kind, session, io)
