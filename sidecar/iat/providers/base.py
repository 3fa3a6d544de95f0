"""The generation interface every image provider implements: preview (built in), OpenAI Images, ComfyUI, A1111.

A provider turns one `GenerateRequest` (text-to-image, or image-to-image on the previous stage's output) into one
PNG. It never touches the database or the ledger: the runner records calls, costs and retries around it. Vendor
failures become typed errors here, at the boundary: `ProviderError` for anything the provider refused or broke
on, `RateLimited` (with `retry_after` seconds) when it asks to come back later. A cancelled call raises
`Cancelled`, which is not a client-facing error: the runner catches it and marks the work cancelled.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping, Protocol, runtime_checkable

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from iat.cancel import Cancelled, check_cancel  # noqa: F401 - part of the provider interface
from iat.errors import InvalidParams

Mode = Literal["text2img", "img2img"]
Stage = Literal["style_lock", "light_time", "weather_effects", "advanced"]
TimeOfDay = Literal["dawn", "day", "dusk", "night"]
Weather = Literal["clear", "rain", "snow", "fog"]

# The pipeline's stage order: each stage after the first works on the output of the one before it.
STAGES: tuple[str, ...] = ("style_lock", "light_time", "weather_effects", "advanced")
TIMES_OF_DAY: tuple[str, ...] = ("dawn", "day", "dusk", "night")
WEATHERS: tuple[str, ...] = ("clear", "rain", "snow", "fog")

MAX_SIDE = 4096
MAX_SEED = 2**63 - 1  # fits SQLite's signed 64-bit integer


def normalize_hex(value: str) -> str:
    """'#ABC' or '#aabbcc' -> '#aabbcc'; anything else is a ValueError."""
    text = value.strip().lower()
    if text.startswith("#"):
        text = text[1:]
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    if len(text) != 6 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"not a hex colour: {value!r}")
    return "#" + text


def hex_to_rgb(value: str) -> tuple[int, int, int]:
    text = normalize_hex(value)
    return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SceneCharacter(_Frozen):
    """One character of the shot, as the style guide and the character sheet describe it."""

    code: str = Field(min_length=1, max_length=64)
    name: str = ""
    palette: tuple[str, ...] = ()
    appearance: str = ""
    outfit: str = ""

    @field_validator("palette")
    @classmethod
    def _hex_palette(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalize_hex(v) for v in value)


class Scene(_Frozen):
    """The structured shot: what an offline renderer draws, and what prompt templates are rendered from."""

    text: str = Field("", validation_alias=AliasChoices("text", "scene"))
    palette: tuple[str, ...] = ()
    characters: tuple[SceneCharacter, ...] = ()
    time_of_day: TimeOfDay | None = None
    weather: Weather | None = None

    @field_validator("palette")
    @classmethod
    def _hex_palette(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalize_hex(v) for v in value)


class ReferenceImage(_Frozen):
    data: bytes = Field(repr=False)
    weight: float = Field(1.0, ge=0.0, le=10.0)


class GenerateRequest(_Frozen):
    """One call to a provider. `init_image` is the previous stage's PNG for img2img."""

    mode: Mode
    stage: Stage
    prompt: str = ""
    negative_prompt: str = ""
    width: int = Field(ge=16, le=MAX_SIDE)
    height: int = Field(ge=16, le=MAX_SIDE)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)  # None: the provider picks one and reports it
    init_image: bytes | None = Field(None, repr=False)
    reference_images: tuple[ReferenceImage, ...] = ()
    params: dict[str, Any] = Field(default_factory=dict)
    scene: Scene = Field(default_factory=Scene)

    @model_validator(mode="after")
    def _img2img_needs_input(self) -> "GenerateRequest":
        if self.mode == "img2img" and not self.init_image:
            raise ValueError("img2img needs init_image (the previous stage's output)")
        return self

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> "GenerateRequest":
        """Builds a request from plain data; bad data is invalid_params listing every problem."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]
            raise InvalidParams("invalid generate request", details={"errors": problems}) from None


@dataclass(frozen=True)
class ProviderStatus:
    ready: bool
    reason: str | None = None  # why not ready, in words a user can act on


@dataclass(frozen=True)
class CostEstimate:
    units: float  # provider-specific unit (images, megapixel-steps, credits)
    cost_usd: float
    currency: str = "USD"


@dataclass(frozen=True)
class GenerateResult:
    image: bytes = field(repr=False)  # PNG
    seed: int
    model: str
    width: int
    height: int
    usage: dict[str, Any] = field(default_factory=dict)  # at least "units" and "cost_usd"


@runtime_checkable
class ImageProvider(Protocol):
    code: ClassVar[str]

    def status(self, account: dict | None, secrets: Mapping[str, str] | None) -> ProviderStatus:
        """Ready or why not. Spends nothing and makes no paid call."""
        ...

    def estimate(self, request: GenerateRequest) -> CostEstimate:
        """What `generate` would cost, without calling anything."""
        ...

    def generate(self, request: GenerateRequest, *, cancel: threading.Event | None = None) -> GenerateResult:
        ...


def encode_png(image: Any, *, text: Mapping[str, str] | None = None, compress_level: int = 6) -> bytes:
    """A PIL image as PNG bytes that depend on the pixels (and `text`) only: no time or software chunks, fixed
    compression, text chunks in sorted key order, so the same image always encodes to the same bytes."""
    from PIL import PngImagePlugin

    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for key in sorted(text):
            info.add_itxt(key, str(text[key]))
    if image.info:  # a decoded input's ICC profile or dpi would otherwise ride along into the bytes
        image = image.copy()
        image.info = {}
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level, optimize=False, pnginfo=info)
    return buf.getvalue()
