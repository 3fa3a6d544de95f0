"""Downloads a model the user asked for (models.download): the only code in the product that fetches a model.

Nothing calls it on its own: engines use what is installed and fail over to the next engine when a model is not.
The body streams into a `.part` file in the user's models folder while it is hashed and counted against a size
cap (the Content-Length is checked against the cap before the body is read; a server that sends more than it said,
or says nothing, is stopped at the cap). A body whose sha256 is not the one given is refused before onnxruntime
ever loads it; a matching one is installed by ModelStore.install, which moves the file into place and checks it
against its kind. Whatever fails or is cancelled, the `.part` file goes and the manifest is left as it was.

Not a provider call: a download costs nothing and belongs to no project, so it does not go through the ledger.
Failures are the typed errors the connectors use (iat.providers.http): the server's 404/410 is NotFound, its other
statuses and broken connections are provider_* errors with the URL in details.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
import uuid
from types import SimpleNamespace
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from iat.cancel import check_cancel
from iat.errors import (
    InvalidParams, NotFound, PayloadTooLarge, ProviderAuthFailed, ProviderBadRequest, ProviderError,
    ProviderUnavailable, RateLimited,
)
from iat.providers.http import retry_after, transport_error, vendor_message

DEFAULT_MAX_BYTES = 4 << 30  # larger than any background-removal or upscale model in use (BiRefNet: ~1 GB)
CHUNK = 1 << 16
PROGRESS_INTERVAL_S = 0.5
TIMEOUT_S = 30.0  # per read: a stalled server fails the download, a slow one does not
CONNECT_TIMEOUT_S = 10.0
# What the params accept; check_url adds what a pattern cannot say. No userinfo: '@' is not allowed before the path.
URL_PATTERN = r"^https?://[^\s/?#@\\]+([/?#]\S*)?$"
URL_MAX = 2000

Progress = Callable[[int, "int | None"], None]


def check_url(url: str) -> str:
    """Raises ValueError, saying why, unless `url` is an http(s) URL with a host and no credentials (everything
    URL_PATTERN states, and what it cannot)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket
        raise ValueError("the URL cannot be parsed") from None
    if not url.startswith(("http://", "https://")):
        raise ValueError("only http and https URLs can be downloaded")
    if "@" in parts.netloc:
        raise ValueError("the URL must not carry credentials")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a port out of range or not a number
    except ValueError:
        raise ValueError("the URL's port is not a port number") from None
    if len(url) > URL_MAX or not re.fullmatch(URL_PATTERN, url):
        raise ValueError(f"the URL must be at most {URL_MAX} characters, without spaces or backslashes")
    import httpx2

    try:
        httpx2.URL(url)
    except httpx2.InvalidURL as exc:  # what the client itself would refuse (control characters, a bad host)
        raise ValueError(f"the URL is not valid: {exc}") from None
    return url


def download(store, url: str, *, name: str, kind: str, sha256: str, arch: str | None = None, license: str = "",
             replace: bool = False, max_bytes: int = DEFAULT_MAX_BYTES, progress: Progress | None = None,
             cancel: threading.Event | None = None, timeout_s: float = TIMEOUT_S):
    """Fetches `url` and installs it in `store` (a ModelStore) as model `name`; returns the InstalledModel.

    `progress(received, total)` is called when the body starts, at most every PROGRESS_INTERVAL_S while it comes,
    and once it is complete (`total` is None when the server did not say). Setting `cancel` stops the download
    between chunks with Cancelled."""
    check_url(url)
    sha256 = sha256.lower()
    if not replace:  # before anything is fetched
        store.check_free(name)
    store.user_dir.mkdir(parents=True, exist_ok=True)
    part = store.user_dir / f".{name}.{uuid.uuid4().hex[:12]}.download.part"
    try:
        actual = _fetch(url, part, max_bytes=max_bytes, progress=progress, cancel=cancel, timeout_s=timeout_s)
        if actual != sha256:  # refused before onnxruntime ever loads what the server sent
            message = f"sha256 mismatch: the download is {actual}, not {sha256}"
            raise InvalidParams(message, details={
                "errors": [{"loc": ["sha256"], "msg": message, "type": "value_error"}],
                "expected": sha256, "actual": actual, "url": url})
        check_cancel(cancel)
        return store.install(part, name=name, kind=kind, sha256=sha256, arch=arch, license=license, source=url,
                             replace=replace, move=True)
    finally:
        part.unlink(missing_ok=True)


