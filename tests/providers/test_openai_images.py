"""The `openai` connector through its real client code (the openai SDK over httpx2) against the loopback OpenAI
Images API of tests/vendors/openai.py: requests as sent, answers and cost, every failure as its typed error, cancel,
configuration, probe, and runs through the ledger."""

from __future__ import annotations

import io
import math
import threading
import time

import numpy as np
import pytest
from PIL import Image

from iat.app import App
from iat.errors import (
    InvalidParams, ProviderAuthFailed, ProviderBadRequest, ProviderError, ProviderQuotaExhausted, ProviderTimeout,
    ProviderUnavailable, RateLimited,
)
from iat.plugins import LazyRegistry
from iat.providers import default_providers
from iat.providers.accounts import validate_config
from iat.providers.base import Account, Cancelled, GenerateRequest, ImageProvider, encode_png
from iat.providers.openai_images import OpenAIConfig, OpenAIImagesProvider, nearest_size, vision_tokens
from iat.settings import Settings
from support import Client, assert_partial_after_three, finished_run
from vendors.loopback import Fault, LoopbackServer
from vendors.openai import OpenAIState, decoded, error_body, make_app, render

KEY = "sk-test"
PROMPT = "storybook, a red fox in a city street"
# gpt-image-1.5's published list prices, USD per 1M tokens: text input, image input, output.
P15 = (5.0, 8.0, 32.0)


@pytest.fixture
def state() -> OpenAIState:
    return OpenAIState(api_key=KEY)


@pytest.fixture
def server(state):
    with LoopbackServer(make_app(state)) as srv:
        yield srv


@pytest.fixture
def provider() -> OpenAIImagesProvider:
    return OpenAIImagesProvider()


def account(server, secrets=None, **config) -> Account:
    return Account("openai", OpenAIConfig(endpoint=server.url + "/v1", **{"timeout_s": 10, **config}),
                   {"api_key": KEY} if secrets is None else secrets)


def request(*, init=None, width=640, height=384, seed=7, prompt=PROMPT, refs=(), negative="", **extra):
    return GenerateRequest.parse({
        "mode": "img2img" if init is not None else "text2img", "stage": "light_time" if init else "style_lock",
        "prompt": prompt, "negative_prompt": negative, "width": width, "height": height, "seed": seed,
        "init_image": init, "reference_images": [{"data": d, "weight": w} for d, w in refs], **extra})


