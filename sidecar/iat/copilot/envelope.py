"""The agent instruction contract (SPEC 9.2): the envelope sent to an agent, its answer, and what each instruction
type takes.

An instruction is stored as `agent_instructions` (type, status, priority, confirmation) plus `payload_json`, which
holds the four parts of the envelope a proposer writes: objective, constraints, inputs, execution. `inputs` and
`execution` are validated per type here (the same models whoever proposes: the offline parser, the LLM's tool
calls, a client calling agent.instructions.create), so the built-in agent and an external one get the same shape.
schema/agent_instruction.schema.json is generated from these models (`iat-sidecar schema`).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, model_validator

from iat.errors import InvalidParams
from iat.pipeline.shots import MAX_SHOTS, NO_CONTROL, Shot

InstructionType = Literal["pipeline_run", "asset_edit", "qa_check", "storage_sync", "custom"]
INSTRUCTION_TYPES: tuple[str, ...] = ("pipeline_run", "asset_edit", "qa_check", "storage_sync", "custom")
Status = Literal["draft", "queued", "running", "done", "failed", "canceled"]
FINAL_STATUSES = frozenset({"done", "failed", "canceled"})

TimeOfDay = Literal["dawn", "day", "dusk", "night"]
Weather = Literal["clear", "rain", "snow", "fog"]
JobKey = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Objective = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=NO_CONTROL)]
Code = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
RelPath = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^/\\\x00][^\x00]*$")]


class _Part(BaseModel):
    # Unknown keys are refused: a misspelt option must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", strict=False)


# --- pipeline_run: runs.start ---


class PipelineRunInputs(_Part):
    """Which shots to draw: new shots, or shots of earlier runs by job key (the latest run holding each key); the
    time of day and weather, when given, replace every shot's own."""

    shots: list[Shot] | None = Field(None, min_length=1, max_length=MAX_SHOTS)
    shot_keys: list[JobKey] | None = Field(None, min_length=1, max_length=MAX_SHOTS,
                                           json_schema_extra={"uniqueItems": True})
    time_of_day: TimeOfDay | None = None
    weather: Weather | None = None

    @model_validator(mode="after")
    def _one_list(self) -> PipelineRunInputs:
        if (self.shots is None) == (self.shot_keys is None):
            raise ValueError("give exactly one of shots and shot_keys")
        if self.shot_keys is not None and len(set(self.shot_keys)) != len(self.shot_keys):
            raise ValueError("a shot key is named twice")
        return self


class PipelineRunExecution(_Part):
    """runs.start's options; left out: the runs.start defaults."""

    provider: Code | None = None
    candidates: int | None = Field(None, ge=1, le=16)
    stages: list[Literal["style_lock", "light_time", "weather_effects", "advanced"]] | None = Field(
        None, min_length=1, max_length=4)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    upscale_factor: Literal[2, 3, 4] | None = None
    refine: bool | None = None
    color_correct: bool | None = None


# --- asset_edit: images.remove_background / images.upscale / images.color_correct ---


class AssetEditInputs(_Part):
    asset_id: uuid.UUID
    operation: Literal["remove_background", "upscale", "color_correct"]
    factor: Literal[2, 3, 4] | None = Field(None, description="upscale: required")

    @model_validator(mode="after")
    def _factor(self) -> AssetEditInputs:
        if (self.operation == "upscale") != (self.factor is not None):
            raise ValueError("factor is required for upscale and only for it")
        return self


class AssetEditExecution(_Part):
    engines: list[Code] | None = Field(None, min_length=1, max_length=8, description="remove_background: engine "
                                                                                      "order")
    engine: str | None = Field(None, min_length=1, max_length=64, description="upscale: auto or an engine code")
    refine: bool | None = None
    style_guide_id: uuid.UUID | None = None


# --- qa_check: quality.check on each asset ---


class QaCheckInputs(_Part):
    """A run's final images (run_id), or the given image assets."""

    run_id: uuid.UUID | None = None
    asset_ids: list[uuid.UUID] | None = Field(None, min_length=1, max_length=500)

    @model_validator(mode="after")
    def _one(self) -> QaCheckInputs:
        if (self.run_id is None) == (self.asset_ids is None):
            raise ValueError("give exactly one of run_id and asset_ids")
        return self


class QaCheckExecution(_Part):
    style_guide_id: uuid.UUID | None = None
    require_transparency: bool | None = None
    size_check: Literal["none", "aspect", "size"] | None = None


# --- storage_sync: storage.sync ---


class StorageSyncInputs(_Part):
    direction: Literal["push", "pull"] = "push"
    paths: list[RelPath] | None = Field(None, min_length=1, max_length=1000)
    delete_remote: bool = Field(False, description="Also delete remote objects with no local file (destructive: "
                                                   "needs confirmation)")


class StorageSyncExecution(_Part):
    dry_run: bool | None = None


# --- custom: the project-level actions with no type of their own ---


class ExportProject(_Part):
    action: Literal["export_project"]
    format: Literal["tar.gz", "zip", "folder"] = "tar.gz"


class DeleteProject(_Part):
    action: Literal["delete_project"]


class DeleteAsset(_Part):
    action: Literal["delete_asset"]
    asset_id: uuid.UUID


