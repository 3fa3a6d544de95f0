"""The `removebg` connector through its real HTTP client against a loopback remove.bg API v1.0 (tests/vendors)."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from iat.errors import (
    InvalidParams, ProviderAuthFailed, ProviderBadRequest, ProviderError, ProviderQuotaExhausted, ProviderTimeout,
    ProviderUnavailable, RateLimited,
)
from iat.providers.base import Account, Cancelled
from iat.providers.removebg import DEFAULT_ENDPOINT, RemoveBgConfig, RemoveBgProvider

from vendors import removebg as vendor
from vendors.loopback import Fault, LoopbackServer
from vendors.segment import iou, jpeg, png, subject_picture

PATH = "/v1.0/removebg"


@pytest.fixture
def state() -> vendor.RemoveBgState:
    return vendor.RemoveBgState()


@pytest.fixture
def server(state):
    with LoopbackServer(vendor.make_app(state)) as srv:
        yield srv


@pytest.fixture
def provider() -> RemoveBgProvider:
    return RemoveBgProvider()


def account(server, key: str = vendor.KEY, **config) -> Account:
    return Account("removebg", RemoveBgConfig(endpoint=server.url + "/v1.0", **config), {"api_key": key})


def alpha(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == "RGBA"
        return np.asarray(im.getchannel("A"))


def fails(fn, kind):
    with pytest.raises(kind) as info:
        fn()
    return info.value


# --- the request and its answer ---


def test_a_cutout_sends_the_documented_request_and_reads_credits_from_the_answer(server, state, provider):
    picture, truth = subject_picture((320, 240))
    result = provider.remove_background(png(picture), "shot.png", account(server, pricing={"usd_per_credit": 0.18}))

    (sent,) = state.received
    assert sent["fields"] == ["channels", "format", "image_file", "size", "type"]  # one source: the file
    assert (sent["size"], sent["format"], sent["channels"], sent["type"]) == ("auto", "png", "rgba", "auto")
    assert (sent["filename"], sent["content_type"]) == ("shot.png", "image/png")
    assert sent["crop"] is None  # the source's framing is kept

    assert (result.width, result.height, result.http_status) == (320, 240, 200)
    assert iou(alpha(result.image), truth) > 0.95  # the vendor's real cut-out came back whole
    usage = result.usage
    assert usage["credits"] == 1.0 and usage["units"] == 1.0 and usage["source"] == "vendor"  # X-Credits-Charged
    assert usage["cost_usd"] == pytest.approx(0.18) and usage["currency"] == "USD"
    assert (usage["width"], usage["height"], usage["detected_type"]) == (320, 240, "product")
    assert state.subscription == 49.0


def test_preview_size_costs_a_quarter_credit_and_comes_back_at_a_quarter_megapixel(server, state, provider):
    picture, _ = subject_picture((800, 600))
    acct = account(server, size="preview", pricing={"usd_per_credit": 0.2})
    assert provider.estimate_cutout(acct).units == 0.25 and provider.estimate_cutout(acct).cost_usd == 0.05
    result = provider.remove_background(png(picture), "big.png", acct)
    assert result.width * result.height <= 250_000 and abs(result.width / result.height - 800 / 600) < 0.01
    assert result.usage["credits"] == 0.25 and result.usage["cost_usd"] == pytest.approx(0.05)
    assert state.received[0]["size"] == "preview"


def test_call_options_override_the_account_and_a_jpeg_goes_as_a_jpeg(server, state, provider):
    picture, truth = subject_picture((240, 180))
    result = provider.remove_background(jpeg(picture, 95), "shot.jpg", account(server),
                                        options={"size": "full", "type": "person"})
    sent = state.received[0]
    assert (sent["size"], sent["type"], sent["content_type"]) == ("full", "person", "image/jpeg")
    assert result.usage["detected_type"] == "person"
    assert iou(alpha(result.image), truth) > 0.9  # JPEG's loss only


def test_bad_options_are_invalid_params_before_anything_is_sent(server, state, provider):
    err = fails(lambda: provider.remove_background(b"", "x.png", account(server), options={"size": "huge"}),
                InvalidParams)
    assert err.details["errors"][0]["loc"] == "size"
    fails(lambda: provider.remove_background(b"", "x.png", account(server), options={"crop": True}), InvalidParams)
    assert server.log == []


# --- the vendor's refusals ---


def test_402_insufficient_credits_is_quota_exhausted_and_not_retryable(server, state, provider):
    state.subscription = 0.0
    picture, _ = subject_picture()
    err = fails(lambda: provider.remove_background(png(picture), "x.png", account(server)), ProviderQuotaExhausted)
    assert err.details["http_status"] == 402 and "Insufficient credits" in err.message
    assert not err.retryable and state.received == []


def test_a_wrong_key_is_auth_failed_and_the_key_never_shows(server, state, provider):
    wrong = "rbg-wrong-key-0d2e"
    picture, _ = subject_picture()
    err = fails(lambda: provider.remove_background(png(picture), "x.png", account(server, key=wrong)),
                ProviderAuthFailed)
    assert err.details["http_status"] == 403 and "API Key invalid" in err.message and not err.retryable
    assert wrong not in str(err.to_object()) and vendor.KEY not in str(err.to_object())


def test_a_picture_without_foreground_is_a_bad_request_with_the_vendors_code(server, state, provider):
    blank = Image.new("RGB", (200, 150), (120, 130, 140))
    err = fails(lambda: provider.remove_background(png(blank), "x.png", account(server)), ProviderBadRequest)
    assert err.details["http_status"] == 400 and err.details["vendor_code"] == "unknown_foreground"
    assert "Could not identify foreground" in err.message and not err.retryable
    assert state.subscription == 50.0  # a 400 charges nothing


def test_a_file_the_vendor_does_not_take_is_a_bad_request_naming_its_type(server, provider):
    buf = io.BytesIO()
    subject_picture()[0].save(buf, format="WEBP")
    err = fails(lambda: provider.remove_background(buf.getvalue(), "x.webp", account(server)), ProviderBadRequest)
    assert err.details["vendor_code"] == "invalid_file_type"


def test_429_carries_retry_after_and_the_rate_limit_headers(server, state, provider):
    state.per_minute = 1
    picture, _ = subject_picture()
    acct = account(server)
    provider.remove_background(png(picture), "x.png", acct)
    err = fails(lambda: provider.remove_background(png(picture), "x.png", acct), RateLimited)
    assert err.retryable and err.details["http_status"] == 429 and "Rate limit exceeded" in err.message
    assert 0 < err.retry_after <= 60
    limits = err.details["rate_limit"]
    assert limits["limit"] == "1" and limits["remaining"] == "0" and int(limits["reset"]) > time.time() - 1


def test_a_429_without_retry_after_waits_until_the_rate_limit_resets(server, provider):
    reset = int(time.time()) + 7
    server.faults.add(PATH, Fault.status(429, json_body={"errors": [{"title": "Rate limit exceeded"}]},
                                         headers={"X-RateLimit-Limit": "500", "X-RateLimit-Remaining": "0",
                                                  "X-RateLimit-Reset": str(reset)}))
    err = fails(lambda: provider.remove_background(png(subject_picture()[0]), "x.png", account(server)), RateLimited)
    assert 5 <= err.retry_after <= 7


@pytest.mark.parametrize("fault, kind", [
    (Fault.status(500, json_body={"errors": [{"title": "Internal Server Error"}]}), ProviderUnavailable),
    (Fault.status(503, text="upstream unavailable"), ProviderUnavailable),
    (Fault.drop(), ProviderUnavailable),
    (Fault.truncate(), ProviderUnavailable),
])
def test_server_and_transport_failures_are_retryable(server, provider, fault, kind):
    server.faults.add(PATH, fault)
    err = fails(lambda: provider.remove_background(png(subject_picture()[0]), "x.png", account(server)), kind)
    assert err.retryable


def test_a_200_that_is_not_an_image_is_a_provider_error_not_retried(server, provider):
    server.faults.add(PATH, Fault.status(200, json_body={"data": {"result_b64": "not what we asked for"}}))
    err = fails(lambda: provider.remove_background(png(subject_picture()[0]), "x.png", account(server)),
                ProviderError)
    assert type(err) is ProviderError and not err.retryable and err.details["http_status"] == 200


def test_an_answer_slower_than_the_attempts_time_limit_is_a_timeout(server, provider):
    server.faults.add(PATH, Fault.delay(3.0))
    started = time.monotonic()
    fails(lambda: provider.remove_background(png(subject_picture()[0]), "x.png", account(server), timeout=0.5),
          ProviderTimeout)
    assert time.monotonic() - started < 2.5


def test_a_cancel_ends_the_call_while_the_vendor_works(server, provider):
    server.faults.add(PATH, Fault.delay(3.0))
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    fails(lambda: provider.remove_background(png(subject_picture()[0]), "x.png", account(server), cancel=cancel),
          Cancelled)
    assert time.monotonic() - started < 1.5


# --- the account, the configuration ---


def test_the_probe_reads_the_free_account_call(server, state, provider):
    state.payg = 12.5
    info = provider.probe(account(server), timeout=5)
    assert info["credits"] == 62.5 and info["payg_credits"] == 12.5 and info["free_calls"] == 50
    assert server.log == [("GET", "/v1.0/account")] and state.subscription == 50.0  # nothing spent
    fails(lambda: provider.probe(account(server, key="nope"), timeout=5), ProviderAuthFailed)


def test_the_defaults_are_the_vendors_and_the_key_is_required(provider):
    config = provider.default_account().config
    assert config.endpoint == DEFAULT_ENDPOINT == "https://api.remove.bg/v1.0"
    assert (config.size, config.type, config.pricing.usd_per_credit) == ("auto", "auto", 0.2)
    assert provider.required_secrets == ("api_key",) and provider.operations == ("remove_background",)
    assert not provider.status(provider.default_account()).ready
    assert provider.status(Account("removebg", config, {"api_key": "k"})).ready
    assert provider.estimate().units == 1.0  # auto: at most a full credit
    with pytest.raises(ValueError):
        RemoveBgConfig(size="gigantic")
    with pytest.raises(ValueError):
        RemoveBgConfig(pricing={"usd_per_image": 1.0})  # remove.bg bills credits
