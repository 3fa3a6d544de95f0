"""What the paid background-removal APIs (`removebg`, `photoroom`) share: one multipart upload of the picture, one
image back, one attempt per call.

These providers generate nothing: `operations = ("remove_background",)`, so runs.start refuses them as a run's
provider, and the engines of `iat.engines.remote` call them through the ledger. A call's result is a
`CutoutResult` (the ledger reads its `usage` for the cost event and its `http_status` for the attempt's row).

The upload runs in a worker thread so that a cancel is noticed while the vendor is still working; the request is
then abandoned (whatever the vendor charges for it is out of our hands, and its answer is dropped). Transport
failures and HTTP errors become the typed errors of `iat.providers.http`; the vendor's own error code is added to
the error's details as `vendor_code`.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from iat.errors import ProviderError, ProviderTimeout
from iat.providers.base import Account, BaseProvider, Cancelled, CostEstimate, GenerateRequest, check_cancel
from iat.providers.http import error_for, transport_error, vendor_message

POLL_S = 0.05  # how often a call in flight looks at its cancel event
CONNECT_TIMEOUT_S = 10.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class CutoutResult:
    image: bytes = field(repr=False)  # the cut-out as the vendor sent it (PNG with alpha)
    width: int
    height: int
    # units, cost_usd, currency, source ("vendor": its credits header; "pricing": the account's prices), and the
    # vendor's own facts (credits, detected type, uncertainty), kept in the cost event's meta.
    usage: dict[str, Any] = field(default_factory=dict)
    http_status: int | None = None


class CutoutProvider(BaseProvider):
    """The shared HTTP of a paid background-removal API; subclasses build the request and read the answer."""

    operations: ClassVar[tuple[str, ...]] = ("remove_background",)
    required_secrets: ClassVar[tuple[str, ...]] = ("api_key",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client = None

    # --- what subclasses provide ---

    def estimate_cutout(self, account: Account | None = None, options: Mapping[str, Any] | None = None) -> CostEstimate:
        raise NotImplementedError

    def remove_background(self, image: bytes, filename: str, account: Account, *,
                          options: Mapping[str, Any] | None = None, cancel: threading.Event | None = None,
                          timeout: float | None = None) -> CutoutResult:
        raise NotImplementedError

    def estimate(self, request: GenerateRequest | None = None, account: Account | None = None) -> CostEstimate:
        """What one cut-out costs (a request to generate does not apply: these providers generate nothing)."""
        return self.estimate_cutout(account)

    # --- HTTP ---

    def _http(self):
        with self._lock:
            if self._client is None:
                import httpx2

                self._client = httpx2.Client(follow_redirects=False)
            return self._client

    def _request(self, method: str, url: str, *, timeout: float, cancel: threading.Event | None = None, **kwargs):
        """One request, its answer checked (non-2xx -> the typed error, via `error`); cancellable while in flight."""
        import httpx2

        check_cancel(cancel)
        deadline = time.monotonic() + timeout
        limit = httpx2.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S))
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["response"] = self._http().request(method, url, timeout=limit, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name=f"{self.code}-request", daemon=True).start()
        while not done.wait(POLL_S):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if time.monotonic() > deadline + 1.0:  # the client's own timeout should have fired first
                raise ProviderTimeout(f"{self.code} did not answer in time", details={"provider": self.code})
        error = box.get("error")
        if error is not None:
            raise transport_error(error, self.code) from None
        response = box["response"]
        if not 200 <= response.status_code < 300:
            raise self.error(response)
        return response

    def error(self, response) -> ProviderError:
        """The typed error of a non-2xx answer, with the vendor's code when its body names one."""
        err = error_for(response.status_code, self.code, vendor_message(response), response.headers)
        code = self.vendor_code(response)
        if code:
            err.details["vendor_code"] = code
        return err

    def vendor_code(self, response) -> str | None:
        return None


def image_bytes_of(response, provider: str) -> bytes:
    """The answer's body when it is a PNG (or a JPEG, for a vendor told to send one); anything else is a
    ProviderError (not retried: the same request gets the same answer)."""
    body = response.content
    if body.startswith(PNG_MAGIC) or body.startswith(JPEG_MAGIC):
        return body
    kind = response.headers.get("content-type", "unknown")
    raise ProviderError(f"{provider} answered {response.status_code} with a body that is not an image ({kind})",
                        details={"provider": provider, "http_status": response.status_code})


def decoded(data: bytes, provider: str, status: int | None):
    """The vendor's image, fully decoded; a broken one is a ProviderError, never invalid_params (the chain would
    take that for the caller's mistake)."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure of the vendor's bytes
        raise ProviderError(f"{provider} sent an image that cannot be decoded ({type(exc).__name__})",
                            details={"provider": provider, "http_status": status}) from None
    return img


def header_float(headers, name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def header_int(headers, name: str) -> int | None:
    found = header_float(headers, name)
    return int(found) if found is not None and found.is_integer() else None


def api_key(account: Account, provider: str) -> str:
    key = account.secrets.get("api_key")
    if not key:
        from iat.errors import ProviderAuthFailed

        raise ProviderAuthFailed(f"provider {provider} has no api_key; store it with secrets.set",
                                 details={"provider": provider})
    return key


def parsed(model, options: Mapping[str, Any] | None, provider: str):
    """A call's options validated; any problem is InvalidParams (the caller's mistake, checked before a call)."""
    from pydantic import ValidationError

    from iat.errors import InvalidParams

    try:
        return model.model_validate(dict(options or {}))
    except ValidationError as exc:
        errors = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise InvalidParams(f"invalid options for {provider}: "
                            + "; ".join(f"{e['loc']}: {e['msg']}" for e in errors),
                            details={"provider": provider, "errors": errors}) from None
