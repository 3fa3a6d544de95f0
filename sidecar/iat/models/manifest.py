"""The models folder's manifest (`manifest.json`): what each model file is, where it came from and its I/O.

A folder's manifest lists only files in that folder. The user's folder (IAT_MODELS_DIR, else <home>/models) is
written by models.install / models.download / models.remove; the folder shipped with the installer is read-only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MANIFEST = "manifest.json"
FORMAT = 1

# What a model does, which decides the engine that runs it and the signature it must have (iat.models.signature).
Kind = Literal["segmentation", "matting", "super_resolution"]
# A segmentation model's architecture: the rembg session that pre- and post-processes for it.
Arch = Literal["u2net", "isnet", "birefnet"]

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int | str | None] = Field(description="Dimensions; a string or null is a dynamic dimension")
    dtype: str = Field(description="onnxruntime's type name, e.g. tensor(float)")


class IOSignature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    kind: Kind
    arch: Arch | None = Field(None, description="Segmentation models only: the rembg session that runs it")
    scale: int | None = Field(None, ge=2, le=8, description="Super-resolution models only: output size / input size")
    file: str = Field(description="File name inside the manifest's folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    io: IOSignature
    license: str = Field("", max_length=200)
    source: str = Field("", max_length=2000, description="Where it came from: a URL, or 'file'")
    installed_at: str = ""

    @field_validator("file")
    @classmethod
    def _in_folder(cls, value: str) -> str:
        # A manifest (the shipped one, or one edited by hand) must not point removal or loading outside its folder.
        if value in ("", ".", "..") or any(c in value for c in "/\\\0"):
            raise ValueError("file must be a file name inside the manifest's folder")
        return value


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = FORMAT
    models: list[ModelEntry] = Field(default_factory=list)


def read(folder: Path) -> Manifest:
    """The folder's manifest; an absent one is empty. A damaged one raises ValueError (the caller says which)."""
    path = folder / MANIFEST
    try:
        data = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Manifest()
    return Manifest.model_validate_json(data)


def write(folder: Path, manifest: Manifest) -> None:
    """Atomic replace, so a reader never sees half a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)
