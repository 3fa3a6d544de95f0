"""`removebg`: remove.bg's background removal API, for the `removebg` engine (it generates nothing).

The contract followed, as remove.bg publishes it (its OpenAPI document https://www.remove.bg/api/swagger.yaml,
mirrored as APIs-guru/openapi-directory APIs/remove.bg/1.0.0/openapi.yaml, and the API page
https://www.remove.bg/api):

- `POST {endpoint}/removebg` (endpoint https://api.remove.bg/v1.0) with the key in `X-Api-Key` and a
  multipart/form-data body: the source as `image_file` (binary; `image_url` and `image_file_b64` are the other
  sources, exactly one allowed), `size` (`preview` = up to 0.25 megapixels at 0.25 credits, `full` = the original
  resolution, up to 10 megapixels as PNG, at 1 credit, `auto` = the highest resolution the image and the credits
  allow; `medium`, `hd`, `small`, `regular`, `4k` are accepted aliases), `type` (auto, person, product, car),
  `format` (auto, png, jpg, zip: we ask for `png`, "PNG format with alpha transparency"), `channels` (rgba, the
  default, which we send), `crop` (false by default: we keep the source's framing).
- 200: the image itself, with `X-Credits-Charged` (credits, a float), `X-Width`, `X-Height` (the result's size)
  and `X-Type` (the detected foreground). The cost is X-Credits-Charged x the account's `usd_per_credit`.
- Errors: `{"errors": [{"title", "code", "detail"}]}`. 400 invalid parameters or an unprocessable input
  (`unknown_foreground`, `file_too_large`, `invalid_file_type`, `resolution_too_high`, ...) ->
  ProviderBadRequest with the title and `vendor_code`; 402 insufficient credits -> ProviderQuotaExhausted;
  403 authentication failed -> ProviderAuthFailed; 429 rate limit exceeded, with `Retry-After` (seconds) and
  `X-RateLimit-Limit/-Remaining/-Reset` (a Unix time, used when Retry-After is missing) -> RateLimited; 5xx ->
  ProviderUnavailable. None of the errors is charged.
- `GET {endpoint}/account` (free): `{"data": {"attributes": {"credits": {"total", "subscription", "payg",
  "enterprise"}, "api": {"free_calls", "sizes"}}}}`; the probe of providers.check.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

from iat.errors import ProviderError, RateLimited
from iat.providers.base import Account, CostEstimate, ProviderConfig
from iat.providers.cutout import (
    JPEG_MAGIC, CutoutProvider, CutoutResult, api_key, decoded, header_float, header_int, image_bytes_of, parsed,
)
from iat.providers.http import json_of

CODE = "removebg"
DEFAULT_ENDPOINT = "https://api.remove.bg/v1.0"
Size = Literal["auto", "preview", "full", "small", "regular", "medium", "hd", "4k"]
ForegroundType = Literal["auto", "person", "product", "car"]
PREVIEW_SIZES = ("preview", "small", "regular")  # 0.25 credits; every other size costs 1 credit
PREVIEW_CREDITS, FULL_CREDITS = 0.25, 1.0


class CreditPricing(BaseModel):
    """remove.bg bills credits (X-Credits-Charged); what one costs depends on the plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    usd_per_credit: float = Field(0.20, ge=0, le=100, description="What one remove.bg credit costs on the "
                                                                  "studio's plan (subscriptions ~0.1-0.2 USD)")


class RemoveBgConfig(ProviderConfig):
    """provider_accounts.config_json of `removebg`."""

    endpoint: str = Field(DEFAULT_ENDPOINT, max_length=2048, description="Base URL of the remove.bg API (v1.0)")
    pricing: CreditPricing = Field(default_factory=CreditPricing)  # type: ignore[assignment]
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Limit of one attempt, in seconds")
    size: Size = Field("auto", description="Output resolution: auto (the highest the image and credits allow), "
                                           "preview (0.25 MP, 0.25 credits) or full (1 credit)")
    type: ForegroundType = Field("auto", description="Foreground type: auto, person, product or car")


class RemoveBgOptions(BaseModel):
    """What one call may change of the account's settings (the `removebg` engine's options)."""

    model_config = ConfigDict(extra="forbid")

    size: Size | None = None
    type: ForegroundType | None = None


