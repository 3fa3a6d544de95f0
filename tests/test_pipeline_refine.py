"""A run's cut-outs: each stores its alpha as a mask asset beside the chain of steps (mask_for the image it was cut
from), and with `refine` the accepted cut-out is refined, recorded in the snapshot (method, options, the matting
model's name and sha256) so a replay refines the same way, byte for byte, or is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iat.app import App
from iat.assets.store import abs_path

from support import Client, all_assets

WAIT_S = 240

SHOTS = [{"job_key": "market", "scene": "a market stall", "characters": ["mira"], "time_of_day": "day",
          "weather": "clear", "cutout": True},
         {"job_key": "street", "scene": "a city street", "characters": ["mira"], "time_of_day": "dusk"}]


@pytest.fixture
def studio(client: Client, project: dict) -> Client:
    client.call("characters.create", slug="alpha", code="mira", name="Mira", identity_constraints_json={
        "appearance": "long light-blue hair, glasses", "outfit": "red dress", "palette": ["#c0392b", "#85c1e9"]})
    return client


def _run(app: App, client: Client, **params) -> dict:
    run = client.call("runs.start", slug="alpha", shots=SHOTS, candidates=2, seed=5, **params)
    assert app.runner.wait_idle(WAIT_S), "the run did not finish"
    return client.call("runs.get", slug="alpha", run_id=run["id"])


def _file(client: Client, asset: dict) -> Path:
    return abs_path(Path(client.call("projects.get", slug="alpha")["root_dir"]), asset["storage_uri"])


def _candidates(client: Client, run_id: str) -> list[dict]:
    jobs = {j["id"]: j["job_key"] for j in client.call("jobs.list", slug="alpha", run_id=run_id)["items"]}
    cands = client.call("candidates.list", slug="alpha", run_id=run_id)["items"]
    for cand in cands:
        cand["job_key"] = jobs[cand["job_id"]]
    return cands


def _outputs(client: Client, run_id: str) -> dict[tuple, str]:
    """(job_key, candidate index, step) -> sha256 of every image of the run, masks included."""
    assets = all_assets(client)
    return {(c["job_key"], c["candidate_index"], made["step"]): assets[made["asset_id"]]["sha256"]
            for c in _candidates(client, run_id)
            for made in c["meta_json"]["assets"] + c["meta_json"].get("masks", [])}


def _check_masks(client: Client, run: dict) -> list[dict]:
    """Every cut-out candidate has one mask, mask_for the image it was cut from, equal to its cut-out's alpha;
    the chain of steps and the final's derived_from lineage are as without masks. Returns the cut-out steps'
    meta."""
    assets = all_assets(client)
    cutouts = []
    for cand in _candidates(client, run["id"]):
        steps = [a["step"] for a in cand["meta_json"]["assets"]]
        ids = [a["asset_id"] for a in cand["meta_json"]["assets"]]
        if cand["job_key"] != "market":
            assert "cutout" not in steps and "masks" not in cand["meta_json"]
            continue
        assert steps == ["style_lock", "light_time", "weather_effects", "cutout", "color"]
        assert cand["final_asset_id"] == ids[-1]
        (mask,) = cand["meta_json"]["masks"]
        assert mask["step"] == "mask" and mask["mask_for"] == ids[2]   # cut from the last stage's image
        row = assets[mask["asset_id"]]
        assert row["kind"] == "mask" and row["metadata_json"]["step"] == "mask"
        cut = assets[ids[3]]
        grey = Image.open(_file(client, row))
        assert grey.mode == "L"
        assert np.array_equal(np.asarray(grey), np.asarray(Image.open(_file(client, cut)).convert("RGBA"))[..., 3])
        down = client.call("assets.lineage", slug="alpha", asset_id=ids[2], direction="descendants", max_depth=1)
        assert {(e["child_asset_id"], e["link_type"]) for e in down["edges"]} == {(ids[3], "derived_from"),
                                                                                 (row["id"], "mask_for")}
        up = client.call("assets.lineage", slug="alpha", asset_id=cand["final_asset_id"], direction="ancestors")
        assert {n["id"] for n in up["nodes"]} == set(ids) and row["id"] not in {n["id"] for n in up["nodes"]}
        assert all(e["link_type"] == "derived_from" for e in up["edges"])
        cutout_meta = next(p for p in cand["meta_json"]["post"] if p["step"] == "cutout")
        assert row["metadata_json"]["refined"] == bool((cutout_meta.get("refine") or {}).get("ok"))
        cutouts.append(cutout_meta)
    assert len(cutouts) == 2
    return cutouts


def test_a_runs_cutouts_leave_masks_beside_the_chain(app: App, studio: Client):
    run = _run(app, studio)
    assert run["status"] == "done" and "refine" not in run["settings_snapshot_json"]["post"]
    for meta in _check_masks(studio, run):
        assert "refine" not in meta
    # The results folder has each mask beside the candidate's steps.
    results = Path(studio.call("projects.get", slug="alpha")["root_dir"]) / "runs" / run["id"] / "results"
    sidecar = json.loads((results / "market" / "c0-mask.json").read_text())
    assert sidecar["kind"] == "mask" and (results / "market" / "c0-mask.png").is_file()


def test_a_run_with_refine_records_it_and_its_replay_does_the_same(app: App, studio: Client):
    run = _run(app, studio, refine=True)
    assert run["status"] == "done"
    recorded = run["settings_snapshot_json"]["post"]["refine"]
    assert recorded["method"] == "closed_form" and "model" not in recorded   # no matting model installed
    assert recorded["max_seconds"] == 30 and recorded["erode_size"] == 10   # every option, for the replay
    for meta in _check_masks(studio, run):
        record = meta["refine"]
        assert record["engine"] == "refine" and record["meta"]["method"] == "closed_form"
        assert record["ok"] or record["reason"]
    replay = studio.call("runs.replay", slug="alpha", run_id=run["id"])
    assert app.runner.wait_idle(WAIT_S)
    assert studio.call("runs.get", slug="alpha", run_id=replay["id"])["settings_snapshot_json"]["post"]["refine"] \
        == recorded
    assert _outputs(studio, replay["id"]) == _outputs(studio, run["id"])


def test_a_run_refines_with_the_installed_matting_model_and_pins_it(app: App, studio: Client, tmp_path: Path):
    from tests.onnx_models import install
    from tests.onnx_models.matting import colour_projection

    model = install(app.models, colour_projection((0.8, 0.3, 0.3), (0.9, 0.9, 0.85)), "matte", "matting", tmp_path)
    run = _run(app, studio, refine=True)
    recorded = run["settings_snapshot_json"]["post"]["refine"]
    assert (recorded["method"], recorded["model"], recorded["sha256"]) == ("vitmatte", "matte", model.entry.sha256)
    for meta in _check_masks(studio, run):
        record = meta["refine"]
        assert record["meta"]["method"] == "vitmatte" and record["meta"]["model_sha256"] == model.entry.sha256
    replay = studio.call("runs.replay", slug="alpha", run_id=run["id"])
    assert app.runner.wait_idle(WAIT_S)
    assert _outputs(studio, replay["id"]) == _outputs(studio, run["id"])
    # The model gone (or changed): the replay is refused rather than refining another way.
    studio.call("models.remove", name="matte")
    err = studio.error("runs.replay", slug="alpha", run_id=run["id"])
    assert err.name == "conflict" and err.details["model"] == "matte"


def test_refine_is_a_strict_flag(studio: Client):
    err = studio.error("runs.plan", slug="alpha", shots=SHOTS, refine="yes")
    assert err.name == "invalid_params"
    planned = studio.call("runs.plan", slug="alpha", shots=SHOTS, refine=True)
    assert planned["run"]["settings_snapshot_json"]["post"]["refine"]["method"] == "closed_form"