def _fetch(url: str, part: Path, *, max_bytes: int, progress: Progress | None, cancel: threading.Event | None,
           timeout_s: float) -> str:
    """Streams the body into `part`; returns its sha256."""
    import httpx2

    where = f"the server at {urlsplit(url).netloc}"
    h = hashlib.sha256()
    # trust_env=False: no proxy settings or .netrc credentials are picked up from the environment (as connectors).
    # Redirects are followed: model hosts hand files out from CDNs; the sha256 decides what is installed.
    client = httpx2.Client(trust_env=False, follow_redirects=True,
                           timeout=httpx2.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S)))
    try:
        with client, client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response:
            if not 200 <= response.status_code < 300:
                raise _status_error(response, url, where)
            total = _content_length(response)
            if total is not None and total > max_bytes:
                raise _too_large(url, max_bytes, content_length=total)
            received, last = 0, time.monotonic()
            if progress:
                progress(0, total)
            with open(part, "wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    check_cancel(cancel)
                    received += len(chunk)
                    if received > max_bytes:  # the server sent more than it said, or said nothing
                        raise _too_large(url, max_bytes, received=received)
                    h.update(chunk)
                    out.write(chunk)
                    now = time.monotonic()
                    if progress and now - last >= PROGRESS_INTERVAL_S:
                        progress(received, total)
                        last = now
                out.flush()
                os.fsync(out.fileno())
            if total is not None and received != total:
                raise ProviderUnavailable(f"{where} sent {received} of the {total} bytes it announced",
                                          details={"url": url, "received": received, "content_length": total})
            if progress:
                progress(received, total)
    except httpx2.InvalidURL as exc:  # a redirect to a URL the client cannot follow
        raise ProviderError(f"{where} redirected to a URL that is not valid ({exc})", details={"url": url}) from None
    except httpx2.HTTPError as exc:  # refused, reset or cut-off connections, timeouts, too many redirects
        # (A local OSError, writing the .part file to a full disk, is this machine's fault and stays unexpected.)
        err = transport_error(exc, where)
        err.details = {"url": url}  # not a provider: the URL says which server
        raise err from None
    return h.hexdigest()


def _content_length(response) -> int | None:
    value = response.headers.get("content-length")
    try:
        return int(value) if value is not None and not response.headers.get("content-encoding") else None
    except ValueError:
        return None


def _too_large(url: str, max_bytes: int, **seen: int) -> PayloadTooLarge:
    size = seen.get("content_length")
    said = f"is {size} bytes" if size is not None else f"sent more than {max_bytes} bytes"
    return PayloadTooLarge(f"the download {said}, over max_bytes ({max_bytes}); nothing was installed",
                           details={"url": url, "max_bytes": max_bytes, **seen})


def _status_error(response, url: str, where: str) -> ProviderError | NotFound:
    status = response.status_code
    head = b""
    for chunk in response.iter_bytes(4096):  # the start of an error page is enough, however long it is
        head += chunk
        if len(head) >= 4096:
            break
    message = vendor_message(SimpleNamespace(text=head[:4096].decode("utf-8", "replace")))
    said = f"{where} answered {status}" + (f": {message}" if message else "")
    details = {"url": url, "http_status": status}
    if status in (404, 410):
        return NotFound(f"{said} (nothing to download at {url})", details=details)
    if status in (401, 403):
        return ProviderAuthFailed(f"{said} (models are downloaded without credentials: use a public URL)",
                                  details=details)
    if status == 429:
        return RateLimited(said, retry_after=retry_after(response.headers.get("retry-after")), details=details)
    if 500 <= status <= 599:
        return ProviderUnavailable(said, details=details)
    if 400 <= status <= 499:
        return ProviderBadRequest(said, details=details)
    return ProviderError(said, details=details)  # a 1xx or a 3xx left after the redirects
