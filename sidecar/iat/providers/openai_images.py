"""`openai`: OpenAI Images (the GPT image models) through the openai SDK.

One `generate` is one HTTP request, made by the SDK with its own retries off (`max_retries=0`; the ledger
retries):

- text2img: `images.generate(model, prompt, size, quality, n=1, output_format="png", background, moderation)`.
- img2img, or any request with reference images: `images.edit(image=[init image, references...], prompt, size,
  quality, n=1, output_format="png", background, input_fidelity)` (multipart, one `image[]` part per picture;
  at most 16: the init image first, then the references by weight, weight 0 left out).

What the Images API does not have, and what stands in for it:

- No free size: the GPT image models take 1024x1024, 1536x1024 or 1024x1536 (every one of them accepts these).
  The call asks for the one closest to the requested aspect ratio and the answer is resized to exactly
  request.width x request.height with LANCZOS.
- No seed: the result reports the request's seed (or 0), and usage says `vendor_seed: False`.
- No negative prompt: it is appended to the prompt as "Avoid: ...".
- No model in the answer: the result names the model that was asked for.

Cost comes from the answer's `usage` (source "vendor", units = total tokens): text input tokens, image input tokens
and output tokens, each priced per million from the config's pricing, whose fields default to the configured
model's published list price (table below; a model not in it is priced as gpt-image-1, the family's dearest).
An answer without usage (some OpenAI-compatible servers) costs `pricing.usd_per_image` when set, else the
typical token count for its size and quality at those prices (source "pricing"). `estimate` uses that typical
count: OpenAI's published output tokens per size and quality ("auto" counted as "high", the most it may cost),
prompt length / 4 for text, and the classic vision tile rule for each input image (high input fidelity costs more
than that; the estimate does not know how much).

Failures: the SDK's `APIStatusError`s go through `iat.providers.http.error_for` with the vendor's message and
code (so `insufficient_quota` on a 429 is quota exhausted, `rate_limit_exceeded` a rate limit, whatever the
message says), Retry-After (or retry-after-ms, or
the x-ratelimit-reset-* headers) kept as `RateLimited.retry_after`; `APITimeoutError` and `APIConnectionError`
through `transport_error` on the httpx2 exception under them (a cut-off body is one of those); a body that is not
JSON (the SDK lets `json.JSONDecodeError` out, or hands back the text for a non-JSON content type), or JSON
without a decodable PNG, is a `ProviderError` with the status. API keys echoed in a vendor message are masked.

The call runs on a short-lived thread so that `cancel` and the attempt's whole time limit are honoured while the
request is in flight: on cancel or overrun the request is abandoned (the Images API has no way to stop a
generation, so OpenAI may still bill it; the ledger records the attempt as canceled or timed out).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import re
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Literal

from PIL import Image
from pydantic import Field

from iat.errors import (
    ProviderBadRequest, ProviderError, ProviderQuotaExhausted, ProviderTimeout, ProviderUnavailable, RateLimited,
)
from iat.providers.base import (
    Account, BaseProvider, Cancelled, CostEstimate, GenerateRequest, GenerateResult, Pricing, ProviderConfig,
    check_cancel, encode_png,
)
from iat.providers.http import MAX_MESSAGE, error_for, retry_after, transport_error

CODE = "openai"
DEFAULT_ENDPOINT = "https://api.openai.com/v1"
# gpt-image-1 was shut down on 2026-10-23 (openai SDK 3.x model docs); 1.5 is its live successor in the family.
DEFAULT_MODEL = "gpt-image-1.5"
FIXED_SIZES: tuple[tuple[int, int], ...] = ((1024, 1024), (1536, 1024), (1024, 1536))
MAX_INPUT_IMAGES = 16  # the edits endpoint's limit for GPT image models
# Published list prices, USD per 1M tokens: (text input, image input, output). developers.openai.com model pages.
PUBLISHED_PRICES: dict[str, tuple[float, float, float]] = {
    "gpt-image-1": (5.0, 10.0, 40.0),
    "gpt-image-1.5": (5.0, 8.0, 32.0),
    "gpt-image-1-mini": (2.0, 2.5, 8.0),
}
# Output image tokens per (size, quality), as OpenAI publishes them for the gpt-image-1 family.
OUTPUT_TOKENS: dict[tuple[str, str], int] = {
    ("1024x1024", "low"): 272, ("1024x1536", "low"): 408, ("1536x1024", "low"): 400,
    ("1024x1024", "medium"): 1056, ("1024x1536", "medium"): 1584, ("1536x1024", "medium"): 1568,
    ("1024x1024", "high"): 4160, ("1024x1536", "high"): 6240, ("1536x1024", "high"): 6208,
}
RATE_LIMIT_CODES = ("rate_limit_exceeded",)  # a 429 with this code is a rate limit, whatever its message says
JOIN_GRACE_S = 1.0  # past the attempt's limit, how long to wait for the SDK's own timeout before giving up on it
_KEY_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{3,})")


class OpenAIPricing(Pricing):
    """USD per million tokens; None takes the configured model's published list price."""

    usd_per_image: float | None = Field(None, ge=0, le=1000, description="Cost of one image when the answer "
                                        "carries no token usage; None: the typical tokens at the token prices")
    usd_per_1m_text_input: float | None = Field(None, ge=0, le=10000, description="Text input tokens")
    usd_per_1m_image_input: float | None = Field(None, ge=0, le=10000, description="Image input tokens")
    usd_per_1m_output: float | None = Field(None, ge=0, le=10000, description="Output tokens")