class SelectCandidate(_Part):
    """Makes a candidate its shot's final (replacing the final the shot has: destructive when it has one)."""

    action: Literal["select_candidate"]
    run_id: uuid.UUID
    job_key: JobKey
    candidate_index: int = Field(ge=0, le=15)


CustomInputs = Annotated[Union[ExportProject, DeleteProject, DeleteAsset, SelectCandidate],
                         Field(discriminator="action")]


class NoExecution(_Part):
    pass


PARTS: dict[str, tuple[Any, type[BaseModel]]] = {
    "pipeline_run": (PipelineRunInputs, PipelineRunExecution),
    "asset_edit": (AssetEditInputs, AssetEditExecution),
    "qa_check": (QaCheckInputs, QaCheckExecution),
    "storage_sync": (StorageSyncInputs, StorageSyncExecution),
    "custom": (CustomInputs, NoExecution),
}


class Constraints(_Part):
    max_cost_usd: float | None = Field(None, ge=0, le=1_000_000, description="Refuse work estimated above this")
    deadline_s: float | None = Field(None, gt=0, le=86_400, description="Fail the instruction when it runs "
                                                                        "longer than this")


class Payload(BaseModel):
    """agent_instructions.payload_json: what the proposer wrote, normalised."""

    model_config = ConfigDict(extra="forbid")

    objective: Objective
    constraints: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any]
    execution: dict[str, Any] = Field(default_factory=dict)


_ADAPTERS: dict[str, TypeAdapter] = {}


def _adapter(model: Any) -> TypeAdapter:
    key = repr(model)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(model)
    return _ADAPTERS[key]


def validate_payload(instruction_type: str, objective: str, inputs: dict, execution: dict | None = None,
                     constraints: dict | None = None) -> dict:
    """The payload normalised (defaults filled, ids as text), or invalid_params listing every problem with its
    place (inputs.shot_keys, execution.candidates, ...)."""
    if instruction_type not in PARTS:
        raise InvalidParams(f"unknown instruction type {instruction_type!r}",
                            details={"errors": [{"loc": "instruction_type", "msg": "unknown instruction type"}]})
    inputs_model, execution_model = PARTS[instruction_type]
    problems: list[dict] = []
    out: dict[str, Any] = {}
    for name, model, value in (("objective", Objective, objective), ("inputs", inputs_model, inputs),
                               ("execution", execution_model, execution or {}),
                               ("constraints", Constraints, constraints or {})):
        try:
            checked = _adapter(model).validate_python(value)
        except ValidationError as exc:
            problems += [{"loc": ".".join([name, *(str(p) for p in e["loc"])]), "msg": e["msg"]} for e in exc.errors()]
            continue
        out[name] = (_adapter(model).dump_python(checked, mode="json", exclude_none=True)
                     if name != "objective" else checked)
    if problems:
        raise InvalidParams(f"the {instruction_type} instruction is not valid: {problems[0]['loc']}: "
                            f"{problems[0]['msg']}", details={"errors": problems})
    return Payload(**out).model_dump(mode="json")


# --- the envelope and the agent's answer (SPEC 9.2) ---


class Callback(BaseModel):
    """Where an agent reports: its status answers (the response contract) and its log events, each POSTed with
    `Authorization: Bearer <token>`; the token opens this instruction's callbacks only."""

    model_config = ConfigDict(extra="forbid")

    status_url: str | None = None
    events_url: str | None = None
    token: str | None = Field(None, description="Present only in the envelope POSTed to an external agent")


class InstructionEnvelope(BaseModel):
    """What an agent receives, exactly the ten fields of SPEC 9.2."""

    model_config = ConfigDict(extra="forbid")

    instruction_id: uuid.UUID
    project_slug: str
    instruction_type: InstructionType
    objective: str
    constraints: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any]
    execution: dict[str, Any] = Field(default_factory=dict)
    confirmation_required: bool
    requested_by: str = Field(description="The requesting user's username")
    callback: Callback


class AgentResponse(BaseModel):
    """The minimum answer an agent gives, to the dispatch POST and on its status callback."""

    model_config = ConfigDict(extra="forbid")

    instruction_id: uuid.UUID
    status: Literal["accepted", "rejected", "running", "done", "failed"]
    message: str = Field(max_length=10_000)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


def json_schema() -> dict:
    """schema/agent_instruction.schema.json: the envelope, the answer, and the inputs and execution of each type."""
    defs: dict[str, Any] = {}
    for kind, (inputs, execution) in PARTS.items():
        defs[f"{kind}.inputs"] = _adapter(inputs).json_schema(ref_template="#/$defs/{model}")
        defs[f"{kind}.execution"] = _adapter(execution).json_schema(ref_template="#/$defs/{model}")
    defs["constraints"] = Constraints.model_json_schema(ref_template="#/$defs/{model}")
    envelope = InstructionEnvelope.model_json_schema(ref_template="#/$defs/{model}")
    response = AgentResponse.model_json_schema(ref_template="#/$defs/{model}")
    for part in (*defs.values(), envelope, response):  # hoist nested definitions to the top
        defs.update(part.pop("$defs", {}))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://iat-toolkit.local/schema/agent_instruction.schema.json",
            "title": "IAT agent instruction (SPEC 9.2)",
            "description": "envelope: what an agent receives; response: its answer; <type>.inputs and "
                           "<type>.execution: what each instruction type takes",
            "type": "object", "properties": {"envelope": envelope, "response": response},
            "$defs": defs}
