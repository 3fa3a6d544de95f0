"""Image engines: background removal and upscaling behind one small interface (`iat.engines.base`).

`default_engines()` is what an App registers in its engine registry (`iat.plugins.LazyRegistry`); each entry is
imported on first use. Later engines (rembg on ONNX, remove.bg, PhotoRoom, an ONNX upscaler) add their entries
here.
"""

from __future__ import annotations


def default_engines() -> dict[str, str]:
    """Engine code -> "module:Class"."""
    return {
        "key": "iat.engines.key:KeyEngine",
        "lanczos": "iat.engines.lanczos:LanczosEngine",
        "onnx_sr": "iat.engines.onnx_upscale:OnnxUpscaleEngine",
        "removebg": "iat.engines.remote:RemoveBgEngine",
        "photoroom": "iat.engines.remote:PhotoRoomEngine",
        "rembg": "iat.engines.rembg_local:RembgEngine",
    }
