"""One error hierarchy for the whole sidecar.

Each class carries its JSON-RPC code, a stable snake_case name and the HTTP status REST answers with. Every
transport turns any exception into the same error object through `error_object()`:

    {"code": -32004, "message": "project 'x' not found", "data": {"name": "not_found", "details": {...}}}

JSON-RPC puts it under "error" of the response; REST answers `{"error": <the same object>}` with `http_status`.
"""

from __future__ import annotations

from typing import Any


class IATError(Exception):
    """Base of every error a client may see. Subclasses set code, name and http_status."""

    code = -32603
    name = "internal_error"
    http_status = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_object(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": {"name": self.name, "details": self.details}}


# --- JSON-RPC 2.0 protocol errors (codes fixed by the specification) ---


class ParseError(IATError):
    code, name, http_status = -32700, "parse_error", 400


class InvalidRequest(IATError):
    code, name, http_status = -32600, "invalid_request", 400


class MethodNotFound(IATError):
    code, name, http_status = -32601, "method_not_found", 404


class InvalidParams(IATError):
    code, name, http_status = -32602, "invalid_params", 422


class InternalError(IATError):
    code, name, http_status = -32603, "internal_error", 500


# --- application errors (server range -32000..-32099), stable across versions ---


class Unauthorized(IATError):
    code, name, http_status = -32001, "unauthorized", 401


class Forbidden(IATError):
    code, name, http_status = -32003, "forbidden", 403


class MethodNotAllowed(IATError):
    """REST only: the route exists, but not for this HTTP method."""

    code, name, http_status = -32005, "method_not_allowed", 405


class NotFound(IATError):
    code, name, http_status = -32004, "not_found", 404


class Conflict(IATError):
    code, name, http_status = -32009, "conflict", 409


class ConfirmationRequired(IATError):
    code, name, http_status = -32010, "confirmation_required", 428


class GuardrailDenied(IATError):
    code, name, http_status = -32011, "guardrail_denied", 403


class IllegalTransition(Conflict):
    """An agent instruction asked to move where its lifecycle does not go (details: from, to, allowed)."""

    code, name, http_status = -32012, "illegal_transition", 409


class PayloadTooLarge(IATError):
    code, name, http_status = -32013, "payload_too_large", 413


class ProviderError(IATError):
    """A generation provider or paid API failed. The subclasses say how; `retryable` tells the ledger whether
    another attempt may help. Connectors put the vendor's HTTP status in details["http_status"] when there was one.
    """

    code, name, http_status = -32020, "provider_error", 502
    retryable = False


class ProviderAuthFailed(ProviderError):
    """The vendor refused the credentials (401/403): fix the provider's secret."""

    code, name, http_status = -32024, "provider_auth_failed", 502


class ProviderQuotaExhausted(ProviderError):
    """The vendor's account is out of credits or quota (402, or a 429 whose body says quota)."""

    code, name, http_status = -32025, "provider_quota_exhausted", 402


class ProviderBadRequest(ProviderError):
    """The vendor refused what was asked (400/404/422: a bad workflow, model or parameter)."""

    code, name, http_status = -32026, "provider_bad_request", 502


class ProviderUnavailable(ProviderError):
    """The vendor is down, not running, or broke its answer off (5xx, connection refused or reset, a truncated
    or malformed body)."""

    code, name, http_status = -32027, "provider_unavailable", 503
    retryable = True


class ProviderTimeout(ProviderError):
    """The vendor did not answer within the provider's timeout."""

    code, name, http_status = -32028, "provider_timeout", 504
    retryable = True


class EngineError(IATError):
    """An image engine (background removal, upscale) failed or produced no acceptable result."""

    code, name, http_status = -32021, "engine_error", 502


class RateLimited(ProviderError):
    """The vendor asked to come back later (429); `retry_after` is its Retry-After in seconds when it sent one."""

    code, name, http_status = -32029, "rate_limited", 429
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, details: dict[str, Any] | None = None):
        super().__init__(message, details={**(details or {}), "retry_after": retry_after})
        self.retry_after = retry_after


class BudgetExhausted(IATError):
    """The project's cost budget cannot pay for the call: nothing was sent to the provider."""

    code, name, http_status = -32032, "budget_exhausted", 402


class SchemaVersionError(IATError):
    """A database whose schema this sidecar cannot open (newer than the code, or an unknown history)."""

    code, name, http_status = -32030, "schema_version_unsupported", 409


class MigrationFailed(IATError):
    """A migration step failed; its transaction rolled back and the database stays at its earlier version."""

    code, name, http_status = -32031, "migration_failed", 500


class DatabaseUnavailable(IATError):
    """A shared database server (the studio's PostgreSQL) cannot be reached or refused the connection; nothing was
    changed. Another attempt may help once it is back."""

    code, name, http_status = -32033, "database_unavailable", 503


class ShuttingDown(IATError):
    code, name, http_status = -32050, "shutting_down", 503


def all_error_classes() -> list[type[IATError]]:
    """Every concrete error class, for the OpenAPI document and the error-shape test."""
    seen: list[type[IATError]] = []
    stack = [IATError]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return sorted(seen, key=lambda c: c.code, reverse=True)


def error_object(exc: BaseException) -> dict[str, Any]:
    """The one error body for any exception; unknown ones become internal_error without their text."""
    if isinstance(exc, IATError):
        return exc.to_object()
    return InternalError("internal error; see the sidecar log").to_object()