class RemoveBgProvider(CutoutProvider):
    code = CODE
    config_model = RemoveBgConfig

    def probe(self, account: Account, *, timeout: float) -> dict[str, Any]:
        config = _config(account)
        response = self._request("GET", config.endpoint + "/account", timeout=timeout,
                                 headers={"X-Api-Key": api_key(account, CODE), "Accept": "application/json"})
        body = json_of(response, CODE)
        try:
            attributes = body["data"]["attributes"]
            credits = attributes["credits"]
            return {"endpoint": config.endpoint, "credits": float(credits.get("total", 0)),
                    "subscription_credits": credits.get("subscription"), "payg_credits": credits.get("payg"),
                    "free_calls": attributes.get("api", {}).get("free_calls")}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ProviderError(f"{CODE} answered its account call with a body that is not the documented one",
                                details={"provider": CODE, "http_status": response.status_code}) from None

    def estimate_cutout(self, account: Account | None = None, options: Mapping[str, Any] | None = None) -> CostEstimate:
        config = _config(account or self.default_account())
        size = _options(options).size or config.size
        credits = PREVIEW_CREDITS if size in PREVIEW_SIZES else FULL_CREDITS  # auto: at most the full price
        return CostEstimate(units=credits, cost_usd=credits * config.pricing.usd_per_credit)

    def remove_background(self, image: bytes, filename: str, account: Account, *,
                          options: Mapping[str, Any] | None = None, cancel: threading.Event | None = None,
                          timeout: float | None = None) -> CutoutResult:
        config = _config(account)
        opts = _options(options)
        size = opts.size or config.size
        mime = "image/jpeg" if image.startswith(JPEG_MAGIC) else "image/png"
        fields = {"size": size, "type": opts.type or config.type, "format": "png", "channels": "rgba"}
        response = self._request(
            "POST", config.endpoint + "/removebg", timeout=timeout if timeout is not None else config.timeout_s,
            cancel=cancel, headers={"X-Api-Key": api_key(account, CODE), "Accept": "image/*"},
            data=fields, files={"image_file": (filename, image, mime)})
        data = image_bytes_of(response, CODE)
        img = decoded(data, CODE, response.status_code)
        width = header_int(response.headers, "X-Width") or img.width
        height = header_int(response.headers, "X-Height") or img.height
        charged = header_float(response.headers, "X-Credits-Charged")
        if charged is None:  # not reported: what the size is priced at
            credits, source = self.estimate_cutout(account, options).units, "pricing"
        else:
            credits, source = charged, "vendor"
        usage: dict[str, Any] = {"units": credits, "cost_usd": round(credits * config.pricing.usd_per_credit, 6),
                                 "currency": "USD", "source": source, "credits": credits, "size": size,
                                 "width": width, "height": height}
        if response.headers.get("X-Type"):
            usage["detected_type"] = response.headers["X-Type"]
        return CutoutResult(image=data, width=img.width, height=img.height, usage=usage,
                            http_status=response.status_code)

    # --- errors ---

    def error(self, response) -> ProviderError:
        err = super().error(response)
        limits = {k: response.headers.get(h) for k, h in (("limit", "X-RateLimit-Limit"),
                                                        ("remaining", "X-RateLimit-Remaining"),
                                                        ("reset", "X-RateLimit-Reset")) if response.headers.get(h)}
        if limits:
            err.details["rate_limit"] = limits
        if isinstance(err, RateLimited) and err.retry_after is None and limits.get("reset"):
            reset = header_float(response.headers, "X-RateLimit-Reset")
            if reset is not None:  # when the window opens again
                err.retry_after = err.details["retry_after"] = max(0.0, reset - time.time())
        return err

    def vendor_code(self, response) -> str | None:
        try:
            first = response.json()["errors"][0]
        except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError):
            return None
        return str(first["code"]) if isinstance(first, dict) and first.get("code") else None


def _config(account: Account) -> RemoveBgConfig:
    config = account.config
    return config if isinstance(config, RemoveBgConfig) else RemoveBgConfig.model_validate(
        config.model_dump(exclude_unset=True))


def _options(options: Mapping[str, Any] | None) -> RemoveBgOptions:
    return options if isinstance(options, RemoveBgOptions) else parsed(RemoveBgOptions, options, CODE)