class OpenAIConfig(ProviderConfig):
    endpoint: str | None = Field(DEFAULT_ENDPOINT, max_length=2048, description="Base URL of the API (…/v1)")
    model: str | None = Field(DEFAULT_MODEL, min_length=1, max_length=256, description="GPT image model")
    pricing: OpenAIPricing = Field(default_factory=OpenAIPricing)
    quality: Literal["low", "medium", "high", "auto"] = Field("medium", description="Rendering quality")
    background: Literal["opaque", "transparent", "auto"] = Field(
        "opaque", description="opaque: what later stages and the QA guard expect; transparent keeps alpha")
    moderation: Literal["auto", "low"] = Field("auto", description="Content moderation level (generations)")
    input_fidelity: Literal["high", "low"] | None = Field(
        "high", description="How closely an edit keeps its input images; sent only to models that take it")


def nearest_size(width: int, height: int) -> tuple[int, int]:
    """The fixed size whose aspect ratio is closest to width:height (in log space, so 2:1 and 1:2 are alike)."""
    want = math.log(width / height)
    return min(FIXED_SIZES, key=lambda s: (abs(math.log(s[0] / s[1]) - want), s != (1024, 1024)))


def prices(config: OpenAIConfig) -> tuple[float, float, float]:
    """(text input, image input, output) USD per 1M tokens: the config's, else the model's list price."""
    model = config.model or DEFAULT_MODEL
    known = [name for name in PUBLISHED_PRICES if model == name or model.startswith(name + "-")]
    listed = PUBLISHED_PRICES[max(known, key=len)] if known else PUBLISHED_PRICES["gpt-image-1"]
    p = config.pricing
    return (p.usd_per_1m_text_input if p.usd_per_1m_text_input is not None else listed[0],
            p.usd_per_1m_image_input if p.usd_per_1m_image_input is not None else listed[1],
            p.usd_per_1m_output if p.usd_per_1m_output is not None else listed[2])


def token_cost(config: OpenAIConfig, text_in: int, image_in: int, output: int) -> float:
    text_price, image_price, out_price = prices(config)
    return round((text_in * text_price + image_in * image_price + output * out_price) / 1e6, 8)


def vision_tokens(width: int, height: int) -> int:
    """Input image tokens by the classic tile rule: fit 2048, short side 768, 85 + 170 per 512 px tile."""
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    return 85 + 170 * math.ceil(w * scale / 512) * math.ceil(h * scale / 512)


