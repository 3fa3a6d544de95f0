"""peewee models, generated from the schema the migrations build, so each column is declared once.

Models bind to a database per thread (ThreadSafeDatabaseMetadata): `Store` binds them for the length of one read
or write, so many project databases can be used at once from different threads.
"""

from __future__ import annotations

from decimal import Decimal

import peewee
from playhouse.shortcuts import ThreadSafeDatabaseMetadata

from iat.db.fields import JSONObject, Timestamp, UUIDText
from iat.db.migrations import build_schema
from iat.db.schema import Column, Table


class BaseModel(peewee.Model):
    class Meta:
        model_metadata_class = ThreadSafeDatabaseMetadata


def _field(col: Column) -> peewee.Field:
    kw: dict = {"null": col.nullable, "primary_key": col.primary_key}
    if col.has_default:
        kw["default"] = dict if col.type == "json" else col.default
    if col.type.startswith("numeric"):
        precision, scale = (int(x) for x in col.type[len("numeric("):-1].split(","))
        if "default" in kw:
            kw["default"] = Decimal(str(kw["default"]))
        return peewee.DecimalField(max_digits=precision, decimal_places=scale, auto_round=True, **kw)
    factory = {"uuid": UUIDText, "text": peewee.TextField, "json": JSONObject, "timestamptz": Timestamp,
               "bool": peewee.BooleanField, "int": peewee.IntegerField}[col.type]
    return factory(**kw)


def _model(table: Table) -> type[BaseModel]:
    attrs: dict = {col.name: _field(col) for col in table.columns}
    attrs["Meta"] = type("Meta", (), {"table_name": table.name})
    class_name = "".join(part.title() for part in table.name.split("_"))
    return type(class_name, (BaseModel,), attrs)


_PROJECT_SCHEMA = build_schema("project")
_APP_SCHEMA = build_schema("app")
_BY_TABLE: dict[str, type[BaseModel]] = {}
for _table in [*_PROJECT_SCHEMA.tables.values(), *_APP_SCHEMA.tables.values()]:
    _BY_TABLE.setdefault(_table.name, _model(_table))

PROJECT_MODELS = tuple(_BY_TABLE[name] for name in _PROJECT_SCHEMA.tables)
APP_MODELS = tuple(_BY_TABLE[name] for name in _APP_SCHEMA.tables)

AppUser = _BY_TABLE["app_users"]
Project = _BY_TABLE["projects"]
ProjectStorage = _BY_TABLE["project_storage"]
ProviderAccount = _BY_TABLE["provider_accounts"]
ProjectApiSecret = _BY_TABLE["project_api_secrets"]
StyleGuide = _BY_TABLE["style_guides"]
Character = _BY_TABLE["characters"]
ReferenceSet = _BY_TABLE["reference_sets"]
ReferenceItem = _BY_TABLE["reference_items"]
Asset = _BY_TABLE["assets"]
AssetLink = _BY_TABLE["asset_links"]
Run = _BY_TABLE["runs"]
RunJob = _BY_TABLE["run_jobs"]
RunCandidate = _BY_TABLE["run_candidates"]
QualityReport = _BY_TABLE["quality_reports"]
PromptTemplate = _BY_TABLE["prompt_templates"]
CostEvent = _BY_TABLE["cost_events"]
ProviderCall = _BY_TABLE["provider_calls"]
ProjectExport = _BY_TABLE["project_exports"]
AuditEvent = _BY_TABLE["audit_events"]
ChatSession = _BY_TABLE["chat_sessions"]
ChatMessage = _BY_TABLE["chat_messages"]
AgentInstruction = _BY_TABLE["agent_instructions"]
AgentInstructionEvent = _BY_TABLE["agent_instruction_events"]
VoiceRequest = _BY_TABLE["voice_requests"]
ProjectIndex = _BY_TABLE["project_index"]
AppAuditEvent = _BY_TABLE["app_audit_events"]
AgentDispatch = _BY_TABLE["agent_dispatches"]