def png(colour, size=(300, 200), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def pixels(data: bytes | Image.Image) -> np.ndarray:
    im = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
    return np.asarray(im.convert("RGB"), dtype=np.int16)


def cost(text, image, output, prices=P15) -> float:
    return round((text * prices[0] + image * prices[1] + output * prices[2]) / 1e6, 8)


def fails(provider, req, acc, kind, **kw):
    with pytest.raises(kind) as info:
        provider.generate(req, acc, **kw)
    return info.value


# --- success ---


def test_text2img_returns_the_vendors_picture_at_the_requested_size_with_its_token_cost(server, state, provider):
    result = provider.generate(request(), account(server))
    # 640x384 is 5:3: the closest fixed size is 1536x1024, resized to the request with LANCZOS.
    expected = render(PROMPT, "1536x1024").convert("RGB").resize((640, 384), Image.Resampling.LANCZOS)
    assert (result.width, result.height) == (640, 384) and Image.open(io.BytesIO(result.image)).size == (640, 384)
    assert np.array_equal(pixels(result.image), pixels(expected))
    assert result.image == encode_png(Image.open(io.BytesIO(result.image)).convert("RGB"))  # a clean PNG
    assert result.seed == 7 and result.model == "gpt-image-1.5" and result.http_status == 200
    text = math.ceil(len(PROMPT) / 4)
    usage = result.usage
    assert usage["source"] == "vendor" and usage["currency"] == "USD" and usage["vendor_seed"] is False
    assert (usage["text_input_tokens"], usage["image_input_tokens"], usage["output_tokens"]) == (text, 0, 1568)
    assert usage["units"] == usage["total_tokens"] == text + 1568
    assert usage["cost_usd"] == pytest.approx(cost(text, 0, 1568))
    assert usage["vendor_size"] == "1536x1024" and usage["quality"] == "medium"
    sent = state.received[-1]
    assert sent["endpoint"] == "generations"
    assert sent["fields"] == {"model": "gpt-image-1.5", "prompt": PROMPT, "size": "1536x1024", "quality": "medium",
                              "n": 1, "output_format": "png", "background": "opaque", "moderation": "auto"}


def test_no_seed_reports_zero_and_the_vendor_is_never_sent_one(server, state, provider):
    assert provider.generate(request(seed=None), account(server)).seed == 0
    assert "seed" not in state.received[-1]["fields"]


@pytest.mark.parametrize("size,expected", [((512, 512), (1024, 1024)), ((1920, 1080), (1536, 1024)),
                                           ((1080, 1920), (1024, 1536)), ((1100, 1000), (1024, 1024)),
                                           ((300, 900), (1024, 1536))])
def test_the_fixed_size_closest_to_the_requested_aspect_is_asked_for(size, expected):
    assert nearest_size(*size) == expected


def test_configured_quality_background_and_model_are_sent(server, state, provider):
    acc = account(server, quality="high", background="transparent", moderation="low", model="gpt-image-1")
    result = provider.generate(request(width=512, height=512), acc)
    assert state.received[-1]["fields"] == {"model": "gpt-image-1", "prompt": PROMPT, "size": "1024x1024",
                                                "quality": "high", "n": 1, "output_format": "png",
                                                "background": "transparent", "moderation": "low"}
    im = Image.open(io.BytesIO(result.image))
    assert im.mode == "RGBA" and im.getpixel((2, 2))[3] == 0  # the vendor's transparency kept
    text = math.ceil(len(PROMPT) / 4)
    assert result.usage["cost_usd"] == pytest.approx(cost(text, 0, 4160, (5.0, 10.0, 40.0)))  # gpt-image-1 prices


def test_negative_prompt_is_appended_as_avoid(server, state, provider):
    provider.generate(request(negative="blurry, text"), account(server))
    assert state.received[-1]["fields"]["prompt"] == PROMPT + "\n\nAvoid: blurry, text"


def test_img2img_sends_the_init_image_then_references_by_weight_as_image_parts(server, state, provider):
    init = provider.generate(request(), account(server)).image
    red, blue, green = png("red"), png("blue", fmt="JPEG"), png("green")
    result = provider.generate(request(init=init, refs=[(red, 0.5), (blue, 2.0), (green, 0.0)]), account(server))
    sent = state.received[-1]
    assert sent["endpoint"] == "edits"
    names = [(f[0], f[1], f[2]) for f in sent["images"]]
    assert names == [("image[]", "init.png", "image/png"), ("image[]", "reference-1.jpg", "image/jpeg"),
                     ("image[]", "reference-2.png", "image/png")]  # weight 2 first, weight 0 left out
    assert sent["images"][0][3] == init and sent["images"][1][3] == blue and sent["images"][2][3] == red
    assert sent["fields"]["input_fidelity"] == "high" and "moderation" not in sent["fields"]
    assert sent["fields"]["n"] == "1" and sent["fields"]["size"] == "1536x1024"
    # The vendor's edit keeps the init image under its picture: the answer came from what was sent.
    expected = render("storybook, a red fox in a city street", "1536x1024", decoded(sent, 0))
    assert np.array_equal(pixels(result.image),
                          pixels(expected.convert("RGB").resize((640, 384), Image.Resampling.LANCZOS)))
    image_tokens = vision_tokens(640, 384) + 2 * vision_tokens(300, 200)
    assert result.usage["image_input_tokens"] == image_tokens and result.usage["input_images"] == 3
    assert result.usage["cost_usd"] == pytest.approx(cost(math.ceil(len(PROMPT) / 4), image_tokens, 1568))


def test_reference_images_alone_make_an_edit_and_odd_formats_become_png(server, state, provider):
    gif = io.BytesIO()
    Image.new("RGB", (64, 64), "purple").save(gif, format="GIF")
    provider.generate(request(refs=[(gif.getvalue(), 1.0)]), account(server))
    sent = state.received[-1]
    assert sent["endpoint"] == "edits" and [f[1:3] for f in sent["images"]] == [("reference-0.png", "image/png")]
    assert decoded(sent).size == (64, 64)
    with pytest.raises(ProviderBadRequest):
        provider.generate(request(refs=[(b"not a picture", 1.0)]), account(server))


def test_at_most_sixteen_images_go_to_an_edit(server, state, provider):
    refs = [(png((i, i, i), (32, 32)), 0.1 + 0.4 * i) for i in range(20)]
    provider.generate(request(init=png("white"), refs=refs), account(server))
    images = state.received[-1]["images"]
    assert len(images) == 16 and images[0][3] == png("white") and images[1][3] == refs[19][0]


@pytest.mark.parametrize("model,wanted,sent", [("gpt-image-1.5", "high", "high"), ("gpt-image-1", "low", "low"),
                                               ("gpt-image-1-mini", "high", None), ("gpt-image-1-mini", "low", "low"),
                                               ("gpt-image-2", "high", None), ("gpt-image-1.5", None, None)])
def test_input_fidelity_goes_only_to_models_that_take_it(server, state, provider, model, wanted, sent):
    provider.generate(request(init=png("white")), account(server, model=model, input_fidelity=wanted))
    assert state.received[-1]["fields"].get("input_fidelity") == sent


def test_organization_and_project_are_sent_and_nothing_comes_from_the_environment(server, state, provider,
                                                                                  monkeypatch):
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-from-env")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-from-env")
    provider.generate(request(), account(server))
    assert (state.received[-1]["organization"], state.received[-1]["project"]) == (None, None)
    provider.generate(request(), account(server, {"api_key": KEY, "organization": "org-test",
                                                  "project": "proj-1"}))
    assert (state.received[-1]["organization"], state.received[-1]["project"]) == ("org-test", "proj-1")