def fidelity_for(model: str, wanted: str | None) -> str | None:
    """input_fidelity where the model takes it: gpt-image-1 and 1.5 both values, 1-mini only "low", others none."""
    if wanted is None:
        return None
    if model.startswith("gpt-image-1-mini"):
        return "low" if wanted == "low" else None
    if model == "gpt-image-1" or model.startswith(("gpt-image-1-", "gpt-image-1.5")):
        return wanted
    return None


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """A vendor message without our secrets or anything that looks like an API key (OpenAI echoes keys masked,
    but with their first and last characters)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _KEY_PATTERN.sub("sk-***", text)


class OpenAIImagesProvider(BaseProvider):
    code = CODE
    config_model = OpenAIConfig
    required_secrets = ("api_key",)
    optional_secrets = ("organization", "project")

    CLIENT_CACHE = 16  # distinct (endpoint, credentials) clients kept; more are rebuilt on demand

    def __init__(self) -> None:
        self._clients: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    # --- the client ---

    def _client(self, account: Account):
        config: OpenAIConfig = account.config  # type: ignore[assignment]
        endpoint = config.endpoint or DEFAULT_ENDPOINT
        key = account.secrets.get("api_key") or ""
        if not key:
            raise ProviderError(f"provider {CODE} needs the secret api_key; store it with secrets.set",
                                details={"provider": CODE})
        org, project = account.secrets.get("organization") or None, account.secrets.get("project") or None
        digest = hashlib.sha256("\x00".join((key, org or "", project or "")).encode()).hexdigest()
        with self._lock:
            client = self._clients.get((endpoint, digest))
            if client is not None:
                self._clients.move_to_end((endpoint, digest))
                return client
        import openai

        client = openai.OpenAI(api_key=key, organization=org, project=project, base_url=endpoint, max_retries=0,
                               timeout=config.timeout_s)
        # The SDK falls back to OPENAI_ORG_ID / OPENAI_PROJECT_ID / OPENAI_ADMIN_KEY from the environment: a
        # project's account says exactly what it sends.
        client.organization, client.project, client.admin_api_key = org, project, None
        with self._lock:
            client = self._clients.setdefault((endpoint, digest), client)
            while len(self._clients) > self.CLIENT_CACHE:
                self._clients.popitem(last=False)  # dropped, not closed: another thread may be using it
        return client

    # --- the interface ---

    def probe(self, account: Account, *, timeout: float) -> dict[str, Any]:
        config: OpenAIConfig = account.config  # type: ignore[assignment]
        client = self._client(account)
        model = config.model or DEFAULT_MODEL

        def send() -> tuple[int, Any]:
            return _parsed(client.models.with_raw_response.retrieve(model, timeout=timeout))

        _, found = self._call(account, send, None, timeout)
        return {"endpoint": config.endpoint, "model": getattr(found, "id", model),
                "owned_by": getattr(found, "owned_by", None)}

    def estimate(self, request: GenerateRequest, account: Account | None = None) -> CostEstimate:
        config: OpenAIConfig = (account or self.default_account()).config  # type: ignore[assignment]
        size = "%dx%d" % nearest_size(request.width, request.height)
        text, images, output = typical_tokens(request, size, config.quality)
        return CostEstimate(units=float(text + images + output), cost_usd=token_cost(config, text, images, output))

    def generate(self, request: GenerateRequest, account: Account | None = None, *,
                 cancel: threading.Event | None = None, timeout: float | None = None) -> GenerateResult:
        account = account or self.default_account()
        config: OpenAIConfig = account.config  # type: ignore[assignment]
        check_cancel(cancel)
        limit = timeout if timeout is not None else config.timeout_s
        model = config.model or DEFAULT_MODEL
        prompt = compose_prompt(request)
        width, height = nearest_size(request.width, request.height)
        size = f"{width}x{height}"
        images = input_images(request)
        client = self._client(account)
        common = {"model": model, "prompt": prompt, "size": size, "quality": config.quality, "n": 1,
                  "output_format": "png", "background": config.background, "timeout": limit}
        fidelity = fidelity_for(model, config.input_fidelity) if images else None
        extra = {"input_fidelity": fidelity} if fidelity else {}

        def send() -> tuple[int, Any]:
            if images:
                return _parsed(client.images.with_raw_response.edit(image=images, **common, **extra))
            return _parsed(client.images.with_raw_response.generate(moderation=config.moderation, **common))
        status, answer = self._call(account, send, cancel, limit)
        check_cancel(cancel)
        picture = _image_of(answer, status)
        mode = "RGBA" if config.background == "transparent" else "RGB"
        picture = picture.convert(mode)
        if picture.size != (request.width, request.height):
            picture = picture.resize((request.width, request.height), Image.Resampling.LANCZOS)
        return GenerateResult(image=encode_png(picture), seed=request.seed or 0, model=model, width=request.width,
                              height=request.height, usage=self._usage(config, request, answer, size, len(images)),
                              http_status=status)

    # --- helpers ---

    def _usage(self, config: OpenAIConfig, request: GenerateRequest, answer: Any, size: str,
               inputs: int) -> dict[str, Any]:
        quality = getattr(answer, "quality", None) or config.quality
        common = {"currency": "USD", "model": config.model, "vendor_size": getattr(answer, "size", None) or size,
                  "quality": quality, "input_images": inputs, "vendor_seed": False}
        used = getattr(answer, "usage", None)
        counts = _counts(used)
        if counts is not None:
            text_in, image_in, output, total = counts
            return {"units": float(total), "cost_usd": token_cost(config, text_in, image_in, output),
                    "source": "vendor", "input_tokens": text_in + image_in, "text_input_tokens": text_in,
                    "image_input_tokens": image_in, "output_tokens": output, "total_tokens": total, **common}
        if config.pricing.usd_per_image is not None:
            cost = config.pricing.usd_per_image
        else:
            cost = token_cost(config, *typical_tokens(request, size, quality))
        return {"units": 1.0, "cost_usd": cost, "source": "pricing", **common}

    def _call(self, account: Account, send: Callable[[], tuple[int, Any]], cancel: threading.Event | None,
              limit: float) -> tuple[int, Any]:
        """Runs `send` (the SDK call and its parsing) on a worker thread, waiting for it, for cancel, or for the
        attempt's limit to pass; SDK failures come back as the typed errors."""
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                outcome["value"] = send()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                outcome["error"] = exc
            finally:
                done.set()

        worker = threading.Thread(target=work, name="openai-call", daemon=True)
        deadline = time.monotonic() + limit + JOIN_GRACE_S
        worker.start()
        while not done.wait(0.05 if cancel is not None else max(0.0, deadline - time.monotonic())):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if time.monotonic() >= deadline:
                raise ProviderTimeout(f"{CODE} did not answer within {limit:g} s", details={"provider": CODE})
        if "error" in outcome:
            raise vendor_error(outcome["error"], tuple(v for v in account.secrets.values() if v)) from None
        return outcome["value"]


