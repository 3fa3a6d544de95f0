"""The paid background-removal engines (`removebg`, `photoroom`) through the commands every client uses: the
accounts configured with providers.configure and secrets.set, the loopback vendors answering as their contracts
say, every call through the ledger (provider_calls, cost_events), and the chain going on past a vendor's refusal."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iat.app import App
from iat.assets.store import abs_path
from iat.engines.base import EngineContext
from iat.errors import EngineError
from iat.settings import Settings

from support import Client

from vendors import photoroom as pr
from vendors import removebg as rb
from vendors.loopback import Fault, LoopbackServer
from vendors.segment import iou, subject_picture

RB_PATH = "/v1.0/removebg"
PR_PATH = "/v1/segment"


@pytest.fixture
def vendors():
    rb_state, pr_state = rb.RemoveBgState(), pr.PhotoRoomState()
    with LoopbackServer(rb.make_app(rb_state)) as rb_server, LoopbackServer(pr.make_app(pr_state)) as pr_server:
        yield rb_server, rb_state, pr_server, pr_state


@pytest.fixture
def studio(tmp_path, vendors):
    """A project with both paid removers configured on the loopback vendors, their keys stored, and a picture with
    a known subject imported as an asset."""
    rb_server, _, pr_server, _ = vendors
    app = App(Settings.from_env({"IAT_SECRETS_PASSPHRASE": "paid removers tests"}, home=tmp_path / "home"))
    client = Client(app)
    folder = tmp_path / "in"
    folder.mkdir()
    client.call("projects.create", slug="alpha", name="Alpha")
    project = client.call("projects.update", slug="alpha", settings_json={"import_roots": [str(folder)]})
    configure(client, "removebg", endpoint=rb_server.url + "/v1.0", pricing={"usd_per_credit": 0.2})
    configure(client, "photoroom", endpoint=pr_server.url, account_endpoint=pr_server.url)
    client.call("secrets.set", slug="alpha", provider_code="removebg", secret_name="api_key", value=rb.KEY)
    client.call("secrets.set", slug="alpha", provider_code="photoroom", secret_name="api_key", value=pr.KEY)
    picture, truth = subject_picture((320, 240))
    picture.save(folder / "subject.png")
    asset = client.call("assets.import", slug="alpha", paths=[str(folder / "subject.png")])["items"][0]
    yield app, client, project, asset, truth
    app.close()


def configure(client: Client, code: str, **config) -> dict:
    return client.call("providers.configure", slug="alpha", provider_code=code,
                       config={"backoff_s": 0.01, "max_attempts": 2, "timeout_s": 20, **config})


def cut(client: Client, asset: dict, engines: list[str]) -> dict:
    return client.call("images.remove_background", slug="alpha", asset_id=asset["id"], engines=engines)


def calls(client: Client, code: str | None = None) -> list[dict]:
    return client.call("providers.calls", slug="alpha", **({"provider_code": code} if code else {}))["items"]


def costs(client: Client) -> dict:
    return client.call("costs.summary", slug="alpha", group_by="provider")


def cutout_alpha(project: dict, out: dict) -> np.ndarray:
    path = abs_path(Path(project["root_dir"]), out["asset"]["storage_uri"])
    with Image.open(path) as im:
        assert im.mode == "RGBA" and im.size == (320, 240)
        return np.asarray(im.getchannel("A"))


def test_removebg_end_to_end_makes_a_derived_cutout_and_records_the_call_and_its_cost(studio, vendors):
    app, client, project, asset, truth = studio
    _, rb_state, _, _ = vendors
    out = cut(client, asset, ["removebg"])
    assert out["engine"] == "removebg" and out["asset"]["kind"] == "bg_removed"
    (attempt,) = out["attempts"]
    assert attempt["ok"] and attempt["check"]["passed"]
    meta = attempt["meta"]
    assert meta["provider"] == "removebg" and meta["credits"] == 1.0 and meta["cost_usd"] == pytest.approx(0.2)
    assert meta["cost_source"] == "vendor" and meta["resized"] is False
    assert iou(cutout_alpha(project, out), truth) > 0.95
    assert rb_state.received[0]["format"] == "png" and rb_state.subscription == 49.0

    (row,) = calls(client)
    assert (row["provider_code"], row["operation_code"], row["outcome"], row["http_status"]) == (
        "removebg", "remove_background", "ok", 200)
    assert row["meta_json"] == {"engine": "removebg", "request_id": meta["request_id"]}
    summary = costs(client)
    assert summary["events"] == 1 and summary["cost_usd"] == pytest.approx(0.2) and summary["units"] == 1.0
    assert summary["groups"][0]["key"] == "removebg"


def test_out_of_credits_is_recorded_once_and_the_chain_goes_on_to_photoroom(studio, vendors):
    app, client, project, asset, truth = studio
    _, rb_state, _, pr_state = vendors
    rb_state.subscription = 0.0
    out = cut(client, asset, ["removebg", "photoroom"])
    assert out["engine"] == "photoroom"
    first, second = out["attempts"]
    assert first["engine"] == "removebg" and not first["ok"]
    assert first["reason"].startswith("provider_quota_exhausted: removebg answered 402: Insufficient credits")
    assert second["ok"] and second["meta"]["provider"] == "photoroom"
    assert iou(cutout_alpha(project, out), truth) > 0.95

    (failed,) = calls(client, "removebg")  # a 402 is not retried
    assert (failed["outcome"], failed["http_status"], failed["error_code"], failed["attempt"]) == (
        "error", 402, "provider_quota_exhausted", 1)
    (ok,) = calls(client, "photoroom")
    assert ok["outcome"] == "ok" and pr_state.available == 99
    summary = costs(client)
    assert summary["events"] == 1 and summary["cost_usd"] == pytest.approx(0.02)
    assert [g["key"] for g in summary["groups"]] == ["photoroom"]


def test_429_is_retried_up_to_max_attempts_honouring_retry_after_then_the_chain_goes_on(studio, vendors):
    app, client, project, asset, _ = studio
    rb_server, rb_state, _, _ = vendors
    limited = Fault.status(429, json_body={"errors": [{"title": "Rate limit exceeded"}]},
                           headers={"Retry-After": "1", "X-RateLimit-Limit": "500", "X-RateLimit-Remaining": "0",
                                    "X-RateLimit-Reset": str(int(time.time()) + 1)})
    rb_server.faults.add(RB_PATH, limited, limited, limited)
    started = time.monotonic()
    out = cut(client, asset, ["removebg", "photoroom"])
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured between the two attempts
    assert out["engine"] == "photoroom" and out["attempts"][0]["reason"].startswith("rate_limited:")
    tried = sorted(calls(client, "removebg"), key=lambda c: c["attempt"])
    assert [(c["attempt"], c["http_status"], c["error_code"]) for c in tried] == [
        (1, 429, "rate_limited"), (2, 429, "rate_limited")]  # max_attempts 2
    assert len({c["call_id"] for c in tried}) == 1 and tried[0]["meta_json"]["retry_after"] == 1.0
    assert rb_server.faults.pending() == 1 and rb_state.received == []
    assert costs(client)["events"] == 1  # photoroom's


def test_a_429_then_success_is_two_attempts_and_one_cost(studio, vendors):
    app, client, project, asset, _ = studio
    rb_server, _, _, _ = vendors
    rb_server.faults.add(RB_PATH, Fault.status(429, json_body={"errors": [{"title": "Rate limit exceeded"}]},
                                               headers={"Retry-After": "0"}))
    out = cut(client, asset, ["removebg", "photoroom"])
    assert out["engine"] == "removebg" and len(out["attempts"]) == 1
    tried = sorted(calls(client, "removebg"), key=lambda c: c["attempt"])
    assert [c["outcome"] for c in tried] == ["error", "ok"]
    summary = costs(client)
    assert summary["events"] == 1 and summary["cost_usd"] == pytest.approx(0.2)
    assert summary["groups"][0]["key"] == "removebg"


def test_a_rejected_key_is_auth_failed_and_the_chain_goes_on(studio, vendors):
    app, client, project, asset, _ = studio
    client.call("secrets.set", slug="alpha", provider_code="removebg", secret_name="api_key", value="rbg-revoked")
    out = cut(client, asset, ["removebg", "photoroom"])
    assert out["engine"] == "photoroom"
    assert out["attempts"][0]["reason"].startswith("provider_auth_failed: removebg answered 403: API Key invalid")
    (failed,) = calls(client, "removebg")
    assert (failed["http_status"], failed["error_code"]) == (403, "provider_auth_failed")


def test_keys_never_appear_in_answers_records_or_logs(studio, vendors, caplog):
    app, client, project, asset, _ = studio
    caplog.set_level(logging.DEBUG)
    rb_server, _, _, _ = vendors
    rb_server.faults.add(RB_PATH, Fault.status(500, json_body={"errors": [{"title": "Internal Server Error"}]}))
    seen = [cut(client, asset, ["removebg"]), client.call("providers.list", slug="alpha"),
            client.call("providers.check", slug="alpha"), calls(client), costs(client),
            client.call("secrets.list", slug="alpha"), client.call("assets.get", slug="alpha",
                                                                    asset_id=asset["id"]),
            client.call("audit.list", slug="alpha", limit=500)]
    client.call("secrets.set", slug="alpha", provider_code="removebg", secret_name="api_key", value="rbg-revoked-2")
    seen.append(client.error("images.remove_background", slug="alpha", asset_id=asset["id"],
                             engines=["removebg"]).to_object())
    text = json.dumps(seen, default=str) + caplog.text
    for key in (rb.KEY, pr.KEY, "rbg-revoked-2"):
        assert key not in text
    assert "provider_auth_failed" in text  # the last refusal is there, without its key


def test_a_budget_that_cannot_pay_for_the_call_is_the_attempts_reason_and_nothing_is_sent(studio, vendors):
    app, client, project, asset, _ = studio
    rb_server, _, pr_server, _ = vendors
    client.call("projects.update", slug="alpha", settings_json={**project["settings_json"], "budget_usd": 0.1})
    out = cut(client, asset, ["removebg", "photoroom", "key"])
    first, second = out["attempts"]
    assert first["reason"].startswith("budget_exhausted: the project's budget of 0.1 USD cannot pay")
    assert second["ok"] and out["engine"] == "photoroom"  # 0.02 USD fits
    assert rb_server.requests_to(RB_PATH) == 0 and calls(client, "removebg") == []
    client.call("projects.update", slug="alpha", settings_json={**project["settings_json"], "budget_usd": 0.01})
    out = cut(client, asset, ["removebg", "photoroom", "key"])
    assert [a["reason"].split(":")[0] for a in out["attempts"][:2]] == ["budget_exhausted", "budget_exhausted"]
    assert out["engine"] == "key" and pr_server.requests_to(PR_PATH) == 1


def test_an_engine_without_its_key_is_unavailable_and_skipped_without_a_call(studio, vendors):
    app, client, project, asset, _ = studio
    _, _, pr_server, _ = vendors
    client.call("secrets.delete", slug="alpha", provider_code="photoroom", secret_name="api_key")
    out = cut(client, asset, ["photoroom", "removebg"])
    assert out["attempts"][0]["reason"] == ("unavailable: provider photoroom needs the secret(s) api_key; store them "
                                            "with secrets.set")
    assert out["engine"] == "removebg" and pr_server.log == []
    client.call("providers.disable", slug="alpha", provider_code="removebg")
    err = client.error("images.remove_background", slug="alpha", asset_id=asset["id"],
                       engines=["photoroom", "removebg"])
    assert isinstance(err, EngineError) and "disabled" in err.details["attempts"][1]["reason"]


def test_an_empty_mask_and_a_refusal_both_recorded_when_no_engine_succeeds(studio, vendors, tmp_path):
    app, client, project, asset, _ = studio
    folder = Path(project["settings_json"]["import_roots"][0])
    Image.new("RGB", (200, 150), (120, 130, 140)).save(folder / "blank.png")
    blank = client.call("assets.import", slug="alpha", paths=[str(folder / "blank.png")])["items"][0]
    err = client.error("images.remove_background", slug="alpha", asset_id=blank["id"],
                       engines=["photoroom", "removebg"])
    assert isinstance(err, EngineError)
    first, second = err.details["attempts"]
    assert first["engine"] == "photoroom" and first["reason"].startswith("mask rejected:")  # a paid, empty cut-out
    assert second["reason"].startswith("provider_bad_request: removebg answered 400: Could not identify foreground")
    assert costs(client)["events"] == 1  # PhotoRoom charged its image; remove.bg's 400 is free
    assert len(client.call("assets.list", slug="alpha")["items"]) == 2  # nothing written


def test_a_preview_answer_is_scaled_back_to_the_source_size(studio, vendors):
    app, client, project, asset, truth = studio
    folder = Path(project["settings_json"]["import_roots"][0])
    picture, big_truth = subject_picture((900, 660))
    picture.save(folder / "big.png")
    big = client.call("assets.import", slug="alpha", paths=[str(folder / "big.png")])["items"][0]
    configure(client, "removebg", endpoint=vendors[0].url + "/v1.0", size="preview")
    out = cut(client, big, ["removebg"])
    meta = out["attempts"][0]["meta"]
    assert meta["resized"] and meta["vendor_size"][0] * meta["vendor_size"][1] <= 250_000
    assert meta["credits"] == 0.25 and meta["cost_usd"] == pytest.approx(0.05)
    path = abs_path(Path(project["root_dir"]), out["asset"]["storage_uri"])
    with Image.open(path) as im:
        assert im.size == (900, 660) and iou(np.asarray(im.getchannel("A")), big_truth) > 0.93


def test_check_probes_both_accounts_for_free(studio, vendors):
    app, client, project, asset, _ = studio
    rb_server, _, pr_server, _ = vendors
    items = {i["provider_code"]: i for i in client.call("providers.check", slug="alpha")["items"]}
    assert items["removebg"]["ready"] and items["removebg"]["probe"]["info"]["credits"] == 50.0
    assert items["photoroom"]["ready"] and items["photoroom"]["probe"]["info"]["credits"] == 100.0
    assert rb_server.log == [("GET", "/v1.0/account")] and pr_server.log == [("GET", "/v1/account")]
    assert costs(client)["events"] == 0
    listed = {i["provider_code"]: i for i in client.call("providers.list", slug="alpha")["items"]}
    assert listed["removebg"]["operations"] == ["remove_background"]
    assert listed["photoroom"]["operations"] == ["remove_background"] and listed["preview"]["operations"] == [
        "generate"]


def test_a_run_refuses_a_provider_that_does_not_generate(studio):
    app, client, project, asset, _ = studio
    for method in ("runs.start", "runs.plan"):
        err = client.error(method, slug="alpha", provider="removebg", shots=[{"job_key": "s1", "scene": "a fox"}])
        assert err.name == "invalid_params" and "does not generate images" in err.message
        assert err.details["errors"][0]["loc"] == ["provider"]


def test_a_runs_cutout_charges_the_run(studio, vendors):
    app, client, project, asset, _ = studio
    run = client.call("runs.start", slug="alpha", shots=[{"job_key": "s1", "scene": "a red fox", "cutout": True}],
                      candidates=1, stages=["style_lock"], background_engines=["removebg", "key"])
    assert app.runner.wait_idle(120)
    (row, *_rest) = calls(client, "removebg")
    assert row["run_id"] == run["id"] and row["meta_json"]["engine"] == "removebg"
    by_run = client.call("costs.summary", slug="alpha", group_by="run")
    assert run["id"] in [g["key"] for g in by_run["groups"]]


def test_outside_a_project_the_engines_are_unavailable_and_refuse_to_work(studio, tmp_path):
    app = studio[0]
    for code in ("removebg", "photoroom"):
        engine = app.engines.get(code)
        assert engine.op == "remove_background"
        for ctx in (None, EngineContext(app)):
            status = engine.available(ctx)
            assert not status.ready and "project" in status.reason
        with pytest.raises(EngineError):
            engine.process(tmp_path / "x.png", tmp_path / "y.png", {}, ctx=EngineContext(app))
