"""Which upscaler images.upscale and a run's post-processing use, through the in-process client: `auto` is onnx_sr
when an installed super-resolution model suits the factor and lanczos otherwise; an explicit onnx_sr with no model
is a typed error that writes nothing; a run resolves the engine at start and records the model (name and sha256)
in its snapshot and in every upscaled asset, and its replay is refused once that model is gone or changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iat.assets.store import abs_path
from tests.onnx_models import install
from tests.onnx_models.superres import conv_depth_to_space

from support import Client

WAIT_S = 240
SHOT = {"job_key": "street", "scene": "a quiet street"}


def add_model(app, tmp_path: Path, scale: int, name: str | None = None, seed: int = 0):
    return install(app.models, conv_depth_to_space(scale, layers=3, seed=seed), name or f"sr{scale}",
                   "super_resolution", tmp_path)


def imported(client: Client, src: Path) -> dict:
    path = src / "pic.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
    return client.call("assets.import", slug="alpha", paths=[str(path)])["items"][0]


def n_assets(client: Client) -> int:
    return len(client.call("assets.list", slug="alpha", limit=500)["items"])


def test_images_upscale_picks_onnx_sr_when_a_model_suits_else_lanczos(app, client: Client, alpha: dict, src: Path,
                                                                      tmp_path: Path):
    source = imported(client, src)
    out = client.call("images.upscale", slug="alpha", asset_id=source["id"], factor=2)   # no model: the fallback
    assert (out["engine"], out["model"]) == ("lanczos", None)
    before = n_assets(client)
    err = client.error("images.upscale", slug="alpha", asset_id=source["id"], factor=2, engine="onnx_sr")
    assert err.name == "conflict" and err.details["reason"] == "no_model"
    for engine in ("key", "nope"):
        assert client.error("images.upscale", slug="alpha", asset_id=source["id"], factor=2,
                            engine=engine).name == "invalid_params"
    assert n_assets(client) == before

    model = add_model(app, tmp_path, 2)
    out = client.call("images.upscale", slug="alpha", asset_id=source["id"], factor=2)
    asset = out["asset"]
    assert (out["engine"], out["model"]) == ("onnx_sr", "sr2")
    assert (asset["width"], asset["height"]) == (160, 120)
    meta = asset["metadata_json"]
    assert (meta["engine"], meta["model"], meta["sha256"], meta["scale"]) == ("onnx_sr", "sr2",
                                                                             model.entry.sha256, 2)
    assert client.call("images.upscale", slug="alpha", asset_id=source["id"], factor=2,
                       engine="lanczos")["engine"] == "lanczos"
    # factor 3 has no model of scale >= 3: auto falls back, an explicit onnx_sr is refused
    assert client.call("images.upscale", slug="alpha", asset_id=source["id"], factor=3)["engine"] == "lanczos"
    assert client.error("images.upscale", slug="alpha", asset_id=source["id"], factor=3,
                        engine="onnx_sr").name == "conflict"


def _finished(app, client: Client, **params) -> dict:
    run = client.call("runs.start", slug="alpha", shots=[SHOT], candidates=1, stages=["style_lock"], seed=5,
                      **params)
    assert app.runner.wait_idle(WAIT_S), "the run did not finish"
    return client.call("runs.get", slug="alpha", run_id=run["id"])


def _final(client: Client, alpha: dict, run: dict) -> tuple[dict, dict]:
    (cand,) = client.call("candidates.list", slug="alpha", run_id=run["id"])["items"]
    assets = {a["id"]: a for a in client.call("assets.list", slug="alpha", limit=500)["items"]}
    return cand, assets[cand["final_asset_id"]]


def test_a_run_upscales_with_the_model_it_recorded_and_replays_only_with_it(app, client: Client, alpha: dict,
                                                                           tmp_path: Path):
    model = add_model(app, tmp_path, 2)
    run = _finished(app, client, upscale_factor=2)
    assert run["status"] == "done"
    post = run["settings_snapshot_json"]["post"]
    assert (post["upscale_engine"], post["upscale_model"], post["upscale_model_sha256"]) == (
        "onnx_sr", "sr2", model.entry.sha256)
    cand, final = _final(client, alpha, run)
    step = next(s for s in cand["meta_json"]["post"] if s["step"] == "upscale")
    assert (step["engine"], step["model"], step["sha256"]) == ("onnx_sr", "sr2", model.entry.sha256)
    assert final["kind"] == "final" and (final["width"], final["height"]) == (2 * 768, 2 * 512)
    assert (final["metadata_json"]["model"], final["metadata_json"]["sha256"]) == ("sr2", model.entry.sha256)

    replayed = client.call("runs.replay", slug="alpha", run_id=run["id"])   # the same model: the same bytes
    assert app.runner.wait_idle(WAIT_S)
    _, again = _final(client, alpha, client.call("runs.get", slug="alpha", run_id=replayed["id"]))
    assert again["sha256"] == final["sha256"]

    app.models.remove("sr2")
    err = client.error("runs.replay", slug="alpha", run_id=run["id"])
    assert err.name == "conflict" and err.details["reason"] == "model_missing" and err.details["model"] == "sr2"
    add_model(app, tmp_path, 2, seed=7)   # another file under the same name
    err = client.error("runs.replay", slug="alpha", run_id=run["id"])
    assert err.name == "conflict" and err.details["reason"] == "model_changed"


def test_a_run_without_a_suitable_model_falls_back_or_is_refused(app, client: Client, alpha: dict, tmp_path: Path):
    before = client.call("runs.list", slug="alpha")["items"]
    for method in ("runs.plan", "runs.start"):
        err = client.error(method, slug="alpha", shots=[SHOT], upscale_factor=2, upscale_engine="onnx_sr")
        assert err.name == "conflict" and "upscale_engine" in err.message and err.details["reason"] == "no_model"
    assert client.error("runs.plan", slug="alpha", shots=[SHOT], upscale_factor=2,
                        upscale_engine="key").name == "invalid_params"   # not an upscaler
    assert client.call("runs.list", slug="alpha")["items"] == before
    add_model(app, tmp_path, 2)
    planned = client.call("runs.plan", slug="alpha", shots=[SHOT], upscale_factor=4)   # 2x cannot make 4x
    assert planned["run"]["settings_snapshot_json"]["post"]["upscale_engine"] == "lanczos"
    planned = client.call("runs.plan", slug="alpha", shots=[SHOT], upscale_factor=2, upscale_engine="lanczos")
    assert planned["run"]["settings_snapshot_json"]["post"]["upscale_model"] is None
    run = _finished(app, client, upscale_factor=2, upscale_engine="lanczos")
    cand, final = _final(client, alpha, run)
    assert final["metadata_json"]["engine"] == "lanczos" and "model" not in final["metadata_json"]
    root = Path(client.call("projects.get", slug="alpha")["root_dir"])
    assert Image.open(abs_path(root, final["storage_uri"])).size == (1536, 1024)
