"""HTTP answers and transport failures as the typed provider errors, the same for every connector.

Connectors use httpx2 (the client the openai SDK itself uses) and call `check(response, provider)` on each
answer, `transport_error(exc, provider)` on each exception, and `json_of(response, provider)` to read a body.
The mapping:

    401, 403                  -> ProviderAuthFailed
    402                       -> ProviderQuotaExhausted
    429                       -> RateLimited (retry_after from Retry-After), or ProviderQuotaExhausted when the
                                 body says the quota or credits are gone (OpenAI's insufficient_quota)
    400, 404, 405, 409, 413, 415, 422 -> ProviderBadRequest
    5xx                       -> ProviderUnavailable (retryable)
    connect refused/reset, truncated body -> ProviderUnavailable;  timeouts -> ProviderTimeout
    a body that is not the JSON promised -> ProviderError (not retried: the same request gets the same answer)
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

from iat.errors import (
    ProviderAuthFailed, ProviderBadRequest, ProviderError, ProviderQuotaExhausted, ProviderTimeout,
    ProviderUnavailable, RateLimited,
)

MAX_MESSAGE = 300  # the vendor's own words, cut: enough to act on, never a whole HTML error page
QUOTA_WORDS = ("insufficient_quota", "quota", "credits", "billing")


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def vendor_message(response) -> str:
    """The vendor's error message from a JSON body ({error: {message}}, {error: "..."}, {detail}, {message}),
    else the start of the text."""
    text = _text(response)
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:MAX_MESSAGE]
    if isinstance(body, dict):
        err = body.get("error", body.get("errors"))
        if isinstance(err, dict):
            found = err.get("message") or err.get("title") or err.get("type")
            if found:
                return str(found)[:MAX_MESSAGE]
        if isinstance(err, list) and err and isinstance(err[0], dict):
            return str(err[0].get("title") or err[0].get("message") or err[0])[:MAX_MESSAGE]
        for key in ("error", "detail", "message"):
            if isinstance(body.get(key), str):
                return body[key][:MAX_MESSAGE]
    return text.strip()[:MAX_MESSAGE]


def _text(response) -> str:
    try:
        return response.text
    except Exception:  # noqa: BLE001 - an undecodable or broken body still has a status to report
        return ""


def error_for(status: int, provider: str, message: str, headers=None) -> ProviderError:
    """The typed error for a vendor's HTTP status."""
    details = {"provider": provider, "http_status": status}
    said = f"{provider} answered {status}" + (f": {message}" if message else "")
    if status in (401, 403):
        return ProviderAuthFailed(said + " (check the provider's API key)", details=details)
    if status == 402:
        return ProviderQuotaExhausted(said, details=details)
    if status == 429:
        if any(w in message.lower() for w in QUOTA_WORDS):
            return ProviderQuotaExhausted(said, details=details)
        after = retry_after((headers or {}).get("retry-after"))
        return RateLimited(said, retry_after=after, details=details)
    if 500 <= status <= 599:
        return ProviderUnavailable(said, details=details)
    if 400 <= status <= 499:
        return ProviderBadRequest(said, details=details)
    return ProviderError(said, details=details)


def check(response, provider: str) -> None:
    """Raises the typed error for a non-2xx answer."""
    if 200 <= response.status_code < 300:
        return
    raise error_for(response.status_code, provider, vendor_message(response), response.headers)


def json_of(response, provider: str) -> Any:
    """The answer's JSON body; a body that is not JSON (or was cut short) is a ProviderError with the status."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        raise ProviderError(f"{provider} answered {response.status_code} with a body that is not JSON",
                            details={"provider": provider, "http_status": response.status_code}) from None


def transport_error(exc: Exception, provider: str) -> ProviderError:
    """An httpx2 exception (or OSError) as the typed error: timeouts, refused or broken connections."""
    import httpx2

    details = {"provider": provider}
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderTimeout(f"{provider} did not answer in time ({type(exc).__name__})", details=details)
    if isinstance(exc, httpx2.ConnectError):
        return ProviderUnavailable(f"{provider} is not reachable (is its server running?)", details=details)
    if isinstance(exc, (httpx2.TransportError, OSError)):
        return ProviderUnavailable(f"{provider} broke the connection off ({type(exc).__name__})", details=details)
    return ProviderError(f"{provider} call failed ({type(exc).__name__})", details=details)
