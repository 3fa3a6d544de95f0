"""The copilot's guardrails (SPEC 2.6.6), applied to every instruction whoever proposes it.

- Project scope: every asset and run an instruction names must be one of its project's (SPEC 7.2); one that is not
  is `guardrail_denied`, whether it belongs to another project or to none.
- Allowed actions: the project's `settings_json.copilot.allowed_instruction_types` (default: every type) and, for
  `custom`, `settings_json.copilot.allowed_custom_actions` (default: every action).
- Confirmation: destructive work (deleting a project or an asset, replacing a shot's final, deleting remote objects
  in a sync, a run estimated over what is left of the budget) is created with requires_confirmation, so it cannot
  leave draft until a user confirms. `confirmation_reasons` says why, in words shown to the user.
"""

from __future__ import annotations

from iat.copilot.envelope import INSTRUCTION_TYPES
from iat.db.models import Asset, Project, Run, RunJob
from iat.errors import GuardrailDenied

CUSTOM_ACTIONS = ("export_project", "delete_project", "delete_asset", "select_candidate")


def _settings(project_id: str) -> dict:
    row = Project.select(Project.settings_json).where(Project.id == project_id).dicts().first()
    return ((row or {}).get("settings_json") or {}).get("copilot") or {}


def check_allowed(project_id: str, instruction_type: str, inputs: dict) -> None:
    """Inside a read: refuses a type (or custom action) the project does not allow."""
    settings = _settings(project_id)
    types = settings.get("allowed_instruction_types", INSTRUCTION_TYPES)
    if instruction_type not in types:
        raise GuardrailDenied(f"this project does not allow {instruction_type} instructions",
                              details={"instruction_type": instruction_type, "allowed": list(types)})
    if instruction_type == "custom":
        actions = settings.get("allowed_custom_actions", CUSTOM_ACTIONS)
        if inputs["action"] not in actions:
            raise GuardrailDenied(f"this project does not allow the {inputs['action']} action",
                                  details={"action": inputs["action"], "allowed": list(actions)})


def _named_ids(instruction_type: str, inputs: dict) -> tuple[list[str], list[str]]:
    assets = [inputs["asset_id"]] if inputs.get("asset_id") else []
    assets += list(inputs.get("asset_ids") or [])
    runs = [inputs["run_id"]] if inputs.get("run_id") else []
    return assets, runs


def check_scope(project_id: str, instruction_type: str, inputs: dict) -> None:
    """Inside a read: every asset and run named is the project's."""
    assets, runs = _named_ids(instruction_type, inputs)
    if assets:
        found = {str(a) for (a,) in Asset.select(Asset.id).where(Asset.project_id == project_id,
                                                                   Asset.id.in_(assets)).tuples()}
        foreign = [a for a in assets if a not in found]
        if foreign:
            raise GuardrailDenied(f"asset {foreign[0]} is not an asset of this project (instructions stay within "
                                  "their project)", details={"asset_ids": foreign})
    if runs:
        found = {str(r) for (r,) in Run.select(Run.id).where(Run.project_id == project_id, Run.id.in_(runs)).tuples()}
        foreign = [r for r in runs if r not in found]
        if foreign:
            raise GuardrailDenied(f"run {foreign[0]} is not a run of this project (instructions stay within their "
                                  "project)", details={"run_ids": foreign})


def _replaces_final(project_id: str, inputs: dict) -> bool:
    job = (RunJob.select(RunJob.id, RunJob.final_asset_id, RunJob.selected_candidate_index)
           .join(Run, on=(RunJob.run_id == Run.id))
           .where(Run.project_id == project_id, RunJob.run_id == inputs["run_id"], RunJob.job_key == inputs["job_key"])
           .dicts().first())
    if job is None:
        return False  # candidates.select will say so
    has_final = job["final_asset_id"] is not None or job["selected_candidate_index"] is not None
    return has_final and job["selected_candidate_index"] != inputs["candidate_index"]


def confirmation_reasons(project_id: str, instruction_type: str, inputs: dict) -> list[str]:
    """Inside a read: why this instruction needs a user's confirmation (empty: it does not). The budget is checked
    apart (`over_budget`), as it needs the run's estimate."""
    reasons = []
    if instruction_type == "custom":
        action = inputs["action"]
        if action == "delete_project":
            reasons.append("it deletes the whole project, its files and its history")
        elif action == "delete_asset":
            reasons.append(f"it deletes asset {inputs['asset_id']}")
        elif action == "select_candidate" and _replaces_final(project_id, inputs):
            reasons.append(f"it replaces the final image of shot {inputs['job_key']}")
    elif instruction_type == "storage_sync" and inputs.get("delete_remote"):
        reasons.append("it deletes remote objects that have no local file")
    return reasons


def over_budget(app, handle, payload: dict) -> tuple[str | None, dict]:
    """For a pipeline_run: a confirmation reason when its estimate exceeds what is left of the budget (or a refusal
    when it exceeds the instruction's own max_cost_usd), and the estimate. Only planned (a dry run, recorded like
    any runs.plan) when there is a limit to compare with."""
    from iat.copilot import actions

    limit = (payload.get("constraints") or {}).get("max_cost_usd")
    budget = app.ledger.budget(handle)
    if limit is None and budget["budget_usd"] is None:
        return None, {}
    params = actions.run_params(app, handle, payload)
    params.pop("confirm_budget", None)
    plan = actions.call(app, "runs.plan", **params)
    estimate = plan["estimate"]
    facts = {"estimate_usd": estimate["cost_usd"], "plan_run_id": plan["run"]["id"], **budget}
    if limit is not None and estimate["cost_usd"] > limit:
        raise GuardrailDenied(f"the run is estimated at {estimate['cost_usd']:.4f} USD, over the instruction's "
                              f"limit of {limit:.4f} USD", details=facts)
    if budget["left_usd"] is not None and estimate["cost_usd"] > budget["left_usd"]:
        return (f"it is estimated at {estimate['cost_usd']:.4f} USD and the project has {budget['left_usd']:.4f} USD "
                "of its budget left", facts)
    return None, facts

