"""What an assistant knows of the project when it reads a request: the vocabulary it resolves words against.

Built fresh for each message from the databases (small reads: recent runs, characters, instructions), so the
parser and the LLM's system prompt name the same shots, characters and instructions the user sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from iat.db.models import AgentInstruction, Asset, Character, Project, Run

RECENT_RUNS = 20  # shots are looked for in this many latest runs
RECENT_INSTRUCTIONS = 20
RECENT_ASSETS = 50


@dataclass(frozen=True)
class Context:
    slug: str
    project_id: str
    project_name: str
    other_projects: dict[str, str] = field(default_factory=dict)  # the app's other projects: slug -> name
    shots: dict[str, dict] = field(default_factory=dict)  # job_key -> its shot (Shot fields), from the latest run
    shot_runs: dict[str, str] = field(default_factory=dict)  # job_key -> the latest run holding it
    characters: dict[str, str] = field(default_factory=dict)  # code -> name
    runs: tuple[dict, ...] = ()  # latest runs first: id, status, run_mode, created_at
    assets: tuple[dict, ...] = ()  # latest assets first: id, kind, created_at
    instructions: tuple[dict, ...] = ()  # latest first: id, instruction_type, status, objective, created_at

    @property
    def last_run_id(self) -> str | None:
        real = [r for r in self.runs if r["run_mode"] == "run"]
        return real[0]["id"] if real else None


def build(app, handle) -> Context:
    def read(pid: str) -> Context:
        project = Project.select().where(Project.id == pid).dicts().first()
        runs = list(Run.select(Run.id, Run.status, Run.run_mode, Run.created_at, Run.settings_snapshot_json)
                    .where(Run.project_id == pid).order_by(Run.created_at.desc(), Run.id.desc())
                    .limit(RECENT_RUNS).dicts())
        shots: dict[str, dict] = {}
        shot_runs: dict[str, str] = {}
        for run in runs:
            for job in (run["settings_snapshot_json"] or {}).get("jobs", []):
                key = job.get("job_key")
                if key and key not in shots and isinstance(job.get("shot"), dict):
                    shots[key] = job["shot"]
                    shot_runs[key] = str(run["id"])
        characters = {c["code"]: c["name"] for c in Character.select(Character.code, Character.name)
                      .where(Character.project_id == pid).dicts()}
        assets = tuple(Asset.select(Asset.id, Asset.kind, Asset.created_at).where(Asset.project_id == pid)
                       .order_by(Asset.created_at.desc(), Asset.id.desc()).limit(RECENT_ASSETS).dicts())
        instructions = tuple(
            AgentInstruction.select(AgentInstruction.id, AgentInstruction.instruction_type, AgentInstruction.status,
                                    AgentInstruction.payload_json, AgentInstruction.created_at)
            .where(AgentInstruction.project_id == pid)
            .order_by(AgentInstruction.created_at.desc(), AgentInstruction.id.desc())
            .limit(RECENT_INSTRUCTIONS).dicts())
        return Context(
            slug=handle.slug, project_id=pid, project_name=project["name"] if project else handle.slug,
            shots=shots, shot_runs=shot_runs, characters=characters,
            runs=tuple({k: (str(r[k]) if k == "id" else r[k]) for k in ("id", "status", "run_mode", "created_at")}
                       for r in runs),
            assets=tuple({**a, "id": str(a["id"])} for a in assets),
            instructions=tuple({"id": str(i["id"]), "instruction_type": i["instruction_type"], "status": i["status"],
                                "objective": (i["payload_json"] or {}).get("objective", ""),
                                "created_at": i["created_at"]} for i in instructions))

    ctx = handle.store.read(read, handle.id)
    others = {e["slug"]: e.get("name") or e["slug"] for e in app.projects.list(None) if e["slug"] != handle.slug}
    return Context(**{**ctx.__dict__, "other_projects": others})