def _parsed(raw) -> tuple[int, Any]:
    """(HTTP status, parsed body) of a raw SDK response. The SDK lets json.JSONDecodeError out of parse() for a
    JSON content type whose body is not JSON."""
    try:
        return raw.status_code, raw.parse()
    except (ValueError, UnicodeDecodeError):
        raise ProviderError(f"{CODE} answered {raw.status_code} with a body that is not JSON",
                            details={"provider": CODE, "http_status": raw.status_code}) from None


def _counts(used: Any) -> tuple[int, int, int, int] | None:
    """(text input, image input, output, total) tokens of an answer's usage block; None when absent or unusable."""
    if used is None:
        return None
    try:
        details = getattr(used, "input_tokens_details", None)
        input_tokens = int(getattr(used, "input_tokens"))
        output = int(getattr(used, "output_tokens"))
        image_in = int(getattr(details, "image_tokens", 0) or 0) if details is not None else 0
        text_in = int(getattr(details, "text_tokens", input_tokens - image_in)) if details is not None \
            else input_tokens
        total = int(getattr(used, "total_tokens", None) or input_tokens + output)
    except (TypeError, ValueError, AttributeError):
        return None
    if min(text_in, image_in, output, total) < 0:
        return None
    return text_in, image_in, output, total


def typical_tokens(request: GenerateRequest, size: str, quality: str) -> tuple[int, int, int]:
    """(text input, image input, output) tokens a request usually takes; see the module docstring."""
    text = math.ceil(len(compose_prompt(request, strict=False)) / 4)
    images = 0
    for data in [request.init_image] * bool(request.init_image) + [r.data for r in _references(request)]:
        images += vision_tokens(*_dimensions(data, (request.width, request.height)))
    output = OUTPUT_TOKENS[(size, quality if quality in ("low", "medium", "high") else "high")]
    return text, images, output


def _dimensions(data: bytes, default: tuple[int, int]) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            return im.size
    except Exception:  # noqa: BLE001 - an estimate falls back to the requested size
        return default


def compose_prompt(request: GenerateRequest, *, strict: bool = True) -> str:
    prompt = (request.prompt or request.scene.text).strip()
    if not prompt and strict:
        raise ProviderBadRequest(f"{CODE} needs a prompt (the request has neither a prompt nor scene text)",
                                 details={"provider": CODE})
    if request.negative_prompt.strip():
        prompt += "\n\nAvoid: " + request.negative_prompt.strip()
    return prompt


def _references(request: GenerateRequest):
    refs = sorted((r for r in request.reference_images if r.weight > 0), key=lambda r: -r.weight)
    return refs[:MAX_INPUT_IMAGES - (1 if request.init_image else 0)]


def input_images(request: GenerateRequest) -> list[tuple[str, bytes, str]]:
    """The edit's image[] parts: the init image first, then the references by weight; each as a PNG, JPEG or WebP
    file (anything else converted to PNG)."""
    datas = ([request.init_image] if request.init_image else []) + [r.data for r in _references(request)]
    return [_as_file(data, "init" if request.init_image and i == 0 else f"reference-{i}")
            for i, data in enumerate(datas)]


