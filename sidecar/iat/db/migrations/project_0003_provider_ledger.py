"""Project chain 0003: the provider call ledger (an extension table, schema/README.md).

`provider_calls` holds every attempt of every outbound provider call: which call it belongs to (`call_id`, shared
by its retries), the attempt number, the outcome, the vendor's HTTP status, the typed error and the latency. A
successful call's cost goes to the spec's `cost_events` (once per call, not per attempt); the cost event's
meta_json names its `call_id`. Indexes serve the ledger's reads: a project's attempts newest first (keyset pages),
a run's attempts, and a run's or a window's costs."""

from iat.db.schema import Index, Table, created, integer, json_obj, ref, text, uuid_pk

NAME = "provider_ledger"

OPERATIONS = (
    Table("provider_calls", (
        uuid_pk(),
        ref("project_id", "projects"),
        ref("run_id", "runs", nullable=True),
        text("call_id"),
        text("provider_code"),
        text("operation_code"),
        integer("attempt"),
        text("outcome", choices=("ok", "error", "canceled")),
        integer("http_status", nullable=True),
        text("error_code", nullable=True),
        text("error_message", nullable=True),
        integer("latency_ms"),
        json_obj("meta_json"),
        created(),
    )),
    Index("ix_provider_calls_project_created", "provider_calls", ("project_id", "created_at DESC", "id DESC")),
    Index("ix_provider_calls_run", "provider_calls", ("run_id", "created_at ASC")),
    Index("ix_cost_events_run", "cost_events", ("run_id", "created_at ASC")),
)
