"""The `photoroom` connector through its real HTTP client against a loopback PhotoRoom segment and account API."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from iat.errors import (
    InvalidParams, ProviderAuthFailed, ProviderBadRequest, ProviderQuotaExhausted, ProviderUnavailable, RateLimited,
)
from iat.providers.base import Account
from iat.providers.photoroom import DEFAULT_ACCOUNT_ENDPOINT, DEFAULT_ENDPOINT, PhotoRoomConfig, PhotoRoomProvider

from vendors import photoroom as vendor
from vendors.loopback import Fault, LoopbackServer
from vendors.segment import iou, png, subject_picture

PATH = "/v1/segment"


@pytest.fixture
def state() -> vendor.PhotoRoomState:
    return vendor.PhotoRoomState()


@pytest.fixture
def server(state):
    with LoopbackServer(vendor.make_app(state)) as srv:
        yield srv


@pytest.fixture
def provider() -> PhotoRoomProvider:
    return PhotoRoomProvider()


def account(server, key: str = vendor.KEY, **config) -> Account:
    return Account("photoroom", PhotoRoomConfig(endpoint=server.url, account_endpoint=server.url, **config),
                   {"api_key": key})


def fails(fn, kind):
    with pytest.raises(kind) as info:
        fn()
    return info.value


def test_a_cutout_sends_the_documented_request_and_costs_one_image(server, state, provider):
    picture, truth = subject_picture((320, 240))
    result = provider.remove_background(png(picture), "shot.png", account(server, pricing={"usd_per_image": 0.03}))
    (sent,) = state.received
    assert sent["fields"] == {"format": "png", "channels": "rgba", "size": "full"}  # no bg_color, no crop
    assert (sent["filename"], sent["content_type"]) == ("shot.png", "image/png")
    with Image.open(io.BytesIO(result.image)) as im:
        assert im.format == "PNG" and im.mode == "RGBA" and im.size == (320, 240)
        assert iou(np.asarray(im.getchannel("A")), truth) > 0.95
    usage = result.usage
    assert (usage["units"], usage["cost_usd"], usage["source"]) == (1.0, 0.03, "pricing")
    assert 0 <= usage["uncertainty"] <= 1  # x-uncertainty-score
    assert state.available == 99


def test_size_and_despill_follow_the_options(server, state, provider):
    picture, _ = subject_picture((800, 600))
    result = provider.remove_background(png(picture), "big.png", account(server, despill=True),
                                        options={"size": "preview"})
    assert state.received[0]["fields"] == {"format": "png", "channels": "rgba", "size": "preview",
                                           "despill": "true"}
    assert result.width * result.height <= 250_000
    fails(lambda: provider.remove_background(png(picture), "x.png", account(server), options={"size": "4k"}),
          InvalidParams)


def test_402_no_credits_left_is_quota_exhausted(server, state, provider):
    state.available = 0
    err = fails(lambda: provider.remove_background(png(subject_picture()[0]), "x.png", account(server)),
                ProviderQuotaExhausted)
    assert err.details["http_status"] == 402 and err.details["vendor_code"] == "payment_required"
    assert "API credits exhausted" in err.message and not err.retryable


def test_403_invalid_key_is_auth_failed_and_the_key_never_shows(server, provider):
    wrong = "sk_pr_wrong_91aa"
    err = fails(lambda: provider.remove_background(png(subject_picture()[0]), "x.png", account(server, key=wrong)),
                ProviderAuthFailed)
    assert err.details["http_status"] == 403 and wrong not in str(err.to_object())


def test_a_body_the_api_cannot_read_is_a_bad_request_with_its_type(server, provider):
    err = fails(lambda: provider.remove_background(b"\x89PNG\r\n\x1a\nbroken", "x.png", account(server)),
                ProviderBadRequest)
    assert err.details["http_status"] == 400 and err.details["vendor_code"] == "invalid_image"


def test_429_and_5xx_are_retryable(server, provider):
    server.faults.add(PATH, Fault.status(429, json_body={"detail": "Too many requests", "status_code": 429,
                                                         "type": "rate_limited"}, headers={"Retry-After": "2"}),
                      Fault.status(502, text="Bad Gateway"))
    err = fails(lambda: provider.remove_background(png(subject_picture()[0]), "x.png", account(server)), RateLimited)
    assert err.retry_after == 2.0 and err.retryable
    err = fails(lambda: provider.remove_background(png(subject_picture()[0]), "x.png", account(server)),
                ProviderUnavailable)
    assert err.details["http_status"] == 502


def test_a_picture_without_a_subject_comes_back_empty(server, provider):
    blank = Image.new("RGB", (200, 150), (120, 130, 140))
    result = provider.remove_background(png(blank), "x.png", account(server))
    with Image.open(io.BytesIO(result.image)) as im:
        assert np.asarray(im.getchannel("A")).max() == 0  # the chain's mask check is what refuses this


def test_the_probe_reads_the_account_on_its_own_host(server, state, provider):
    state.available = 42
    info = provider.probe(account(server), timeout=5)
    assert info["credits"] == 42.0 and server.log == [("GET", "/v1/account")] and state.available == 42
    fails(lambda: provider.probe(account(server, key="nope"), timeout=5), ProviderAuthFailed)


def test_the_defaults_are_the_vendors(provider):
    config = provider.default_account().config
    assert (config.endpoint, config.account_endpoint) == (DEFAULT_ENDPOINT, DEFAULT_ACCOUNT_ENDPOINT)
    assert DEFAULT_ENDPOINT == "https://sdk.photoroom.com" and DEFAULT_ACCOUNT_ENDPOINT == "https://image-api.photoroom.com"
    assert (config.size, config.despill, config.pricing.usd_per_image) == ("full", False, 0.02)
    assert provider.required_secrets == ("api_key",) and provider.operations == ("remove_background",)
    assert provider.estimate().cost_usd == 0.02
    with pytest.raises(ValueError):
        PhotoRoomConfig(account_endpoint="ftp://example.com")
