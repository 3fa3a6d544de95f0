"""Project chain 0004: claims on run jobs (an extension table, schema/README.md), so several runners (threads,
processes, workstations sharing one PostgreSQL project) drain one run's queue with each job worked on by one of
them at a time.

A runner claims a job by writing its worker id and a lease deadline here (under a row lock taken with SKIP LOCKED
on PostgreSQL, through the single writer on SQLite), renews the lease while it works, and drops the row when the
job is finished. A claim whose lease has run out (its runner died) can be taken over; candidates already committed
stay (unique (job_id, candidate_index)), so the job's work is done exactly once.

`purpose` is `job` for work on an unfinished job; once every job of a run is finished, the runner that finishes the
run (contact sheet, results, status) holds a `finish` claim on the run's first job, so a run is finished by one
runner even when several find it done at once (iat.pipeline.claims)."""

from iat.db.schema import Column, Index, Table, created, ref, text, ts

NAME = "job_claims"

OPERATIONS = (
    Table("run_job_claims", (
        Column("job_id", "uuid", primary_key=True, references="run_jobs", on_delete="CASCADE"),
        ref("run_id", "runs", on_delete="CASCADE"),
        text("worker_id"),
        text("purpose", default="job", choices=("job", "finish")),
        ts("expires_at"),
        created(),
    )),
    Index("ix_run_job_claims_run", "run_job_claims", ("run_id", "expires_at")),
)
