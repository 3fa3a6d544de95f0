"""The generation interface every image provider implements: preview (built in), OpenAI Images, ComfyUI, A1111.

A provider turns one `GenerateRequest` (text-to-image, or image-to-image on the previous stage's output) into one
PNG, for one `Account` (the project's validated configuration of that provider and its decrypted secrets). It
never touches the database: the ledger (`iat.ledger`) wraps every call, recording attempts, retries and cost, and
enforcing the provider's concurrency, timeout and the project's budget. So one `generate` is one attempt.

Vendor failures become typed errors here, at the boundary (`iat.errors`): `ProviderAuthFailed`,
`ProviderQuotaExhausted`, `ProviderBadRequest`, `ProviderUnavailable`, `ProviderTimeout`, `RateLimited` (with
`retry_after` seconds), or a plain `ProviderError` for a broken answer; each carries the vendor's HTTP status in
details["http_status"] when there was one. `iat.providers.http` maps HTTP answers and transport failures. A
cancelled call raises `Cancelled`, which is not a client-facing error: the runner marks the work cancelled.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping, Protocol, runtime_checkable
from urllib.parse import urlsplit

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
    units: float  # provider-specific unit (images, tokens, credits)
    cost_usd: float
    currency: str = "USD"


@dataclass(frozen=True)
class GenerateResult:
    image: bytes = field(repr=False)  # PNG
    seed: int
    model: str
    width: int
    height: int
    # What the call used and cost: "units", "cost_usd", "currency", and "source": "vendor" when the vendor
    # reported it (token usage, a credits header), "pricing" when it comes from the account's pricing. Any other
    # keys are the vendor's own report (token counts), kept in the cost event's meta.
    usage: dict[str, Any] = field(default_factory=dict)
    http_status: int | None = None  # the vendor's status of the answer that carried the image


# --- provider configuration (provider_accounts.config_json) ---


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials: store them as the provider's secrets")
    return value.rstrip("/")


class Pricing(BaseModel):
    """What a call costs when the vendor does not say: the estimate before a run, and the cost of local servers
    (their electricity and hardware, if the studio wants it counted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    usd_per_image: float = Field(0.0, ge=0, le=1000, description="Cost of one generated image")


class ProviderConfig(BaseModel):
    """provider_accounts.config_json, validated: what every provider has. Each provider subclasses it with its own
    defaults and fields; unknown keys are refused so a typo does not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str | None = Field(None, max_length=2048, description="Base URL of the provider's API")
    model: str | None = Field(None, min_length=1, max_length=256, description="Model, checkpoint or workflow")
    pricing: Pricing = Field(default_factory=Pricing)
    concurrency: int = Field(2, ge=1, le=64, description="Calls in flight at once to this provider")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="Limit of one attempt, in seconds")
    max_attempts: int = Field(3, ge=1, le=10, description="Attempts per call, retries included")
    backoff_s: float = Field(1.0, ge=0, le=60, description="First retry's base delay; doubles per attempt, jittered")
    max_backoff_s: float = Field(30.0, ge=0, le=600, description="Longest wait between attempts; a Retry-After "
                                                                 "longer than this fails the call")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return _http_url(value)


@dataclass(frozen=True)
class Account:
    """One project's provider: its validated config, whether it is enabled, and its decrypted secrets (which stay
    inside the process: never logged, never returned)."""

    code: str
    config: ProviderConfig
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    enabled: bool = True


class BaseProvider:
    """What most providers share: readiness from the account alone, estimates from the configured pricing."""

    code: ClassVar[str]
    config_model: ClassVar[type[ProviderConfig]] = ProviderConfig
    required_secrets: ClassVar[tuple[str, ...]] = ()  # names a call cannot go without (e.g. "api_key")
    optional_secrets: ClassVar[tuple[str, ...]] = ()  # names used when present (e.g. a local server's password)
    # What the provider does: "generate" (a run's provider) or e.g. "remove_background" (a paid engine's API).
    operations: ClassVar[tuple[str, ...]] = ("generate",)

    def default_account(self) -> Account:
        return Account(self.code, self.config_model())

    def status(self, account: Account) -> ProviderStatus:
        if not account.enabled:
            return ProviderStatus(False, f"provider {self.code} is disabled; enable it with providers.enable")
        missing = [n for n in self.required_secrets if not account.secrets.get(n)]
        if missing:
            return ProviderStatus(False, f"provider {self.code} needs the secret(s) {', '.join(missing)}; store "
                                         f"them with secrets.set")
        return ProviderStatus(True)

    def estimate(self, request: GenerateRequest, account: Account | None = None) -> CostEstimate:
        config = (account or self.default_account()).config
        return CostEstimate(units=1.0, cost_usd=config.pricing.usd_per_image)


@runtime_checkable
class ImageProvider(Protocol):
    code: ClassVar[str]
    config_model: ClassVar[type[ProviderConfig]]
    required_secrets: ClassVar[tuple[str, ...]]
    optional_secrets: ClassVar[tuple[str, ...]]

    def default_account(self) -> Account:
        """The account a project has before it configures this provider (defaults, no secrets)."""
        ...

    def status(self, account: Account) -> ProviderStatus:
        """Ready or why not, from the account alone. Makes no call at all."""
        ...

    def probe(self, account: Account, *, timeout: float) -> dict[str, Any]:
        """One free call showing the provider answers with these credentials (a model or system listing, never a
        generation); a little of what it said (version, models) comes back. Raises the typed errors."""
        ...

    def estimate(self, request: GenerateRequest, account: Account | None = None) -> CostEstimate:
        """What `generate` would cost, without calling anything."""
        ...

    def generate(self, request: GenerateRequest, account: Account | None = None, *,
                 cancel: threading.Event | None = None, timeout: float | None = None) -> GenerateResult:
        """One attempt. `timeout` bounds it (seconds); `cancel` stops it between its requests."""
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
