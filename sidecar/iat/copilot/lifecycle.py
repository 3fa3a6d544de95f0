"""The instruction lifecycle (SPEC 2.6.4): draft -> queued -> running -> done | failed | canceled.

`move` runs inside the project's write transaction: it checks the transition against TRANSITIONS (anything else is
`illegal_transition`), changes the row only while it still has the status it was read with (two writers cannot
both move it), stamps queued_at / started_at / finished_at, and writes the trail: a `status_change` event for every
move, plus `queued` or `started` when it enters those states. The caller publishes the returned events after the
commit (iat.copilot.service).
"""

from __future__ import annotations

from iat.clock import utcnow
from iat.copilot import repo
from iat.copilot.envelope import FINAL_STATUSES
from iat.errors import ConfirmationRequired, IllegalTransition

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "draft": ("queued", "canceled"),
    "queued": ("running", "canceled"),
    "running": ("done", "failed", "canceled"),
    "done": (), "failed": (), "canceled": (),
}

_STAMP = {"queued": "queued_at", "running": "started_at", "done": "finished_at", "failed": "finished_at",
          "canceled": "finished_at"}
_ENTRY_EVENT = {"queued": "queued", "running": "started"}


def check(instruction: dict, to: str) -> None:
    current = instruction["status"]
    if to not in TRANSITIONS[current]:
        final = " (it has ended)" if current in FINAL_STATUSES else ""
        raise IllegalTransition(
            f"instruction {instruction['id']} is {current}{final} and cannot become {to}",
            details={"instruction_id": str(instruction["id"]), "from": current, "to": to,
                     "allowed": list(TRANSITIONS[current])})


def move(project_id: str, instruction_id: str, to: str, *, actor_user_id: str | None = None,
         reason: str | None = None, confirm: bool = False) -> tuple[dict, list[dict]]:
    """Moves the instruction to `to`; returns the updated row and the event rows written. `confirm` records
    `actor_user_id` as the confirming user (draft -> queued): an instruction that requires confirmation leaves
    draft only that way."""
    row = repo.get_instruction(project_id, instruction_id)
    check(row, to)
    fields: dict = {"status": to}
    if to == "queued" and row["status"] == "draft":
        if confirm:
            fields["confirmed_by_user_id"] = actor_user_id
        elif row["requires_confirmation"] and not row["confirmed_by_user_id"]:
            raise ConfirmationRequired(
                f"instruction {instruction_id} needs a user's confirmation before it is queued "
                f"(agent.instructions.confirm)", details={"instruction_id": str(instruction_id)})
    now = utcnow()
    fields[_STAMP[to]] = now
    if not repo.update_instruction(str(instruction_id), row["status"], **fields):
        # Another writer moved it between the read and this update (a cancel racing a start): say what it is now.
        current = repo.get_instruction(project_id, instruction_id)
        check(current, to)
        return move(project_id, instruction_id, to, actor_user_id=actor_user_id, reason=reason, confirm=confirm)
    change = {"from": row["status"], "to": to}
    if actor_user_id:
        change["actor_user_id"] = actor_user_id
    if reason:
        change["reason"] = reason
    if confirm:
        change["confirmed"] = True
    events = [repo.add_event(instruction_id, "status_change", change)]
    if to in _ENTRY_EVENT:
        events.append(repo.add_event(instruction_id, _ENTRY_EVENT[to], {"reason": reason} if reason else {}))
    return {**row, **fields, "updated_at": now}, events
