"""Instructions as registry commands: what the built-in agent calls for each one, and the guardrails' estimate.

Every call goes through the same JSON-RPC dispatcher the transports use (`call`), with a session of its own, so an
instruction gets the validation, audit rows, events and typed errors any client gets, and no second path exists.
"""

from __future__ import annotations

from typing import Any

from iat.errors import InvalidParams

AGENT_TRANSPORT = "agent"


def call(app, method: str, **params) -> Any:
    """One registry command, as the agent (JSON in, JSON out)."""
    from iat.context import Session
    from iat.rpc.protocol import Dispatcher

    return Dispatcher(app).call(method, params, Session(AGENT_TRANSPORT, authenticated=True))


def run_params(app, handle, payload: dict) -> dict:
    """runs.start's params for a pipeline_run payload. Shot keys are looked up in the project's latest runs; a time
    of day or weather in the inputs replaces every shot's own. A key no run holds is invalid_params."""
    from iat.copilot import context

    inputs, execution = payload["inputs"], payload.get("execution", {})
    if inputs.get("shots") is not None:
        shots = [dict(s) for s in inputs["shots"]]
    else:
        known = context.build(app, handle).shots
        missing = [k for k in inputs["shot_keys"] if k not in known]
        if missing:
            raise InvalidParams(f"no run of project {handle.slug} has the shot(s) {', '.join(missing)}",
                                details={"errors": [{"loc": "inputs.shot_keys", "msg": f"unknown shot {k}"}
                                                    for k in missing], "known": sorted(known)[:50]})
        shots = [dict(known[k]) for k in inputs["shot_keys"]]
    for shot in shots:
        for key in ("time_of_day", "weather"):
            if inputs.get(key):
                shot[key] = inputs[key]
    params: dict[str, Any] = {"slug": handle.slug, "shots": shots}
    params.update({k: v for k, v in execution.items() if v is not None})
    return params