def test_one_client_per_endpoint_and_credentials_shared_across_threads(server, state, provider):
    acc = account(server)
    results, errors = [], []

    def one(i):
        try:
            results.append(provider.generate(request(prompt=f"fox {i}", width=256, height=256), acc))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 6 and len({r.image for r in results}) == 6
    assert provider._client(acc) is provider._client(account(server))
    assert provider._client(account(server, {"api_key": "sk-other"})) is not provider._client(acc)
    assert len(provider._clients) == 2


# --- cost without usage, and estimates ---


def test_an_answer_without_usage_is_priced_from_the_config(server, state, provider):
    state.omit_usage = True
    result = provider.generate(request(), account(server))
    text = math.ceil(len(PROMPT) / 4)
    assert result.usage["source"] == "pricing" and result.usage["units"] == 1.0
    assert result.usage["cost_usd"] == pytest.approx(cost(text, 0, 1568))  # typical medium 1536x1024
    fixed = provider.generate(request(), account(server, pricing={"usd_per_image": 0.05}))
    assert fixed.usage["cost_usd"] == 0.05 and fixed.usage["source"] == "pricing"


def test_configured_token_prices_replace_the_published_ones(server, provider):
    acc = account(server, pricing={"usd_per_1m_text_input": 1, "usd_per_1m_image_input": 2, "usd_per_1m_output": 3})
    result = provider.generate(request(init=png("white")), acc)
    u = result.usage
    assert u["cost_usd"] == pytest.approx(cost(u["text_input_tokens"], u["image_input_tokens"], u["output_tokens"],
                                               (1, 2, 3)))


def test_estimate_uses_the_typical_tokens_and_counts_auto_quality_as_high(server, provider):
    text = math.ceil(len(PROMPT) / 4)
    est = provider.estimate(request(), account(server))
    assert est.units == text + 1568 and est.cost_usd == pytest.approx(cost(text, 0, 1568))
    auto = provider.estimate(request(width=512, height=512), account(server, quality="auto"))
    assert auto.cost_usd == pytest.approx(cost(text, 0, 4160))
    edit = provider.estimate(request(init=png("white", (640, 384))), account(server))
    assert edit.cost_usd == pytest.approx(cost(text, vision_tokens(640, 384), 1568))
    assert provider.estimate(request()).cost_usd > 0  # the default account prices gpt-image-1.5


# --- failures ---


def test_a_wrong_key_is_auth_failed_and_the_key_never_shows(server, provider):
    wrong = "sk-wrong-key-0123456789abcdef"
    err = fails(provider, request(), account(server, {"api_key": wrong}), ProviderAuthFailed)
    assert err.details["http_status"] == 401 and err.details["vendor_code"] == "invalid_api_key"
    assert "Incorrect API key" in err.message and wrong not in err.message and "cdef" not in err.message
    assert not err.retryable