def _as_file(data: bytes, stem: str) -> tuple[str, bytes, str]:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return f"{stem}.png", data, "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return f"{stem}.jpg", data, "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return f"{stem}.webp", data, "image/webp"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            png = encode_png(im.convert("RGBA"))
    except Exception:  # noqa: BLE001 - Pillow raises many types for bad data
        raise ProviderBadRequest(f"{CODE}: the {stem.replace('-', ' ')} image is not a readable picture",
                                 details={"provider": CODE}) from None
    return f"{stem}.png", png, "image/png"


def _image_of(answer: Any, status: int):
    """The first image of an ImagesResponse, decoded; anything else is a ProviderError."""
    details = {"provider": CODE, "http_status": status}
    if isinstance(answer, (str, bytes)) or answer is None:
        raise ProviderError(f"{CODE} answered {status} with a body that is not JSON", details=details)
    data = getattr(answer, "data", None)
    first = data[0] if isinstance(data, list) and data else None
    b64 = getattr(first, "b64_json", None)
    if not isinstance(b64, str) or not b64:
        raise ProviderError(f"{CODE} answered {status} without an image (no data[0].b64_json)", details=details)
    try:
        raw = base64.b64decode(b64, validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            return im.copy()
    except (binascii.Error, ValueError, OSError, Image.DecompressionBombError):
        raise ProviderError(f"{CODE} answered {status} with an image that does not decode", details=details) \
            from None


def _reset_seconds(value: str | None) -> float | None:
    """x-ratelimit-reset-* values ("1s", "6m0s", "20ms", "1h2m3.5s") in seconds."""
    if not value:
        return None
    total, matched = 0.0, False
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value.strip()):
        total += float(amount) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
        matched = True
    return total if matched else None


def vendor_error(exc: BaseException, secrets: tuple[str, ...] = (), *, provider: str = CODE,
                 expected: str = "an images response") -> BaseException:
    """The typed error for whatever the SDK call raised (`provider`: the code the error names; `expected`: what a
    well-formed answer is)."""
    import httpx2
    import openai

    if isinstance(exc, (Cancelled, ProviderError)):
        return exc
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") if isinstance(body.get("message"), str) else None
        if message is None:
            message = exc.body.strip() if isinstance(exc.body, str) else ""
        code = exc.code or (body.get("type") if isinstance(body.get("type"), str) else None)
        said = scrub(message, secrets)[:MAX_MESSAGE] + (f" [{code}]" if code else "")
        headers = exc.response.headers
        err = error_for(exc.status_code, provider, said, headers)
        if isinstance(err, ProviderQuotaExhausted) and exc.status_code == 429 and code in RATE_LIMIT_CODES:
            # OpenAI's rate-limit messages may point at the billing page: its code says it is a rate limit.
            err = RateLimited(err.message, retry_after=retry_after(headers.get("retry-after")), details=err.details)
        if isinstance(err, RateLimited) and err.retry_after is None:
            after = _retry_after_ms(headers.get("retry-after-ms"))
            if after is None:
                resets = [_reset_seconds(headers.get(h)) for h in ("x-ratelimit-reset-requests",
                                                                   "x-ratelimit-reset-tokens")]
                after = max((r for r in resets if r is not None), default=None)
            err = RateLimited(err.message, retry_after=after, details=err.details)
        err.details.update({k: v for k, v in (("vendor_code", exc.code), ("vendor_type", body.get("type")),
                                              ("vendor_param", body.get("param")),
                                              ("request_id", exc.request_id)) if isinstance(v, str)})
        return err
    if isinstance(exc, openai.APIResponseValidationError):
        return ProviderError(f"{provider} answered {exc.status_code} with a body that is not {expected}",
                             details={"provider": provider, "http_status": exc.status_code})
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout(f"{provider} did not answer in time", details={"provider": provider})
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        if isinstance(cause, (httpx2.HTTPError, OSError)):
            return transport_error(cause, provider)
        return ProviderUnavailable(f"{provider} broke the connection off ({type(cause or exc).__name__})",
                                   details={"provider": provider})
    if isinstance(exc, (httpx2.HTTPError, OSError)):
        return transport_error(exc, provider)
    if isinstance(exc, openai.OpenAIError):
        return ProviderError(f"{provider} call failed: {scrub(str(exc), secrets)[:MAX_MESSAGE]}",
                             details={"provider": provider})
    return exc


def _retry_after_ms(value: str | None) -> float | None:
    try:
        return max(0.0, float(value) / 1000) if value else None
    except ValueError:
        return None
