"""images.* and quality.* in process: each image operation on an imported asset makes a new asset derived from it
(row, kind, size, link, audit), the background-removal chain honours the engine order, colour correction brings
chroma under the guide's limit, the QA guard flags planted defects and passes a clean image, reports are listed,
and every refusal writes nothing."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from iat.app import App
from iat.assets.store import abs_path
from iat.engines.base import EngineResult, EngineStatus
from iat.imaging.io import save_png
from iat.imaging.oklab import chroma, srgb8_to_oklab
from iat.imaging.pngtext import read_text

from support import Client

WAIT_S = 240


# --- pictures ---


def figure(path: Path, size=(160, 120), bg=(250, 250, 250)) -> Path:
    """Flat-background art in muted colours of the default palette: a head and a body with dark outlines."""
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.ellipse((w * 0.35, h * 0.15, w * 0.65, h * 0.45), fill=(94, 129, 172), outline=(46, 52, 64), width=3)
    draw.rectangle((w * 0.3, h * 0.45, w * 0.7, h * 0.85), fill=(163, 190, 140), outline=(46, 52, 64), width=3)
    img.save(path)
    return path


def oversaturated(path: Path) -> Path:
    """Pure sRGB primaries: OKLab chroma ~0.26-0.32, far over the default guide's 0.2."""
    img = Image.new("RGB", (160, 120), (255, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rectangle((80, 0, 160, 120), fill=(0, 0, 255))
    draw.rectangle((40, 30, 120, 90), fill=(0, 220, 0))
    img.save(path)
    return path


def blank(path: Path) -> Path:
    Image.new("RGB", (160, 120), (120, 120, 120)).save(path)
    return path


def max_chroma(path: Path) -> float:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return float(chroma(srgb8_to_oklab(rgb).reshape(-1, 3)).max())


class KeepsEverything:
    """A background-removal engine that keeps every pixel opaque: its mask is always 'full', so the chain must
    reject it and go on to the next engine."""

    code = "keeps_everything"
    op = "remove_background"

    def available(self, ctx=None) -> EngineStatus:
        return EngineStatus(True)

    def process(self, src, dst, options=None, *, cancel=None, ctx=None) -> EngineResult:
        img = Image.open(src).convert("RGBA")
        save_png(img, dst)
        return EngineResult(Path(dst), img.width, img.height, {"engine": self.code})


# --- fixtures and helpers ---


def imported(client: Client, path: Path, slug: str = "alpha") -> dict:
    return client.call("assets.import", slug=slug, paths=[str(path)])["items"][0]


def file_of(alpha: dict, asset: dict) -> Path:
    return abs_path(Path(alpha["root_dir"]), asset["storage_uri"])


def audit_codes(client: Client, slug: str = "alpha") -> list[str]:
    return [e["event_code"] for e in client.call("audit.list", slug=slug, limit=500)["items"]]


def state(client: Client, alpha: dict, slug: str = "alpha") -> tuple:
    """What a refusal must leave as it was: rows of assets, links, audit events, reports, and the store's files."""
    assets = client.call("assets.list", slug=slug, limit=500)["items"]
    reports = client.call("quality.list", slug=slug, limit=500)["items"]
    files = sorted(p for p in (Path(alpha["root_dir"]) / "assets").rglob("*") if p.is_file())
    return len(assets), len(audit_codes(client, slug)), len(reports), files


def ancestors(client: Client, asset_id: str) -> list[str]:
    lineage = client.call("assets.lineage", slug="alpha", asset_id=asset_id, direction="ancestors")
    return [n["id"] for n in lineage["nodes"][1:]]


# --- the operations ---


def test_remove_background_cuts_out_flat_art_into_a_derived_asset(app: App, client: Client, alpha: dict,
                                                                   src: Path):
    source = imported(client, figure(src / "fig.png"))
    created = []
    arrived = threading.Event()

    def on_event(name: str, payload: dict) -> None:
        if name == "asset.created":
            created.append(payload)
            arrived.set()

    app.events.subscribe(on_event)
    out = client.call("images.remove_background", slug="alpha", asset_id=source["id"])  # default order: ["key"]
    asset = out["asset"]
    assert asset["kind"] == "bg_removed" and asset["project_id"] == alpha["id"]
    assert (asset["width"], asset["height"]) == (160, 120) and asset["mime_type"] == "image/png"
    assert out["engine"] == "key" and [a["engine"] for a in out["attempts"]] == ["key"] and out["attempts"][0]["ok"]
    assert asset["metadata_json"]["operation"] == "background_removed"
    assert asset["metadata_json"]["source_asset_id"] == source["id"]
    assert asset["metadata_json"]["attempts"] == out["attempts"]
    rgba = np.asarray(Image.open(file_of(alpha, asset)))
    assert rgba.shape[2] == 4
    alpha_ch = rgba[..., 3]
    assert alpha_ch[0, 0] == 0 and alpha_ch[-1, -1] == 0  # the flat backdrop is gone
    assert alpha_ch[60, 80] == 255  # the body stays
    assert 0.15 < (alpha_ch >= 128).mean() < 0.35
    text = read_text(file_of(alpha, asset).read_bytes())
    assert text["iat:operation"] == "background_removed" and text["iat:source_sha256"] == source["sha256"]
    link = out["link"]
    assert (link["parent_asset_id"], link["child_asset_id"], link["link_type"]) == \
        (source["id"], asset["id"], "derived_from")
    assert ancestors(client, asset["id"]) == [source["id"]]
    assert client.call("assets.get", slug="alpha", asset_id=asset["id"]) == asset
    assert audit_codes(client)[:5] == ["image.background_removed", "asset.linked", "asset.created", "asset.linked",
                                       "asset.created"]   # the cut-out, then its mask, in one transaction
    assert arrived.wait(10)  # events are delivered off the caller's thread
    deadline = time.monotonic() + 10
    while len(created) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert created == [{"project_id": alpha["id"], "slug": "alpha", "asset_id": asset["id"], "kind": "bg_removed",
                        "operation": "background_removed", "source_asset_id": source["id"]},
                       {"project_id": alpha["id"], "slug": "alpha", "asset_id": out["mask"]["id"], "kind": "mask",
                        "operation": "mask", "source_asset_id": source["id"]}]


def test_remove_background_stores_the_cutouts_alpha_as_a_mask_for_the_input(client: Client, alpha: dict,
                                                                             src: Path):
    source = imported(client, figure(src / "fig.png"))
    out = client.call("images.remove_background", slug="alpha", asset_id=source["id"])
    cut, mask = out["asset"], out["mask"]
    assert mask["kind"] == "mask" and (mask["width"], mask["height"]) == (160, 120) and out["refine"] is None
    assert mask["metadata_json"]["cutout_asset_id"] == cut["id"] and mask["metadata_json"]["refined"] is False
    assert mask["metadata_json"]["source_asset_id"] == source["id"] and mask["metadata_json"]["engine"] == "key"
    grey = Image.open(file_of(alpha, mask))
    assert grey.mode == "L"
    assert np.array_equal(np.asarray(grey), np.asarray(Image.open(file_of(alpha, cut)))[..., 3])
    assert read_text(file_of(alpha, mask).read_bytes())["iat:operation"] == "mask"
    link = out["mask_link"]
    assert (link["parent_asset_id"], link["child_asset_id"], link["link_type"]) == \
        (source["id"], mask["id"], "mask_for")
    # The lineage: the input's children are the cut-out (derived_from) and the mask (mask_for).
    down = client.call("assets.lineage", slug="alpha", asset_id=source["id"], direction="descendants")
    assert {(e["child_asset_id"], e["link_type"]) for e in down["edges"]} == {(cut["id"], "derived_from"),
                                                                             (mask["id"], "mask_for")}
    assert ancestors(client, mask["id"]) == [source["id"]]
    assert client.call("assets.get", slug="alpha", asset_id=mask["id"]) == mask


def test_remove_background_with_refine(app: App, client: Client, alpha: dict, src: Path, tmp_path: Path):
    from tests.onnx_models import install
    from tests.onnx_models.matting import colour_projection

    # Anti-aliased art (drawn at 4x and box-filtered down): soft edges for the refinement to work on.
    figure(src / "big.png", size=(640, 480))
    Image.open(src / "big.png").resize((160, 120), Image.Resampling.BOX).save(src / "fig.png")
    source = imported(client, src / "fig.png")
    plain = client.call("images.remove_background", slug="alpha", asset_id=source["id"])
    assert plain["refine"] is None and "refine" not in plain["asset"]["metadata_json"]
    out = client.call("images.remove_background", slug="alpha", asset_id=source["id"], refine=True)
    record = out["refine"]
    assert record["engine"] == "refine" and record["ok"] and record["check"]["passed"]
    assert record["meta"]["method"] == "closed_form" and record["meta"]["model"] is None  # no matting model here
    cut, mask = out["asset"], out["mask"]
    assert cut["metadata_json"]["refine"] == record and cut["metadata_json"]["mask_check"] == record["check"]
    assert mask["metadata_json"]["refined"] is True
    refined_alpha = np.asarray(Image.open(file_of(alpha, cut)))[..., 3]
    assert np.array_equal(np.asarray(Image.open(file_of(alpha, mask))), refined_alpha)
    assert not np.array_equal(refined_alpha, np.asarray(Image.open(file_of(alpha, plain["asset"])))[..., 3])
    # With a matting model installed, the same call runs it (ViTMatte's I/O; this one projects on the figure's
    # body colour against the backdrop).
    install(app.models, colour_projection((163 / 255, 190 / 255, 140 / 255), (250 / 255,) * 3), "matte", "matting",
            tmp_path)
    out = client.call("images.remove_background", slug="alpha", asset_id=source["id"],
                      refine={"max_seconds": 60})
    assert out["refine"]["meta"]["method"] == "vitmatte" and out["refine"]["meta"]["model"] == "matte"
    assert out["refine"]["meta"]["max_seconds"] == 60 and out["refine"]["ok"]
    assert out["asset"]["metadata_json"]["refine"]["meta"]["model_sha256"] == \
        client.call("models.list")["items"][0]["sha256"]
    # Closed form asked for by name; a refinement past its time bound keeps the unrefined cut-out, recorded.
    out = client.call("images.remove_background", slug="alpha", asset_id=source["id"],
                      refine={"method": "closed_form"})
    assert out["refine"]["meta"]["method"] == "closed_form"
    out = client.call("images.remove_background", slug="alpha", asset_id=source["id"],
                      refine={"method": "vitmatte", "max_seconds": 1e-9})
    assert not out["refine"]["ok"] and "time bound" in out["refine"]["reason"]
    assert out["mask"]["metadata_json"]["refined"] is False
    assert np.array_equal(np.asarray(Image.open(file_of(alpha, out["asset"])))[..., 3],
                          np.asarray(Image.open(file_of(alpha, plain["asset"])))[..., 3])
    # Refused before any work: a model not installed, the wrong kind of options, unknown keys.
    before = state(client, alpha)
    for refine in ({"model": "nope"}, {"method": "closed_form", "model": "matte"}, {"bogus": 1}, "yes",
                   {"max_seconds": 0}):
        err = client.error("images.remove_background", slug="alpha", asset_id=source["id"], refine=refine)
        assert err.name == "invalid_params", refine
    assert state(client, alpha) == before


def test_the_chain_honours_the_engine_order_and_refuses_bad_orders(app: App, client: Client, alpha: dict,
                                                                   src: Path):
    app.engines.register("keeps_everything", KeepsEverything())
    source = imported(client, figure(src / "fig.png"))
    out = client.call("images.remove_background", slug="alpha", asset_id=source["id"],
                      engines=["keeps_everything", "key"])
    assert [(a["engine"], a["ok"]) for a in out["attempts"]] == [("keeps_everything", False), ("key", True)]
    assert out["attempts"][0]["reason"].startswith("mask rejected") and out["engine"] == "key"
    assert out["asset"]["metadata_json"]["engines"] == ["keeps_everything", "key"]
    # The project's setting is the default order.
    client.call("projects.update", slug="alpha", settings_json={"import_roots": [str(src)],
                                                               "background_engines": ["keeps_everything"]})
    before = state(client, alpha)
    err = client.error("images.remove_background", slug="alpha", asset_id=source["id"])
    assert err.name == "engine_error"
    assert [(a["engine"], a["ok"]) for a in err.details["attempts"]] == [("keeps_everything", False)]
    assert state(client, alpha) == before
    assert client.call("images.remove_background", slug="alpha", asset_id=source["id"],
                       engines=["key"])["engine"] == "key"
    before = state(client, alpha)
    for engines in (["nope"], ["key", "nope"], ["lanczos"], ["key", "key"], []):
        err = client.error("images.remove_background", slug="alpha", asset_id=source["id"], engines=engines)
        assert err.name == "invalid_params", engines
    assert state(client, alpha) == before


def test_a_busy_picture_no_engine_can_key_is_an_engine_error_that_writes_nothing(client: Client, alpha: dict,
                                                                                src: Path):
    noise = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(src / "noise.png")
    source = imported(client, src / "noise.png")
    before = state(client, alpha)
    err = client.error("images.remove_background", slug="alpha", asset_id=source["id"], engines=["key"])
    assert err.name == "engine_error" and err.details["attempts"][0]["engine"] == "key"
    assert not err.details["attempts"][0]["ok"] and err.details["attempts"][0]["check"]["passed"] is False
    assert state(client, alpha) == before


def test_upscale_multiplies_the_size_into_a_derived_asset(client: Client, alpha: dict, src: Path):
    source = imported(client, figure(src / "fig.png"))
    out = client.call("images.upscale", slug="alpha", asset_id=source["id"], factor=2)
    asset = out["asset"]
    assert asset["kind"] == "upscaled" and (asset["width"], asset["height"]) == (320, 240)
    assert Image.open(file_of(alpha, asset)).size == (320, 240)
    assert (out["engine"], out["factor"]) == ("lanczos", 2)
    assert asset["metadata_json"]["source_width"] == 160 and asset["metadata_json"]["factor"] == 2
    assert ancestors(client, asset["id"]) == [source["id"]]
    assert audit_codes(client)[0] == "image.upscaled"
    # Chained: an upscale of a cut-out keeps its alpha, and its lineage reaches the original.
    cut = client.call("images.remove_background", slug="alpha", asset_id=source["id"])["asset"]
    big = client.call("images.upscale", slug="alpha", asset_id=cut["id"], factor=3)["asset"]
    assert (big["width"], big["height"]) == (480, 360) and Image.open(file_of(alpha, big)).mode == "RGBA"
    assert ancestors(client, big["id"]) == [cut["id"], source["id"]]
    before = state(client, alpha)
    for bad in ({"factor": 5}, {"factor": 1}, {"factor": 2.5}, {}):
        err = client.error("images.upscale", slug="alpha", asset_id=source["id"], **bad)
        assert err.name == "invalid_params", bad
    assert state(client, alpha) == before


def test_color_correction_brings_chroma_under_the_guides_limit(client: Client, alpha: dict, src: Path):
    source = imported(client, oversaturated(src / "sat.png"))
    assert max_chroma(file_of(alpha, source)) > 0.25
    out = client.call("images.color_correct", slug="alpha", asset_id=source["id"])  # the embedded default rules
    asset = out["asset"]
    assert asset["kind"] == "other" and asset["metadata_json"]["operation"] == "color_corrected"
    assert out["style_guide_id"] is None and out["correction"]["max_chroma"] == 0.2
    assert max_chroma(file_of(alpha, asset)) <= 0.2 + 1e-6
    assert out["facts"]["chroma_max_before"] > 0.25 and out["facts"]["chroma_max_after"] <= 0.2
    assert asset["metadata_json"]["chroma_max_after"] == out["facts"]["chroma_max_after"]
    assert (asset["width"], asset["height"]) == (160, 120)
    assert ancestors(client, asset["id"]) == [source["id"]]
    assert audit_codes(client)[0] == "image.color_corrected"
    # A guide of the project: the project's default, or one named.
    guide = client.call("style_guides.create", slug="alpha", name="Muted", rules_json={"max_chroma": 0.08})
    out = client.call("images.color_correct", slug="alpha", asset_id=source["id"])
    assert out["style_guide_id"] == guide["id"] and max_chroma(file_of(alpha, out["asset"])) <= 0.08 + 1e-6
    other = client.call("style_guides.create", slug="alpha", name="Vivid", rules_json={"max_chroma": 0.15})
    out = client.call("images.color_correct", slug="alpha", asset_id=source["id"], style_guide_id=other["id"])
    assert out["style_guide_name"] == "Vivid" and 0.08 < max_chroma(file_of(alpha, out["asset"])) <= 0.15 + 1e-6
    before = state(client, alpha)
    err = client.error("images.color_correct", slug="alpha", asset_id=source["id"], style_guide_id=str(uuid.uuid4()))
    assert err.name == "not_found"
    assert state(client, alpha) == before


# --- the QA guard ---


def test_quality_check_flags_planted_defects_and_passes_a_clean_image(client: Client, alpha: dict, src: Path):
    clean = imported(client, figure(src / "fig.png"))
    flat = imported(client, blank(src / "blank.png"))
    loud = imported(client, oversaturated(src / "sat.png"))

    report = client.call("quality.check", slug="alpha", asset_id=clean["id"])
    summary = report["summary_json"]
    assert report["report_type"] == "output_guard" and report["project_id"] == alpha["id"]
    assert (report["run_id"], report["job_id"], report["candidate_id"]) == (None, None, None)
    assert summary["hard_failures"] == 0 and summary["passed"] is True and summary["asset_id"] == clean["id"]
    assert summary["avg_chroma_exceed"] == 0 and 0 < summary["quality_score"] <= 1 and len(summary["phash"]) == 16
    names = [c["name"] for c in summary["checks"]]
    assert names == ["readable", "blank", "uniform", "chroma", "palette", "contrast"]  # no size check unless asked
    assert all("threshold" in c and "value" in c for c in summary["checks"])
    assert audit_codes(client)[0] == "quality.checked"

    blank_report = client.call("quality.check", slug="alpha", asset_id=flat["id"])["summary_json"]
    failed = {c["name"] for c in blank_report["checks"] if not c["passed"] and c["severity"] == "hard"}
    assert {"blank", "uniform"} <= failed and blank_report["passed"] is False

    loud_report = client.call("quality.check", slug="alpha", asset_id=loud["id"])["summary_json"]
    chroma_check = next(c for c in loud_report["checks"] if c["name"] == "chroma")
    assert not chroma_check["passed"] and chroma_check["severity"] == "soft"
    assert loud_report["hard_failures"] == 0 and loud_report["soft_warnings"] >= 1
    assert loud_report["avg_chroma_exceed"] > 0 and loud_report["chroma_limit"] == 0.2

    # Options: transparency required (an opaque picture fails it, its cut-out passes), the time of day, the
    # guide's size and aspect (default guide: 768x512, 3:2; the 160x120 figure is 4:3).
    opaque = client.call("quality.check", slug="alpha", asset_id=clean["id"], require_transparency=True)
    assert next(c for c in opaque["summary_json"]["checks"] if c["name"] == "transparency")["passed"] is False
    cut = client.call("images.remove_background", slug="alpha", asset_id=clean["id"])["asset"]
    cut_report = client.call("quality.check", slug="alpha", asset_id=cut["id"], require_transparency=True,
                             time_of_day="night")["summary_json"]
    assert cut_report["hard_failures"] == 0
    assert {c["name"] for c in cut_report["checks"]} >= {"transparency", "border_cut", "exposure"}
    sized = client.call("quality.check", slug="alpha", asset_id=clean["id"], size_check="size")["summary_json"]
    assert next(c for c in sized["checks"] if c["name"] == "size")["passed"] is False
    aspect = client.call("quality.check", slug="alpha", asset_id=clean["id"], size_check="aspect")["summary_json"]
    assert next(c for c in aspect["checks"] if c["name"] == "aspect")["passed"] is False
    guide = client.call("style_guides.create", slug="alpha", name="Small", rules_json={
        "size": {"width": 160, "height": 120}})
    fits = client.call("quality.check", slug="alpha", asset_id=clean["id"], size_check="size",
                       style_guide_id=guide["id"])["summary_json"]
    assert fits["hard_failures"] == 0 and fits["style_guide_id"] == guide["id"]


def test_quality_list_pages_reports_newest_first_and_filters_by_asset(client: Client, alpha: dict, src: Path):
    one = imported(client, figure(src / "fig.png"))
    two = imported(client, blank(src / "blank.png"))
    made = [client.call("quality.check", slug="alpha", asset_id=a["id"])["id"] for a in (one, two, one)]
    page = client.call("quality.list", slug="alpha", limit=2)
    assert [r["id"] for r in page["items"]] == made[::-1][:2] and page["next_cursor"]
    rest = client.call("quality.list", slug="alpha", limit=2, cursor=page["next_cursor"])
    assert [r["id"] for r in rest["items"]] == [made[0]] and rest["next_cursor"] is None
    mine = client.call("quality.list", slug="alpha", asset_id=one["id"])["items"]
    assert [r["id"] for r in mine] == [made[2], made[0]]
    assert client.call("quality.list", slug="alpha", asset_id=two["id"])["items"][0]["id"] == made[1]
    assert client.call("quality.list", slug="alpha", report_type="human_review")["items"] == []
    assert len(client.call("quality.list", slug="alpha", report_type="output_guard")["items"]) == 3
    assert client.call("quality.list", slug="alpha", run_id=str(uuid.uuid4()))["items"] == []
    checked = client.call("quality.check", slug="alpha", asset_id=two["id"])
    assert client.call("quality.list", slug="alpha", limit=1)["items"] == [checked]  # the stored row, as returned


def test_quality_list_by_asset_finds_a_runs_report_on_its_final_asset(app: App, client: Client, alpha: dict):
    client.call("characters.create", slug="alpha", code="mira", name="Mira")
    run = client.call("runs.start", slug="alpha", candidates=1, stages=["style_lock"], seed=3,
                      shots=[{"job_key": "one", "scene": "a quiet room", "characters": ["mira"]}])
    assert app.runner.wait_idle(WAIT_S)
    cand = client.call("candidates.list", slug="alpha", run_id=run["id"])["items"][0]
    reports = client.call("quality.list", slug="alpha", asset_id=cand["final_asset_id"])["items"]
    assert [(r["candidate_id"], r["report_type"]) for r in reports] == [(cand["id"], "output_guard")]
    assert reports[0]["summary_json"]["hard_failures"] == cand["report"]["hard_failures"]
    # quality.check on that asset joins the list, newest first.
    checked = client.call("quality.check", slug="alpha", asset_id=cand["final_asset_id"])
    assert [r["id"] for r in client.call("quality.list", slug="alpha", asset_id=cand["final_asset_id"])["items"]] \
        == [checked["id"], reports[0]["id"]]


# --- refusals ---


def test_other_projects_assets_unknown_ids_and_non_images_are_refused_and_nothing_is_written(
        client: Client, alpha: dict, src: Path, tmp_path: Path):
    source = imported(client, figure(src / "fig.png"))
    client.call("projects.create", slug="beta", name="Beta")
    other_src = tmp_path / "beta-in"
    other_src.mkdir()
    client.call("projects.update", slug="beta", settings_json={"import_roots": [str(other_src)]})
    foreign = imported(client, figure(other_src / "b.png", bg=(240, 240, 200)), slug="beta")
    (src / "notes.txt").write_text("not a picture\n")
    text = imported(client, src / "notes.txt")
    calls = [("images.remove_background", {}), ("images.upscale", {"factor": 2}), ("images.color_correct", {}),
             ("quality.check", {})]
    before = state(client, alpha)
    for method, extra in calls:
        assert client.error(method, slug="alpha", asset_id=foreign["id"], **extra).name == "not_found", method
        assert client.error(method, slug="alpha", asset_id=str(uuid.uuid4()), **extra).name == "not_found", method
        err = client.error(method, slug="alpha", asset_id=text["id"], **extra)
        assert err.name == "conflict" and err.details["mime_type"] == "text/plain", method
        assert client.error(method, slug="nobody", asset_id=source["id"], **extra).name == "not_found", method
    assert state(client, alpha) == before
    assert client.call("quality.list", slug="beta")["items"] == []


# --- the asset filter on both engines ---


def test_reports_about_one_asset_are_found_on_sqlite_and_postgresql(engine_store):
    """quality.list's asset filter reads summary_json per dialect (json_extract / ->>) and a run's candidates."""
    from iat.assets import repo as assets_repo
    from iat.assets.store import StoredFile
    from iat.clock import utcnow
    from iat.pipeline.repo import list_reports
    from iat.pipeline import repo as pipeline_repo
    from iat.projects import repo as projects

    now = utcnow()
    owner = {"id": str(uuid.uuid4()), "username": "local", "display_name": "Local", "email": None,
             "is_active": True, "created_at": now, "updated_at": now}
    pid = str(uuid.uuid4())
    engine_store.write(projects.create_project, owner, {"id": pid, "slug": "alpha", "name": "Alpha", "description": "",
                                                 "settings_json": {}},
                {"local_base_dir": "/p", "local_project_root": "/p/alpha"}, now)

    def asset(i: int) -> str:
        stored = StoredFile(f"{i:064x}", f"assets/00/{i:064x}.png", 10, "image/png", 8, 8, "png")
        return engine_store.write(assets_repo.insert_asset, pid, "input", stored, {}, utcnow())["id"]

    one, two = asset(1), asset(2)

    def reports() -> dict[str, str]:
        run = pipeline_repo.create_run(pid, {"run_mode": "run", "provider_code": "preview", "settings_snapshot_json": {
            "jobs": [{"job_key": "j", "prompts": {"style_lock": "p"}, "shot": {}}]}}, [], None, utcnow())
        job = pipeline_repo.list_jobs(run["id"])[0]
        cand = pipeline_repo.insert_candidate(pid, run["id"], job["id"], {"candidate_index": 0, "status": "done",
                                                                          "final_asset_id": one}, {"k": 1}, utcnow())
        made = {"run": pipeline_repo.reports_for([cand["id"]])[cand["id"]]["id"]}
        for name, summary in (("one", {"asset_id": one}), ("two", {"asset_id": two}), ("none", {"x": 1})):
            made[name] = pipeline_repo.insert_report(pid, None, None, None, "output_guard", summary, utcnow())["id"]
        return made

    made = engine_store.write(reports)
    found = {key: [r["id"] for r in engine_store.read(list_reports, pid, None, None, None, 10, None, key)[0]]
             for key in (one, two, str(uuid.uuid4()))}
    assert found[one] == [made["one"], made["run"]] and found[two] == [made["two"]]
    assert list(found.values())[2] == []
    assert len(engine_store.read(list_reports, pid, None, None, None, 10, None)[0]) == 4


# --- the REST routes, through the real HTTP transport ---


@pytest.fixture
def rest(app: App, client: Client):
    """`rest(method, path, body=None) -> (status, json)` against the app's own HTTP transport on a free port."""
    import http.client
    import json
    from concurrent.futures import ThreadPoolExecutor

    from iat.rpc.http import HttpTransport

    executor = ThreadPoolExecutor(2)
    transport = HttpTransport(client.dispatcher, executor, 0, app.settings.max_message_bytes, ())
    transport.start()

    def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", transport.port, timeout=60)
        headers = {"Authorization": f"Bearer {app.token}", "Content-Type": "application/json"}
        conn.request(method, path, json.dumps(body).encode() if body is not None else None, headers)
        resp = conn.getresponse()
        out = resp.status, json.loads(resp.read() or b"{}")
        conn.close()
        return out

    yield call
    transport.stop()
    executor.shutdown()


def test_the_rest_routes_take_the_asset_from_the_path(rest, client: Client, alpha: dict, src: Path):
    source = imported(client, figure(src / "fig.png"))
    base = f"/api/projects/alpha/assets/{source['id']}"
    status, up = rest("POST", f"{base}/upscale", {"factor": 2})
    assert status == 200 and (up["asset"]["width"], up["asset"]["kind"]) == (320, "upscaled")
    status, cut = rest("POST", f"{base}/remove-background", {"engines": ["key"]})
    assert status == 200 and cut["asset"]["kind"] == "bg_removed" and cut["mask"]["kind"] == "mask"
    status, cut = rest("POST", f"{base}/remove-background", {"refine": {"method": "closed_form"}})
    assert status == 200 and cut["refine"]["engine"] == "refine" and cut["mask_link"]["link_type"] == "mask_for"
    status, fixed = rest("POST", f"{base}/color-correct")
    assert status == 200 and fixed["link"]["parent_asset_id"] == source["id"]
    status, report = rest("POST", f"{base}/quality-check", {"time_of_day": "day"})
    assert status == 200 and report["summary_json"]["asset_id"] == source["id"]
    status, page = rest("GET", f"/api/projects/alpha/quality-reports?asset_id={source['id']}&limit=5")
    assert status == 200 and [r["id"] for r in page["items"]] == [report["id"]]
    before = state(client, alpha)
    status, err = rest("POST", f"{base}/upscale", {"factor": 2, "asset_id": source["id"]})  # path params: path only
    assert status == 422 and err["error"]["data"]["name"] == "invalid_params"
    status, err = rest("POST", f"/api/projects/alpha/assets/{uuid.uuid4()}/upscale", {"factor": 2})
    assert status == 404 and err["error"]["data"]["name"] == "not_found"
    status, err = rest("POST", f"{base}/remove-background", {"engines": ["keeps_everything_gone"]})
    assert status == 422
    status, err = rest("POST", f"{base}/remove-background", {"engines": ["key", "key"]})  # schema: uniqueItems
    assert status == 422
    assert state(client, alpha) == before