def test_an_unknown_organization_is_auth_failed(server, provider):
    err = fails(provider, request(), account(server, {"api_key": KEY, "organization": "org-else"}),
                ProviderAuthFailed)
    assert err.details["vendor_code"] == "invalid_organization"


def test_a_model_the_vendor_refuses_is_a_bad_request_with_its_words(server, provider):
    err = fails(provider, request(), account(server, model="gpt-image-9"), ProviderBadRequest)
    assert err.details["http_status"] == 400 and err.details["vendor_param"] == "model"
    assert "Invalid value: 'gpt-image-9'" in err.message and not err.retryable


def test_the_safety_system_refusal_is_a_bad_request(server, provider):
    err = fails(provider, request(prompt="a forbidden-subject"), account(server), ProviderBadRequest)
    assert err.details["vendor_code"] == "moderation_blocked" and "safety system" in err.message


def test_rate_limited_keeps_retry_after_from_the_vendors_headers(server, state, provider):
    state.rate_limited, state.retry_after_s = 1, 3
    err = fails(provider, request(), account(server), RateLimited)
    assert err.retry_after == 3.0 and err.details["http_status"] == 429 and err.retryable
    assert err.details["vendor_code"] == "rate_limit_exceeded"
    assert provider.generate(request(), account(server)).http_status == 200  # the next one goes through


def test_the_accounts_images_per_minute_limit_answers_429_with_the_wait(server, state, provider):
    state.images_per_minute = 1
    provider.generate(request(), account(server))
    err = fails(provider, request(), account(server), RateLimited)
    assert 50 <= err.retry_after <= 60


@pytest.mark.parametrize("headers,after", [({"retry-after-ms": "1500"}, 1.5),
                                           ({"x-ratelimit-reset-requests": "1m30s",
                                             "x-ratelimit-reset-tokens": "20ms"}, 90.0),
                                           ({}, None)])
def test_retry_after_falls_back_to_the_other_rate_limit_headers(server, provider, headers, after):
    body = error_body("Rate limit reached for requests", "requests", None, "rate_limit_exceeded")
    server.faults.add("/v1/images", Fault.status(429, json_body=body, headers=headers))
    assert fails(provider, request(), account(server), RateLimited).retry_after == after


def test_a_rate_limit_whose_message_mentions_billing_is_still_a_rate_limit(server, provider):
    said = ("Rate limit reached for gpt-image-1.5 on requests per min (RPM): Limit 3, Used 3, Requested 1. You can "
            "increase your rate limit by adding a payment method at https://platform.openai.com/account/billing.")
    server.faults.add("/v1/images", Fault.status(429, json_body=error_body(said, "requests", None,
                                                                           "rate_limit_exceeded"),
                                                 headers={"Retry-After": "20"}))
    assert fails(provider, request(), account(server), RateLimited).retry_after == 20.0


def test_insufficient_quota_is_quota_exhausted_not_a_rate_limit(server, state, provider):
    state.quota_exhausted = True
    err = fails(provider, request(), account(server), ProviderQuotaExhausted)
    assert err.details["http_status"] == 429 and err.details["vendor_code"] == "insufficient_quota"
    assert not err.retryable
    state.quota_exhausted = False  # the code decides, whatever the message says
    server.faults.add("/v1/images", Fault.status(429, json_body=error_body("Request denied.", "insufficient_quota",
                                                                           None, "insufficient_quota")))
    fails(provider, request(), account(server), ProviderQuotaExhausted)


def test_a_server_error_is_unavailable_and_retryable(server, state, provider):
    state.server_errors = 1
    err = fails(provider, request(), account(server), ProviderUnavailable)
    assert err.details["http_status"] == 500 and err.retryable and "server had an error" in err.message


@pytest.mark.parametrize("fault", [Fault.malformed(), Fault.status(200, text="<html>maintenance</html>"),
                                   Fault.status(200, json_body={"created": 1, "data": []}),
                                   Fault.status(200, json_body={"created": 1, "data": [{"b64_json": "!!notb64"}]}),
                                   Fault.status(200, json_body={"created": 1, "data": [{"b64_json": "aGVsbG8="}]})],
                         ids=["malformed", "html", "no-image", "bad-base64", "not-an-image"])
