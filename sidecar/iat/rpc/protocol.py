"""JSON-RPC 2.0 over the command registry, independent of any transport.

Transports hand raw messages (bytes) to `Dispatcher.handle_bytes` from a worker thread and write back what it
returns; REST calls `Dispatcher.call` directly. Every exception becomes the one error object of iat.errors.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Callable

from iat.context import CallContext, Session
from iat.errors import (IATError, ShuttingDown, InternalError, InvalidParams, InvalidRequest, MethodNotFound, ParseError,
                        Unauthorized, error_object)

if TYPE_CHECKING:
    from iat.app import App
    from iat.registry import Command

log = logging.getLogger(__name__)

# Methods a peer may call before it has authenticated (socket and websocket peers send the token first).
_OPEN_METHODS = frozenset({"system.auth"})


def encode(message: Any) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def notification(method: str, params: dict | None = None) -> dict:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def error_response(request_id: Any, exc: BaseException) -> dict:
    return {"jsonrpc": "2.0", "error": error_object(exc), "id": request_id}


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


class Dispatcher:
    def __init__(self, app: App):
        self.app = app

    # --- messages ---

    def handle_bytes(self, data: bytes, session: Session, *, refuse: IATError | None = None) -> bytes | None:
        """One received message (a request, a notification or a batch) -> the bytes to send back, if any.

        With `refuse`, every request in it is answered with that error instead of being run (a stopping sidecar
        still answers what it will not do).
        """
        try:
            message = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            return encode(error_response(None, ParseError(f"invalid JSON: {type(exc).__name__}: {exc}"[:300])))
        reply = self.handle_message(message, session, refuse=refuse)
        return None if reply is None else encode(reply)

    def handle_message(self, message: Any, session: Session, *, refuse: IATError | None = None) -> dict | list | None:
        if isinstance(message, list):
            if not message:
                return error_response(None, InvalidRequest("empty batch"))
            replies = [r for r in (self._handle_one(m, session, refuse) for m in message) if r is not None]
            return replies or None  # a batch of notifications gets no answer at all
        return self._handle_one(message, session, refuse)

    def _handle_one(self, message: Any, session: Session, refuse: IATError | None = None) -> dict | None:
        if not isinstance(message, dict):
            return error_response(None, InvalidRequest("a request must be a JSON object"))
        is_request = "id" in message
        request_id = message.get("id")
        if is_request and not _valid_id(request_id):
            return error_response(None, InvalidRequest("id must be a string, a number or null"))
        problem = _envelope_problem(message)
        if problem:
            return error_response(request_id, InvalidRequest(problem))
        try:
            if refuse is not None:
                raise refuse
            result = self.call(message["method"], message.get("params"), session)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error object
            self.log_failure(message["method"], exc)
            return error_response(request_id, exc) if is_request else None
        return {"jsonrpc": "2.0", "result": result, "id": request_id} if is_request else None

    # --- calls ---

    def call(self, method: str, params: Any, session: Session) -> Any:
        """Validates and runs one command; returns its JSON-ready result or raises an IATError."""
        if not session.authenticated and method not in _OPEN_METHODS:  # before the lookup: reveal nothing
            raise Unauthorized("authenticate first: call system.auth with the sidecar's token")
        cmd = self.app.registry.get(method)
        if cmd is None:
            raise MethodNotFound(f"method {method!r} not found")
        validated = self._validate(cmd, params)
        out = cmd.handler(CallContext(self.app, session, cmd), validated)
        return self._dump(cmd, out)

    def submit(self, executor, line: bytes, session: Session, reply: Callable[[bytes], None]) -> None:
        """Runs one received message on the executor and hands its answer to `reply`; once the sidecar stops
        admitting calls, answers shutting_down at once instead (calls admitted earlier still finish)."""

        def run(refuse: IATError | None = None) -> None:
            try:
                out = self.handle_bytes(line, session, refuse=refuse)
            except Exception as exc:  # noqa: BLE001 - a bug must still answer, never vanish in the executor
                self.log_failure("(message)", exc)
                out = encode(error_response(None, exc))
            if out is not None:
                reply(out)

        if self.app.stopping.is_set():
            run(ShuttingDown("the sidecar is shutting down"))
            return
        try:
            executor.submit(run)
        except RuntimeError:  # the executor already shut down
            run(ShuttingDown("the sidecar is shutting down"))

    @staticmethod
    def _validate(cmd: Command, params: Any):
        from pydantic import ValidationError

        if params is None:
            params = {}
        elif isinstance(params, list):  # by-position: the model's fields in declaration order
            names = list(cmd.params.model_fields)
            if len(params) > len(names):
                raise InvalidParams(f"{cmd.name} takes at most {len(names)} positional params",
                                    details={"errors": []})
            params = dict(zip(names, params))
        try:
            return cmd.params.model_validate(params)
        except ValidationError as exc:
            # Inputs are left out: a rejected value may be a secret.
            errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                      for e in exc.errors(include_url=False, include_context=False, include_input=False)]
            raise InvalidParams(f"invalid params for {cmd.name}: {errors[0]['msg']}" if errors
                                else f"invalid params for {cmd.name}", details={"errors": errors}) from None

    @staticmethod
    def _dump(cmd: Command, out: Any) -> Any:
        model = out if isinstance(out, cmd.result) else cmd.result.model_validate(out)
        return model.model_dump(mode="json")

    @staticmethod
    def log_failure(method: str, exc: BaseException) -> None:
        if isinstance(exc, IATError) and not isinstance(exc, InternalError):
            log.info("%s failed: %s (%s)", method, exc.name, exc.message)
        else:
            log.error("%s failed with an unexpected error", method, exc_info=exc)


def _envelope_problem(message: dict) -> str | None:
    if message.get("jsonrpc") != "2.0":
        return 'jsonrpc must be exactly "2.0"'
    if not isinstance(message.get("method"), str):
        return "method must be a string"
    if "params" in message and not isinstance(message["params"], (dict, list)):
        return "params must be an object or an array"
    extra = set(message) - {"jsonrpc", "method", "params", "id"}
    if extra:
        return f"unknown members: {', '.join(sorted(extra))}"
    return None
