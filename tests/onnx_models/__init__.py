"""Small ONNX models the tests build with the real I/O signatures of the models the engines run (one module per
family: superres, segmentation, matting), saved with `save`, installed with `install`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
from onnx import helper

OPSET = 17


def model(graph) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8  # readable by every onnxruntime the product supports
    onnx.checker.check_model(m)
    return m


def save(proto: onnx.ModelProto, path: Path) -> str:
    """Writes the model; returns its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install(store, proto: onnx.ModelProto, name: str, kind: str, tmp: Path, **kw):
    """Saves `proto` under `tmp` and installs it in `store` (an iat.models.store.ModelStore)."""
    path = Path(tmp) / f"{name}.src.onnx"
    sha = save(proto, path)
    return store.install(path, name=name, kind=kind, sha256=sha, **kw)