def test_a_broken_answer_is_a_provider_error_with_its_status(server, provider, fault):
    server.faults.add("/v1/images", fault)
    err = fails(provider, request(), account(server), ProviderError)
    assert type(err) is ProviderError and err.details["http_status"] == 200 and not err.retryable


@pytest.mark.parametrize("fault", [Fault.truncate(), Fault.drop()], ids=["truncated", "dropped"])
def test_a_cut_off_answer_is_unavailable(server, provider, fault):
    server.faults.add("/v1/images", fault)
    assert fails(provider, request(), account(server), ProviderUnavailable).retryable


def test_a_slow_server_is_a_timeout_within_the_attempts_limit(server, provider):
    server.faults.add("/v1/images", Fault.delay(5))
    started = time.monotonic()
    fails(provider, request(), account(server), ProviderTimeout, timeout=0.5)
    assert time.monotonic() - started < 3


def test_a_server_that_is_not_running_is_unavailable(provider):
    with LoopbackServer(make_app(OpenAIState())) as gone:
        endpoint = gone.url
    acc = Account("openai", OpenAIConfig(endpoint=endpoint + "/v1", timeout_s=5), {"api_key": KEY})
    err = fails(provider, request(), acc, ProviderUnavailable)
    assert "not reachable" in err.message


def test_no_key_or_no_prompt_sends_nothing(server, state, provider):
    acc = account(server, {})
    assert not provider.status(acc).ready and "api_key" in provider.status(acc).reason
    with pytest.raises(ProviderError):
        provider.generate(request(), acc)
    with pytest.raises(ProviderBadRequest):
        provider.generate(request(prompt=""), account(server))
    assert server.requests_to("/v1") == 0


# --- cancel ---


def test_cancel_while_waiting_stops_at_once(server, provider):
    server.faults.add("/v1/images", Fault.delay(5))
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    fails(provider, request(), account(server), Cancelled, cancel=cancel)
    assert time.monotonic() - started < 2


def test_cancel_before_the_call_sends_nothing(server, provider):
    cancel = threading.Event()
    cancel.set()
    fails(provider, request(), account(server), Cancelled, cancel=cancel)
    assert server.requests_to("/v1") == 0


# --- configuration, probe, registry ---


def test_configuration_is_validated_with_the_vendors_defaults(provider):
    defaults = provider.default_account().config
    assert defaults.endpoint == "https://api.openai.com/v1" and defaults.model == "gpt-image-1.5"
    assert provider.required_secrets == ("api_key",)
    assert provider.optional_secrets == ("organization", "project")
    for bad in ({"endpoint": "ftp://example.com"}, {"endpont": "https://x"}, {"quality": "ultra"},
                {"pricing": {"usd_per_1m_output": -1}}, {"pricing": {"per_token": 1}}, {"background": "none"}):
        with pytest.raises(InvalidParams):
            validate_config(provider, bad)
    good = validate_config(provider, {"endpoint": "http://127.0.0.1:9/v1/", "quality": "low"})
    assert good.endpoint == "http://127.0.0.1:9/v1" and good.quality == "low"


def test_probe_retrieves_the_model_for_free(server, state, provider):
    assert provider.probe(account(server), timeout=5) == {"endpoint": server.url + "/v1", "model": "gpt-image-1.5",
                                                          "owned_by": "system"}
    assert server.log[-1] == ("GET", "/v1/models/gpt-image-1.5") and state.received == []
    assert fails_probe(provider, account(server, model="nope"), ProviderBadRequest).details["http_status"] == 404
    assert fails_probe(provider, account(server, {"api_key": "sk-bad"}), ProviderAuthFailed)


def fails_probe(provider, acc, kind):
    with pytest.raises(kind) as info:
        provider.probe(acc, timeout=5)
    return info.value


def test_registered_as_openai():
    registry: LazyRegistry[ImageProvider] = LazyRegistry("provider", default_providers())
    provider = registry.get("openai")
    assert isinstance(provider, ImageProvider) and isinstance(provider, OpenAIImagesProvider)


# --- runs through the ledger ---


