"""Project chain 0006: how each agent instruction is being carried out (an extension table, schema/README.md).

One row per instruction that left the queue: which agent took it (`builtin` or `external`), the process that took
it (`worker_id`, host/pid/random, so a restart tells its own interrupted work from another live sidecar's), the
executor's progress (`state_json`: the run it started, the steps done, so a restarted sidecar can follow a run
instead of starting it again), and for an external agent the sha256 of the per-instruction callback token (the
token itself is only ever in the envelope POSTed to that agent) and the last status the agent reported."""

from iat.db.schema import Column, Table, json_obj, text, ts

NAME = "agent_dispatch"

OPERATIONS = (
    Table("agent_dispatches", (
        Column("instruction_id", "uuid", primary_key=True, references="agent_instructions", on_delete="CASCADE"),
        text("agent", choices=("builtin", "external")),
        text("worker_id"),
        text("token_sha256", nullable=True),
        text("remote_status", nullable=True),
        json_obj("state_json"),
        ts("created_at"),
        ts("updated_at"),
    )),
)
