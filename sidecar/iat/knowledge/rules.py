"""The rules of a style guide (`style_guides.rules_json`, SPEC 5.2): what a run of the project must look like.

`StyleRules` is the one documented shape of `rules_json`. Every field has a default, so `{}` is a complete,
usable guide; a stored guide always holds the full normalised form (defaults filled in, colours lowercase), so
what a run used is in the row itself and a later change of a default does not change an old guide's meaning.
Unknown fields are refused: a typo must not be stored as a silently ignored rule.

Constraints are written into the JSON Schema itself (patterns, bounds, multipleOf), so the API documentation
says exactly which values are accepted. The one exception is `size.aspect`: it is derived from width and height,
appears in results, and is accepted back on input only when it matches them (a guide read with `get` can be sent
back with `update` unchanged).

Colour scale: `max_chroma` is OKLab chroma, C = sqrt(a^2 + b^2) (Ottosson 2020), where 0 is grey and the most
saturated sRGB colours reach about 0.32 (pure blue 0.31, pure red 0.26, pure green 0.29); muted illustration
palettes sit around 0.05..0.15. The bound 0.4 covers the whole sRGB gamut.
"""

from __future__ import annotations

from math import gcd
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, computed_field, model_validator

STAGES = ("style_lock", "light_time", "weather_effects", "advanced")
Stage = Literal["style_lock", "light_time", "weather_effects", "advanced"]
TIMES_OF_DAY = ("dawn", "day", "dusk", "night")
TimeOfDay = Literal["dawn", "day", "dusk", "night"]

HEX_PATTERN = r"^#[0-9a-fA-F]{6}$"
HexColor = Annotated[
    str,
    StringConstraints(pattern=HEX_PATTERN),
    AfterValidator(str.lower),
    Field(description="An sRGB colour as #rrggbb (stored lowercase)", examples=["#3b5b7a"]),
]


def json_integer(value: Any) -> Any:
    # JSON Schema counts 3056.0 as an integer; a string or a boolean is not one (the models are strict).
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A bounded one states its bounds before the validator, as Kelvin does: Annotated[JsonInt, Field(ge=...)] | None
# would put pydantic's own names (ge, le) into the JSON Schema instead of minimum and maximum.
JsonInt = Annotated[int, BeforeValidator(json_integer)]
Kelvin = Annotated[int, Field(ge=1000, le=40000), BeforeValidator(json_integer)]

# A provider parameter: a JSON scalar (steps, cfg, strength, sampler name, a flag).
ParamValue = int | float | str | bool


class _Rules(BaseModel):
    # Strict: a number must be a JSON number and a flag a JSON boolean, as the schema says ("5" is not 5).
    model_config = ConfigDict(extra="forbid", defer_build=True, strict=True)


class Lighting(_Rules):
    """How light looks at one time of day: words for the prompt, numbers for rendering and colour correction."""

    description: str = Field(max_length=1000, description="Words for the prompt's {lighting} placeholder")
    color_temperature_k: Kelvin | None = Field(
        None, description="Correlated colour temperature of the key light, kelvin (daylight ~5600)")
    tint: HexColor | None = Field(None, description="Colour the light casts over the scene, #rrggbb")


class LightingByTime(_Rules):
    """Lighting for each time of day a shot may ask for."""

    dawn: Lighting = Field(default_factory=lambda: Lighting(
        description="low warm sunrise light, long soft shadows, pale pink and orange sky",
        color_temperature_k=3500, tint="#ffc9a3"))
    day: Lighting = Field(default_factory=lambda: Lighting(
        description="bright neutral daylight, crisp shadows, clear local colours",
        color_temperature_k=5600, tint="#fff8ee"))
    dusk: Lighting = Field(default_factory=lambda: Lighting(
        description="golden hour turning blue, warm rim light, long shadows",
        color_temperature_k=3000, tint="#ff9f66"))
    night: Lighting = Field(default_factory=lambda: Lighting(
        description="cool moonlight, deep shadows, a few warm practical lights",
        color_temperature_k=8000, tint="#5a6ea8"))

    def for_time(self, time_of_day: str) -> Lighting:
        return getattr(self, time_of_day)