@pytest.fixture
def studio(tmp_path, server):
    """An App whose secrets are sealed with a passphrase (no keyring needed), a project using the loopback server."""
    app = App(Settings.from_env({"IAT_SECRETS_PASSPHRASE": "openai connector tests"}, home=tmp_path / "home"))
    client = Client(app)
    client.call("projects.create", slug="alpha", name="Alpha")
    client.call("providers.configure", slug="alpha", provider_code="openai",
                config={"endpoint": server.url + "/v1", "backoff_s": 0.01, "timeout_s": 20})
    client.call("secrets.set", slug="alpha", provider_code="openai", secret_name="api_key", value=KEY)
    yield app, client
    app.close()


def _run(app, client, **params) -> tuple[dict, list[dict], list[dict], dict]:
    return finished_run(app, client, "openai", **params)


def state_url(client) -> str:
    """The loopback endpoint the project is configured with."""
    return client.call("providers.get", slug="alpha", provider_code="openai")["config"]["endpoint"]


def test_a_run_records_provider_model_seed_and_cost_of_every_candidate(studio, state):
    app, client = studio
    assert client.call("providers.check", slug="alpha", provider_code="openai")["items"][0]["ready"]
    run, candidates, calls, costs = _run(
        app, client, shots=[{"job_key": "s1", "scene": "a fox in the street"},
                            {"job_key": "s2", "scene": "a fox on a roof"}],
        candidates=2, stages=["style_lock", "light_time"])
    assert run["status"] == "done" and run["provider_code"] == "openai" and run["model_name"] == "gpt-image-1.5"
    assert [e["endpoint"] for e in state.received].count("edits") == 4  # light_time edits the style-lock output
    assert len(candidates) == 4 and len(calls) == 8 and {c["outcome"] for c in calls} == {"ok"}
    total = 0.0
    for cand in candidates:
        meta = cand["meta_json"]
        assert meta["provider"] == "openai" and meta["model"] == "gpt-image-1.5" and meta["seed"] > 0
        assert [s["stage"] for s in meta["stages"]] == ["style_lock", "light_time"]
        for stage in meta["stages"]:
            assert stage["usage"]["source"] == "vendor" and stage["usage"]["vendor_seed"] is False
        assert meta["stages"][1]["usage"]["image_input_tokens"] > 0  # the init image was sent and counted
        assert meta["cost_usd"] == pytest.approx(sum(s["usage"]["cost_usd"] for s in meta["stages"]), abs=1e-6)
        total += meta["cost_usd"]
    assert costs["events"] == 8 and costs["groups"][0]["key"] == run["id"]
    assert costs["cost_usd"] == pytest.approx(total, abs=1e-5)


def test_a_server_failing_halfway_ends_the_run_partial_with_every_failed_attempt_recorded(studio, state):
    app, client = studio
    client.call("providers.configure", slug="alpha", provider_code="openai",
                config={"endpoint": state_url(client), "backoff_s": 0.01, "max_attempts": 2, "concurrency": 1})
    state.fail_after = 3  # three images, then 500 for everything
    run, candidates, calls, costs = _run(
        app, client, shots=[{"job_key": "s1", "scene": "a fox"}, {"job_key": "s2", "scene": "a cat"}],
        candidates=1, stages=["style_lock", "light_time"])
    assert_partial_after_three(run, candidates, calls, costs)


def test_429_with_retry_after_then_500_then_success_is_three_attempts_and_one_cost(studio, state):
    app, client = studio
    state.rate_limited, state.retry_after_s, state.server_errors = 1, 1, 1
    started = time.monotonic()
    run, candidates, calls, costs = _run(app, client, shots=[{"job_key": "s1", "scene": "a fox"}], candidates=1,
                                         stages=["style_lock"])
    assert run["status"] == "done" and time.monotonic() - started >= 1.0  # Retry-After was honoured
    calls = sorted(calls, key=lambda c: c["attempt"])
    assert [(c["attempt"], c["outcome"], c["http_status"], c["error_code"]) for c in calls] == [
        (1, "error", 429, "rate_limited"), (2, "error", 500, "provider_unavailable"), (3, "ok", 200, None)]
    assert len({c["call_id"] for c in calls}) == 1 and calls[0]["meta_json"]["retry_after"] == 1.0
    assert costs["events"] == 1
    assert costs["cost_usd"] == pytest.approx(candidates[0]["meta_json"]["cost_usd"], abs=1e-6)
