"""The `rembg` engine on small segmentation models with the real I/O of u2net, IS-Net and BiRefNet, loaded
through rembg's own session classes from the app's models folder: masks measured against ground truth on scenes
the models never saw, one session per model across images and runs, no network and no rembg home, none of
rembg's heavy imports, the chain falling through a model that finds nothing, and images.remove_background."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iat.app import App
from iat.assets.store import abs_path
from iat.engines.base import Cancelled, EngineContext
from iat.engines.chain import remove_background
from iat.errors import EngineError, InvalidParams
from tests.onnx_models import install, save
from tests.onnx_models import segmentation as seg
from tests.onnx_models.superres import conv_depth_to_space

from support import Client

ROOT = Path(__file__).resolve().parents[2]
BUILDERS = {"u2net": seg.u2net, "isnet": seg.isnet, "birefnet": seg.birefnet}
# Seeds and sizes none of the models' constants were chosen on: non-square, both orientations, odd sizes.
UNSEEN = [(7001, 600, 400), (7002, 333, 517), (7003, 512, 512), (7004, 801, 450), (7005, 420, 700)]


def scene_file(folder: Path, seed: int, width: int, height: int) -> tuple[Path, np.ndarray]:
    rgb, truth = seg.scene(seed, width, height)
    path = folder / f"scene-{seed}-{width}x{height}.png"
    Image.fromarray(rgb).save(path)
    return path, truth


def installed(app: App, tmp_path: Path, arch: str, name: str | None = None, proto=None):
    return install(app.models, proto if proto is not None else BUILDERS[arch](), name or f"seg-{arch}",
                   "segmentation", tmp_path, arch=arch, license="test")


def engine(app: App):
    return app.engines.get("rembg")


@pytest.mark.parametrize("arch", ["u2net", "isnet", "birefnet"])
def test_each_arch_cuts_out_unseen_scenes(app: App, tmp_path: Path, arch: str):
    model = installed(app, tmp_path, arch)
    ctx = EngineContext(app)
    for seed, w, h in UNSEEN:
        src, truth = scene_file(tmp_path, seed, w, h)
        dst = tmp_path / f"out-{seed}.png"
        result = engine(app).process(src, dst, {}, ctx=ctx)
        out = np.asarray(Image.open(dst))
        assert out.shape == (h, w, 4) and (result.width, result.height) == (w, h)
        assert seg.iou(out[..., 3] >= 128, truth) >= 0.9, (arch, seed)
        rgb = np.asarray(Image.open(src).convert("RGB"))
        seen = out[..., 3] > 0
        assert (out[..., :3][seen] == rgb[seen]).all()          # the source's own colours under the mask
        assert not out[..., :3][~seen].any()                     # fully transparent pixels carry no colour
    assert result.meta["engine"] == "rembg" and result.meta["model"] == model.name
    assert result.meta["arch"] == arch and result.meta["sha256"] == model.entry.sha256
    assert result.meta["session"] == {"u2net": "u2net_custom", "isnet": "dis_custom",
                                      "birefnet": "birefnet-general"}[arch]
    assert "CPUExecutionProvider" in result.meta["providers"]


def test_one_session_per_model_across_images_chains_and_commands(app: App, client: Client, tmp_path: Path):
    installed(app, tmp_path, "u2net")
    client.call("projects.create", slug="alpha", name="Alpha")
    folder = tmp_path / "in"
    folder.mkdir()
    client.call("projects.update", slug="alpha", settings_json={"import_roots": [str(folder)]})
    before = app.models.sessions.builds
    ctx = EngineContext(app)
    for seed, w, h in UNSEEN[:3]:
        src, _ = scene_file(tmp_path, seed, w, h)
        remove_background(app.engines, ["rembg"], src, tmp_path / f"chain-{seed}.png", ctx=ctx)
    session = engine(app).session(ctx, app.models.get("seg-u2net"))
    for seed, w, h in UNSEEN[3:]:   # two more "runs": through the command, each its own chain call
        src, _ = scene_file(folder, seed, w, h)
        asset = client.call("assets.import", slug="alpha", paths=[str(src)])["items"][0]
        assert client.call("images.remove_background", slug="alpha", asset_id=asset["id"],
                           engines=["rembg"])["engine"] == "rembg"
    assert app.models.sessions.builds - before == 1
    assert engine(app).session(ctx, app.models.get("seg-u2net")) is session


def test_two_pipeline_runs_share_the_one_session(app: App, client: Client, project: dict, tmp_path: Path):
    installed(app, tmp_path, "u2net")
    client.call("characters.create", slug="alpha", code="mira", name="Mira", identity_constraints_json={
        "appearance": "long light-blue hair", "outfit": "red dress", "palette": ["#c0392b", "#85c1e9"]})
    shots = [{"job_key": "stall", "scene": "a market stall", "characters": ["mira"], "cutout": True}]
    before = app.models.sessions.builds
    for _ in range(2):
        run = client.call("runs.start", slug="alpha", shots=shots, candidates=2, background_engines=["rembg", "key"])
        assert app.runner.wait_idle(240), "the run did not finish"
        assert client.call("runs.get", slug="alpha", run_id=run["id"])["status"] == "done"
    cutouts = [a for a in client.call("assets.list", slug="alpha", limit=500)["items"] if a["kind"] == "bg_removed"]
    assert len(cutouts) == 4
    tried = [a["metadata_json"]["attempts"][0] for a in cutouts]
    assert all(t["engine"] == "rembg" and t["meta"].get("model") == "seg-u2net" for t in tried), tried
    assert app.models.sessions.builds - before == 1


def test_the_default_model_is_the_best_installed_arch_and_the_option_picks_one(app: App, tmp_path: Path):
    ctx = EngineContext(app)
    src, truth = scene_file(tmp_path, 7101, 500, 380)
    status = engine(app).available(ctx)
    assert not status.ready and "no segmentation model installed" in status.reason
    assert "models.install" in status.reason
    assert not engine(app).available(None).ready and engine(app).available(None).reason
    installed(app, tmp_path, "u2net")
    assert engine(app).available(ctx).ready
    assert engine(app).process(src, tmp_path / "a.png", {}, ctx=ctx).meta["model"] == "seg-u2net"
    installed(app, tmp_path, "isnet")
    assert engine(app).process(src, tmp_path / "b.png", {}, ctx=ctx).meta["model"] == "seg-isnet"
    installed(app, tmp_path, "birefnet")
    assert engine(app).process(src, tmp_path / "c.png", {}, ctx=ctx).meta["model"] == "seg-birefnet"
    chosen = engine(app).process(src, tmp_path / "d.png", {"model": "seg-u2net"}, ctx=ctx)
    assert chosen.meta["model"] == "seg-u2net" and chosen.meta["arch"] == "u2net"
    assert seg.iou(np.asarray(Image.open(tmp_path / "d.png"))[..., 3] >= 128, truth) >= 0.9


def test_bad_options_are_invalid_params_before_any_output(app: App, tmp_path: Path):
    ctx = EngineContext(app)
    installed(app, tmp_path, "u2net")
    install(app.models, conv_depth_to_space(2), "sr2", "super_resolution", tmp_path)
    src, _ = scene_file(tmp_path, 7102, 300, 200)
    dst = tmp_path / "never.png"
    for options, needle in [({"model": "absent"}, "no model named 'absent'"),
                            ({"model": "sr2"}, "not a segmentation model"),
                            ({"threshold": 3}, "threshold"), ({"model": ""}, "model")]:
        with pytest.raises(InvalidParams) as info:
            engine(app).process(src, dst, options, ctx=ctx)
        assert needle in info.value.message and info.value.details["engine"] == "rembg"
    with pytest.raises(EngineError):
        engine(app).process(src, dst, {}, ctx=None)
    assert not dst.exists()


def test_a_set_cancel_stops_before_inference_and_writes_nothing(app: App, tmp_path: Path):
    installed(app, tmp_path, "u2net")
    src, _ = scene_file(tmp_path, 7103, 300, 200)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        engine(app).process(src, tmp_path / "never.png", {}, cancel=cancel, ctx=EngineContext(app))
    assert not (tmp_path / "never.png").exists()


def test_a_model_failing_at_inference_is_an_engine_error(app: App, tmp_path: Path):
    """A u2net-shaped model whose graph reshapes the image to a size it cannot have: loads, fails when run."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.onnx_models import model

    shape = numpy_helper.from_array(np.array([1, 1, 320, 321], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
         helper.make_node("Reshape", ["m", "shape"], ["d0"])], "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("d0", TensorProto.FLOAT, [1, 1, 320, "w"])], [shape])
    installed(app, tmp_path, "u2net", "broken", model(graph))
    src, _ = scene_file(tmp_path, 7104, 300, 200)
    with pytest.raises(EngineError) as info:
        engine(app).process(src, tmp_path / "never.png", {}, ctx=EngineContext(app))
    assert "failed on the image" in info.value.message and info.value.details["model"] == "broken"
    assert not (tmp_path / "never.png").exists()


def test_the_chain_falls_through_a_model_that_finds_nothing(app: App, tmp_path: Path):
    installed(app, tmp_path, "u2net", "blind", seg.blind())
    src, truth = scene_file(tmp_path, 7105, 640, 480)
    out = remove_background(app.engines, ["rembg", "key"], src, tmp_path / "cut.png", ctx=EngineContext(app))
    assert out.engine == "key" and [a.engine for a in out.attempts] == ["rembg", "key"]
    first = out.attempts[0]
    assert not first.ok and first.reason.startswith("mask rejected") and "opaque fraction" in first.reason
    assert first.check["metrics"][0]["name"] == "not_empty" and not first.check["metrics"][0]["passed"]
    assert first.meta["model"] == "blind"
    assert out.attempts[1].ok
    assert seg.iou(np.asarray(Image.open(tmp_path / "cut.png"))[..., 3] >= 128, truth) >= 0.9
    assert sorted(p.name for p in tmp_path.glob(".cut.png*")) == []   # the rejected attempt left no file


def test_the_chain_accepts_a_model_that_segments(app: App, tmp_path: Path):
    installed(app, tmp_path, "isnet")
    src, truth = scene_file(tmp_path, 7106, 720, 540)
    out = remove_background(app.engines, ["rembg", "key"], src, tmp_path / "cut.png", ctx=EngineContext(app))
    assert out.engine == "rembg" and [a.engine for a in out.attempts] == ["rembg"] and out.attempts[0].ok
    assert seg.iou(np.asarray(Image.open(tmp_path / "cut.png"))[..., 3] >= 128, truth) >= 0.9


def test_images_remove_background_reaches_the_engine(app: App, client: Client, project: dict, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    alpha = client.call("projects.update", slug="alpha", settings_json={"import_roots": [str(folder)]})
    assert Path(app.models.user_dir) == Path(app.settings.home) / "models"   # the app's own models folder
    installed(app, tmp_path, "birefnet")
    src, truth = scene_file(folder, 7107, 560, 700)
    source = client.call("assets.import", slug="alpha", paths=[str(src)])["items"][0]
    out = client.call("images.remove_background", slug="alpha", asset_id=source["id"], engines=["rembg"])
    assert out["engine"] == "rembg" and out["asset"]["kind"] == "bg_removed"
    assert out["attempts"][0]["meta"]["model"] == "seg-birefnet"
    rgba = np.asarray(Image.open(abs_path(Path(alpha["root_dir"]), out["asset"]["storage_uri"])))
    assert seg.iou(rgba[..., 3] >= 128, truth) >= 0.9


# --- what the engine imports, and what it never touches: in a fresh interpreter ---

PROBE = r"""
import json, os, sys
from pathlib import Path
events = []
sys.addaudithook(lambda e, a: events.append(e) if e.startswith(("socket.", "urllib.")) else None)
before = set(sys.modules)
from iat.app import App
from iat.engines.base import EngineContext
from iat.settings import Settings
cfg = json.loads(sys.argv[1])
app = App(Settings.from_env({}, home=Path(cfg["home"])))
ctx = EngineContext(app)
facts = {}
for arch, (path, sha) in cfg["models"].items():
    app.models.install(Path(path), name=arch, kind="segmentation", sha256=sha, arch=arch)
    facts[arch] = app.engines.get("rembg").process(Path(cfg["image"]), Path(cfg["home"]) / f"{arch}.png",
                                                   {"model": arch}, ctx=ctx).meta["session"]
app.close()
import rembg
print(json.dumps({"modules": sorted(set(sys.modules) - before), "events": events, "facts": facts,
                  "bare": getattr(rembg, "__iat_bare_package__", False)}))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("probe")
    models = {arch: (str(tmp / f"{arch}.onnx"), save(build(), tmp / f"{arch}.onnx")) for arch, build in BUILDERS.items()}
    image, _ = scene_file(tmp, 7201, 320, 240)
    user = tmp / "user"   # HOME: where rembg would make ~/.rembg or read ~/.u2net
    env = {k: v for k, v in os.environ.items() if k not in ("U2NET_HOME", "REMBG_HOME", "XDG_DATA_HOME",
                                                            "IAT_MODELS_DIR")}
    env.update(HOME=str(user), PYTHONPATH=str(ROOT / "sidecar"))
    cfg = {"home": str(tmp / "iat-home"), "models": models, "image": str(image)}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cfg)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=str(tmp))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), user


def test_the_engine_runs_rembg_sessions_without_rembgs_heavy_imports(probe):
    facts, _ = probe
    assert facts["facts"] == {"u2net": "u2net_custom", "isnet": "dis_custom", "birefnet": "birefnet-general"}
    top = {m.split(".")[0] for m in facts["modules"]}
    assert "onnxruntime" in top and "rembg.sessions.u2net_custom" in facts["modules"]
    assert not top & {"pymatting", "numba", "llvmlite", "skimage", "scipy", "jsonschema"}
    assert "rembg.bg" not in facts["modules"] and "rembg.sessions.sam" not in facts["modules"]
    assert facts["bare"] is True   # rembg/__init__.py never ran


def test_sessions_are_built_without_network_or_a_rembg_home(probe):
    facts, user = probe
    assert facts["events"] == []   # no socket was created, no address resolved, no URL opened
    assert not (user / ".rembg").exists() and not (user / ".u2net").exists()


def test_rembg_is_a_default_engine_that_loads_without_onnxruntime():
    from iat.engines import default_engines

    assert default_engines()["rembg"] == "iat.engines.rembg_local:RembgEngine"
    code = ("import sys; from iat.plugins import LazyRegistry; from iat.engines import default_engines; "
            "e = LazyRegistry('engine', default_engines()).get('rembg'); "
            "print(e.op, 'onnxruntime' in sys.modules, 'rembg' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT / "sidecar")},
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["remove_background", "False", "False"], done.stderr[-2000:]