class Size(_Rules):
    """The output size every candidate is generated at; its ratio is the aspect QA checks outputs against."""

    width: JsonInt = Field(768, ge=64, le=4096, multiple_of=8, description="Pixels, a multiple of 8 (64..4096)")
    height: JsonInt = Field(512, ge=64, le=4096, multiple_of=8, description="Pixels, a multiple of 8 (64..4096)")

    @model_validator(mode="before")
    @classmethod
    def _derived_aspect(cls, data: Any) -> Any:
        # `aspect` is an output; taken back only when it says what width and height say.
        if isinstance(data, dict) and "aspect" in data:
            data = dict(data)
            given = data.pop("aspect")
            width, height = json_integer(data.get("width", 768)), json_integer(data.get("height", 512))
            if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
                if given != _ratio(width, height):
                    raise ValueError(f"aspect {given!r} does not match {width}x{height} "
                                     f"({_ratio(width, height)}); aspect is derived from width and height")
        return data

    @computed_field(description="width:height in lowest terms, derived (e.g. 3:2)")
    @property
    def aspect(self) -> str:
        return _ratio(self.width, self.height)

    @property
    def aspect_ratio(self) -> float:
        return self.width / self.height


def _ratio(width: int, height: int) -> str:
    d = gcd(width, height)
    return f"{width // d}:{height // d}"


ProviderParams = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], ParamValue],
    Field(max_length=64, description="Provider parameters (e.g. steps, cfg, strength); a provider ignores "
                                     "the ones it does not know"),
]


class StageDefaults(_Rules):
    """Default provider parameters of each stage; a run's own parameters override them key by key."""

    style_lock: ProviderParams = Field(default_factory=lambda: {"steps": 30, "cfg": 7.0, "strength": 1.0})
    light_time: ProviderParams = Field(default_factory=lambda: {"steps": 20, "cfg": 6.0, "strength": 0.45})
    weather_effects: ProviderParams = Field(default_factory=lambda: {"steps": 20, "cfg": 6.0, "strength": 0.35})
    advanced: ProviderParams = Field(default_factory=lambda: {"steps": 20, "cfg": 5.0, "strength": 0.25})

    def for_stage(self, stage: str) -> dict:
        return dict(getattr(self, stage))


def _qa_thresholds() -> type[BaseModel]:
    from iat.imaging.quality import QAThresholds

    return QAThresholds


class _QAThresholdsOnFirstUse:
    """Stands for iat.imaging.quality.QAThresholds, resolved when the schema is built: that module loads numpy and
    Pillow, which the sidecar's start (the command registry imports this module) should not pay for."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        return handler.generate_schema(_qa_thresholds())


# The type of StyleRules.qa: a QAThresholds (iat.imaging.quality), the one definition of the QA guard's thresholds.
QAThresholdsField = Annotated[Any, _QAThresholdsOnFirstUse]


DEFAULT_PALETTE = ("#2e3440", "#4c566a", "#d8dee9", "#5e81ac", "#88c0d0", "#a3be8c", "#ebcb8b", "#bf616a")


class StyleRules(_Rules):
    """The style lock of a project: palette, colour limits, light, size, negative prompt, stage parameters, QA."""

    palette: list[HexColor] = Field(
        default_factory=lambda: list(DEFAULT_PALETTE), max_length=64,
        description="The colours of the style, #rrggbb; colour correction pulls outputs toward them and QA "
                    "measures the distance to them (an empty list turns both off)")
    max_chroma: float = Field(
        0.2, ge=0.0, le=0.4,
        description="Highest OKLab chroma sqrt(a^2+b^2) allowed in outputs (0 grey .. ~0.32 most saturated sRGB); "
                    "colour correction clamps to it and QA warns above it")
    lighting: LightingByTime = Field(default_factory=LightingByTime, description="Light per time of day")
    negative_prompt: str = Field(
        "blurry, low quality, jpeg artifacts, watermark, signature, text, extra limbs, deformed hands",
        max_length=4000, description="What generation must avoid; passed to providers that take a negative prompt")
    size: Size = Field(default_factory=Size, description="Output size of every candidate")
    stage_defaults: StageDefaults = Field(default_factory=StageDefaults,
                                          description="Default provider parameters per stage")
    qa: QAThresholdsField = Field(
        default_factory=lambda: _qa_thresholds()(),
        description="Thresholds of the QA guard (iat.imaging.quality); checks made with this guide use the guide's "
                    "max_chroma, qa.max_chroma is only the limit of checks made without a guide")


def parse_rules(rules_json: dict | None) -> StyleRules:
    """A stored or given rules_json as StyleRules (raises pydantic's ValidationError when it is not valid)."""
    return StyleRules.model_validate(rules_json or {})


def normalise(rules: StyleRules) -> dict:
    """The form stored in rules_json: every field, defaults filled in, colours lowercase."""
    return rules.model_dump(mode="json")
