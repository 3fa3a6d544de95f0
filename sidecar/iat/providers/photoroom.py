"""`photoroom`: PhotoRoom's Remove Background API (Basic plan), for the `photoroom` engine (it generates nothing).

The contract followed, as PhotoRoom documents it (https://docs.photoroom.com, "Remove Background API (Basic plan)"
and "Account Details v1"; its OpenAPI document as vendored in tryAGI/Photoroom src/libs/Photoroom/openapi.yaml;
the official samples in Photoroom/api-code-samples Python/remove_background.py):

- `POST https://sdk.photoroom.com/v1/segment` with the key in `x-api-key` and a multipart/form-data body:
  `image_file` (required), `format` (png, the default, jpg or webp), `channels` (rgba, the default, or alpha),
  `bg_color` (hex or HTML colour: makes the result opaque, so never sent), `size` (preview 0.25 MP, medium
  1.5 MP, hd 4 MP, full 36 MP, the default), `crop` ("true"/"false", default false: we keep the source's framing),
  `despill` ("true"/"false": removes a green screen's reflections).
- 200: the image (image/png), with `x-uncertainty-score` (0 confident .. 1 unsure; -1 when the image holds
  people). Billing is per image (Basic plan: 0.02 USD per image), so the cost is the account's usd_per_image.
- Errors: `{"detail", "status_code", "type"}` (e.g. 400 `missing_image` "Please provide an image."); 402 when
  the API credits are exhausted -> ProviderQuotaExhausted; 403 a missing or invalid key -> ProviderAuthFailed;
  429 -> RateLimited (with Retry-After when sent); 5xx -> ProviderUnavailable; other 4xx -> ProviderBadRequest,
  the body's `type` as `vendor_code`.
- `GET https://image-api.photoroom.com/v1/account` (free, another host than the segment call, hence
  `account_endpoint`): `{"credits": {"available", "subscription"}}`; the probe of providers.check.
"""

from __future__ import annotations

import threading
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from iat.errors import ProviderError
from iat.providers.base import Account, CostEstimate, Pricing, ProviderConfig, _http_url
from iat.providers.cutout import (
    JPEG_MAGIC, CutoutProvider, CutoutResult, api_key, decoded, header_float, image_bytes_of, parsed,
)
from iat.providers.http import json_of

CODE = "photoroom"
DEFAULT_ENDPOINT = "https://sdk.photoroom.com"
DEFAULT_ACCOUNT_ENDPOINT = "https://image-api.photoroom.com"
Size = Literal["preview", "medium", "hd", "full"]


class PhotoRoomPricing(Pricing):
    usd_per_image: float = Field(0.02, ge=0, le=1000, description="Cost of one cut-out (Basic plan: 0.02 USD)")


class PhotoRoomConfig(ProviderConfig):
    """provider_accounts.config_json of `photoroom`."""

    endpoint: str = Field(DEFAULT_ENDPOINT, max_length=2048, description="Base URL of the segment API (/v1/segment)")
    account_endpoint: str = Field(DEFAULT_ACCOUNT_ENDPOINT, max_length=2048,
                                  description="Base URL of the account API (/v1/account, the free probe)")
    pricing: PhotoRoomPricing = Field(default_factory=PhotoRoomPricing)
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Limit of one attempt, in seconds")
    size: Size = Field("full", description="Output resolution: preview (0.25 MP), medium (1.5 MP), hd (4 MP) or "
                                           "full (up to 36 MP)")
    despill: bool = Field(False, description="Remove a green screen's coloured reflections from the subject")

    @field_validator("account_endpoint")
    @classmethod
    def _account_endpoint(cls, value: str) -> str:
        return _http_url(value)


class PhotoRoomOptions(BaseModel):
    """What one call may change of the account's settings (the `photoroom` engine's options)."""

    model_config = ConfigDict(extra="forbid")

    size: Size | None = None
    despill: bool | None = None


class PhotoRoomProvider(CutoutProvider):
    code = CODE
    config_model = PhotoRoomConfig

    def probe(self, account: Account, *, timeout: float) -> dict[str, Any]:
        config = _config(account)
        response = self._request("GET", config.account_endpoint + "/v1/account", timeout=timeout,
                                 headers={"x-api-key": api_key(account, CODE), "Accept": "application/json"})
        body = json_of(response, CODE)
        try:
            credits = body["credits"]
            return {"endpoint": config.endpoint, "credits": float(credits["available"]),
                    "subscription_credits": credits.get("subscription")}
        except (KeyError, TypeError, ValueError):
            raise ProviderError(f"{CODE} answered its account call with a body that is not the documented one",
                                details={"provider": CODE, "http_status": response.status_code}) from None

    def estimate_cutout(self, account: Account | None = None, options: Mapping[str, Any] | None = None) -> CostEstimate:
        config = _config(account or self.default_account())
        return CostEstimate(units=1.0, cost_usd=config.pricing.usd_per_image)

    def remove_background(self, image: bytes, filename: str, account: Account, *,
                          options: Mapping[str, Any] | None = None, cancel: threading.Event | None = None,
                          timeout: float | None = None) -> CutoutResult:
        config = _config(account)
        opts = parsed(PhotoRoomOptions, options, CODE) if not isinstance(options, PhotoRoomOptions) else options
        size = opts.size or config.size
        fields = {"format": "png", "channels": "rgba", "size": size}
        if opts.despill if opts.despill is not None else config.despill:
            fields["despill"] = "true"
        mime = "image/jpeg" if image.startswith(JPEG_MAGIC) else "image/png"
        response = self._request(
            "POST", config.endpoint + "/v1/segment", timeout=timeout if timeout is not None else config.timeout_s,
            cancel=cancel, headers={"x-api-key": api_key(account, CODE), "Accept": "image/png, image/*"},
            data=fields, files={"image_file": (filename, image, mime)})
        data = image_bytes_of(response, CODE)
        img = decoded(data, CODE, response.status_code)
        usage: dict[str, Any] = {"units": 1.0, "cost_usd": config.pricing.usd_per_image, "currency": "USD",
                                 "source": "pricing", "size": size, "width": img.width, "height": img.height}
        score = header_float(response.headers, "x-uncertainty-score")
        if score is not None:
            usage["uncertainty"] = score  # -1: people in the picture, no estimate
        return CutoutResult(image=data, width=img.width, height=img.height, usage=usage,
                            http_status=response.status_code)

    def vendor_code(self, response) -> str | None:
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            return None
        found = body.get("type") if isinstance(body, dict) else None
        return str(found) if isinstance(found, str) and found else None


def _config(account: Account) -> PhotoRoomConfig:
    config = account.config
    return config if isinstance(config, PhotoRoomConfig) else PhotoRoomConfig.model_validate(
        config.model_dump(exclude_unset=True))
