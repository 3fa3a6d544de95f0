"""The models folders (iat.models.store): install verified by sha256 and by each kind's I/O signature, the manifest,
replace and remove, shipped models, the shared session cache and the execution provider choice. Real onnxruntime
on small models built here (wrong shapes included) and in tests/onnx_models."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from iat.errors import Conflict, Forbidden, InvalidParams, NotFound
from iat.models import manifest as mf
from iat.models.sessions import execution_providers, intra_op_threads
from iat.models.store import ModelStore
from tests.onnx_models import install, model, save
from tests.onnx_models.superres import conv_depth_to_space

# --- models of each kind's shape, and of wrong shapes (a 1x1 convolution from `cin` to `cout` channels) ---


def conv(cin: int, cout: int, *, dtype=TensorProto.FLOAT, inputs: int = 1, sigmoid: bool = False):
    """[1, cin, h, w] -> [1, cout, h, w]; `inputs` 2 adds an unused second input."""
    w = numpy_helper.from_array(np.full((cout, cin, 1, 1), 1.0 / cin, np.float32), "w")
    shape_in, shape_out = [1, cin, "h", "w"], [1, cout, "h", "w"]
    nodes, first = [], "x"
    if dtype != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
        first = "xf"
    nodes.append(helper.make_node("Conv", [first, "w"], ["c" if sigmoid else "y"]))
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["c"], ["y"]))
    ins = [helper.make_tensor_value_info("x", dtype, shape_in)]
    if inputs == 2:
        ins.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    graph = helper.make_graph(nodes, "conv", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)],
                              [w])
    return model(graph)


def rank3():
    """[3, h, w] -> [1, h, w]: a mask model without its batch axis."""
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], axes=[0], keepdims=1)], "rank3",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "h", "w"])])
    return model(graph)


def segmentation():  # u2net's I/O: RGB in, one mask map out
    return conv(3, 1, sigmoid=True)


def matting():  # ViTMatte's I/O: RGB and trimap in, alpha out
    return conv(4, 1, sigmoid=True)


def leftovers(folder: Path) -> list[str]:
    """What is in a models folder besides the manifest, its lock and the files the manifest names."""
    if not folder.is_dir():
        return []
    named = {e.file for e in mf.read(folder).models} | {mf.MANIFEST, ".manifest.lock"}
    return sorted(p.name for p in folder.iterdir() if p.name not in named)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


# --- install ---


def test_install_copies_the_file_verified_by_sha256_and_records_its_signature(store, tmp_path):
    src = tmp_path / "sr.onnx"
    sha = save(conv_depth_to_space(3), src)
    got = store.install(src, name="sr3", kind="super_resolution", sha256=sha.upper(), license="MIT")
    assert got.location == "user" and got.path == store.user_dir / "sr3.onnx" and got.path.is_file()
    assert src.is_file()  # copied, not moved
    entry = mf.read(store.user_dir).models[0]
    assert (entry.name, entry.kind, entry.scale, entry.sha256, entry.size, entry.license, entry.source) == (
        "sr3", "super_resolution", 3, sha, src.stat().st_size, "MIT", "file")
    assert [t.shape for t in entry.io.inputs] == [[1, 3, "h", "w"]]
    assert entry.io.outputs[0].dtype == "tensor(float)"
    assert [m.name for m in store.list()] == ["sr3"] and store.get("sr3").entry == entry
    assert store.find("super_resolution", scale=3) == [got] and store.find("super_resolution", scale=2) == []
    assert leftovers(store.user_dir) == []


def test_a_sha256_mismatch_is_refused_with_nothing_left_behind(store, tmp_path):
    src = tmp_path / "sr.onnx"
    sha = save(conv_depth_to_space(2), src)
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    with pytest.raises(InvalidParams, match="sha256 mismatch") as info:
        store.install(src, name="sr2", kind="super_resolution", sha256=wrong)
    assert info.value.details["expected"] == wrong and info.value.details["actual"] == sha
    assert info.value.details["errors"][0]["loc"] == ["sha256"]
    assert store.list() == [] and leftovers(store.user_dir) == [] and not (store.user_dir / "sr2.onnx").exists()


@pytest.mark.parametrize("kind, arch", [("segmentation", "u2net"), ("matting", None)])
def test_each_kind_installs_a_model_of_its_signature(store, tmp_path, kind, arch):
    proto = segmentation() if kind == "segmentation" else matting()
    got = install(store, proto, "m", kind, tmp_path, arch=arch)
    assert (got.entry.kind, got.entry.arch, got.entry.scale) == (kind, arch, None)


@pytest.mark.parametrize("build, kind, arch, why", [
    (segmentation, "super_resolution", None, "has 1 channels, not 3"),
    (lambda: conv_depth_to_space(2), "segmentation", "u2net", "has 3 channels, not 1"),
    (lambda: conv(3, 1), "matting", None, "has 3 channels, not 4"),
    (rank3, "segmentation", "isnet", "rank 3, not 4"),
    (lambda: conv(3, 1, dtype=TensorProto.INT64), "segmentation", "u2net", "is tensor(int64), not tensor(float)"),
    (lambda: conv(3, 1, inputs=2), "segmentation", "birefnet", "2 inputs and 1 outputs"),
    (lambda: conv(3, 3), "super_resolution", None, "not an integer upscale"),
])
def test_a_model_whose_io_does_not_fit_its_kind_is_refused(store, tmp_path, build, kind, arch, why):
    with pytest.raises(InvalidParams, match="signature its kind needs") as info:
        install(store, build(), "bad", kind, tmp_path, arch=arch)
    assert why in info.value.details["errors"][0]["msg"]
    assert info.value.details["io"]["inputs"]  # what the file has, for the user to compare
    assert store.list() == [] and leftovers(store.user_dir) == []


def test_a_file_onnxruntime_cannot_load_is_not_a_model(store, tmp_path):
    src = tmp_path / "junk.onnx"
    src.write_bytes(b"\x08\x07 not a protobuf model" * 100)
    import hashlib

    with pytest.raises(InvalidParams, match="not a model onnxruntime can load"):
        store.install(src, name="junk", kind="matting", sha256=hashlib.sha256(src.read_bytes()).hexdigest())
    assert store.list() == [] and leftovers(store.user_dir) == []


def test_paths_that_are_not_readable_files_are_typed_errors(store, tmp_path):
    sha = "a" * 64
    with pytest.raises(NotFound, match="no file at"):
        store.install(tmp_path / "absent.onnx", name="x", kind="matting", sha256=sha)
    with pytest.raises(InvalidParams, match="not a regular file"):
        store.install(tmp_path, name="x", kind="matting", sha256=sha)
    with pytest.raises(InvalidParams, match="cannot be read"):
        store.install(Path("/tmp/a\x00b"), name="x", kind="matting", sha256=sha)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidParams, match="not a regular file"):
        store.install(fifo, name="x", kind="matting", sha256=sha)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.onnx"
        save(matting(), locked)
        locked.chmod(0)
        with pytest.raises(Forbidden):
            store.install(locked, name="x", kind="matting", sha256=sha)
    assert leftovers(store.user_dir) == []


@pytest.mark.parametrize("fields, loc", [
    ({"name": "../escape"}, "name"), ({"name": "Upper"}, "name"), ({"kind": "other"}, "kind"),
    ({"arch": "unet"}, "arch"), ({"sha256": "abc"}, "sha256"), ({"arch": None}, "arch"),
    ({"kind": "matting"}, "arch"),
])
def test_install_checks_its_arguments_before_touching_the_folder(store, tmp_path, fields, loc):
    src = tmp_path / "seg.onnx"
    sha = save(segmentation(), src)
    args = {"name": "seg", "kind": "segmentation", "arch": "u2net", "sha256": sha, **fields}
    with pytest.raises(InvalidParams) as info:
        store.install(src, **args)
    assert info.value.details["errors"][0]["loc"] == [loc]
    assert not store.user_dir.exists() or leftovers(store.user_dir) == []


# --- the manifest ---


def test_a_damaged_manifest_is_a_clear_error_and_is_never_overwritten(store, tmp_path):
    store.user_dir.mkdir(parents=True)
    damaged = store.user_dir / mf.MANIFEST
    damaged.write_text('{"format": 1, "models": [{"name": "x"', encoding="utf-8")
    with pytest.raises(Conflict, match="manifest .* is damaged: fix or remove it") as info:
        store.list()
    assert info.value.details["path"] == str(damaged) and info.value.details["reason"]
    src = tmp_path / "m.onnx"
    sha = save(matting(), src)
    for attempt in (lambda: store.install(src, name="m", kind="matting", sha256=sha, replace=True),
                    lambda: store.remove("x")):
        with pytest.raises(Conflict, match="damaged"):
            attempt()
    assert damaged.read_text(encoding="utf-8") == '{"format": 1, "models": [{"name": "x"'
    assert sorted(p.name for p in store.user_dir.iterdir()) == [".manifest.lock", mf.MANIFEST]


def test_a_manifest_naming_a_file_outside_its_folder_is_damaged(store, tmp_path):
    good = install(store, matting(), "m", "matting", tmp_path)
    data = json.loads((store.user_dir / mf.MANIFEST).read_text())
    data["models"][0]["file"] = "../../victim.txt"
    (store.user_dir / mf.MANIFEST).write_text(json.dumps(data))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    with pytest.raises(Conflict, match="damaged"):
        store.remove("m")
    assert victim.read_text() == "keep me" and good.path.is_file()


def test_a_model_whose_file_went_missing_is_listed_but_not_found(store, tmp_path):
    got = install(store, matting(), "m", "matting", tmp_path)
    got.path.unlink()
    assert [m.name for m in store.list()] == ["m"] and store.find("matting") == []
    with pytest.raises(NotFound) as info:
        store.get("m")
    assert info.value.details["reason"] == "file_missing"


# --- replace and remove ---


def test_a_second_model_of_the_same_name_is_a_conflict_unless_replace(store, tmp_path):
    first = install(store, conv_depth_to_space(2, seed=1), "sr", "super_resolution", tmp_path)
    with pytest.raises(Conflict, match="remove it first or install with replace"):
        install(store, conv_depth_to_space(4, seed=2), "sr", "super_resolution", tmp_path)
    assert store.get("sr").entry.sha256 == first.entry.sha256 and leftovers(store.user_dir) == []
    second = install(store, conv_depth_to_space(4, seed=2), "sr", "super_resolution", tmp_path, replace=True)
    assert [m.entry.scale for m in store.list()] == [4] and second.entry.sha256 != first.entry.sha256
    assert len(mf.read(store.user_dir).models) == 1


def test_remove_deletes_the_file_and_its_entry(store, tmp_path):
    keep = install(store, matting(), "keep", "matting", tmp_path)
    gone = install(store, segmentation(), "gone", "segmentation", tmp_path, arch="isnet")
    removed = store.remove("gone")
    assert removed.entry == gone.entry and not gone.path.exists() and keep.path.is_file()
    assert [m.name for m in store.list()] == ["keep"]
    with pytest.raises(NotFound):
        store.remove("gone")
    with pytest.raises(NotFound):
        store.get("gone")


# --- shipped models ---


@pytest.fixture
def bundled(tmp_path: Path) -> Path:
    """A folder like the one shipped beside the frozen executable: a manifest and its models (written by a store
    pointed at it, so the manifest is what the installer's build writes)."""
    folder = tmp_path / "bundled"
    builder = ModelStore(folder)
    install(builder, segmentation(), "u2net", "segmentation", tmp_path / "b", arch="u2net", license="Apache-2.0")
    install(builder, conv_depth_to_space(2), "sr", "super_resolution", tmp_path / "b")
    (folder / ".manifest.lock").unlink()
    return folder


def test_shipped_models_are_found_and_cannot_be_removed(tmp_path, bundled):
    store = ModelStore(tmp_path / "user", bundled)
    assert [(m.name, m.location) for m in store.list()] == [("u2net", "bundled"), ("sr", "bundled")]
    assert store.get("u2net").path == bundled / "u2net.onnx"
    assert [m.name for m in store.find("segmentation", arch="u2net")] == ["u2net"]
    with pytest.raises(Conflict, match="ships with the installer") as info:
        store.remove("u2net")
    assert info.value.details["location"] == "bundled"
    assert (bundled / "u2net.onnx").is_file() and [m.name for m in mf.read(bundled).models] == ["u2net", "sr"]


def test_a_user_model_shadows_a_shipped_one_of_the_same_name(tmp_path, bundled):
    store = ModelStore(tmp_path / "user", bundled)
    shipped = store.get("u2net")
    mine = install(store, segmentation(), "u2net", "segmentation", tmp_path / "u", arch="isnet")  # no replace needed
    assert [(m.name, m.location) for m in store.list()] == [("u2net", "user"), ("sr", "bundled")]
    assert store.get("u2net").path == mine.path and store.get("u2net").entry.arch == "isnet"
    assert store.find("segmentation", arch="u2net") == []
    store.remove("u2net")
    assert store.get("u2net") == shipped  # the shipped one shows again


def test_a_damaged_shipped_manifest_says_which_folder(tmp_path, bundled):
    (bundled / mf.MANIFEST).write_text("not json")
    with pytest.raises(Conflict, match="bundled models manifest"):
        ModelStore(tmp_path / "user", bundled).list()


# --- sessions ---


def test_one_session_per_model_across_threads_evicted_on_remove(store, tmp_path):
    got = install(store, conv_depth_to_space(2), "sr", "super_resolution", tmp_path)
    other = install(store, matting(), "mat", "matting", tmp_path)
    builds_before = store.sessions.builds
    barrier = threading.Barrier(8)

    def open_session(_):
        barrier.wait()
        return store.session(store.get("sr"))

    with ThreadPoolExecutor(8) as pool:
        sessions = list(pool.map(open_session, range(8)))
    assert len({id(s) for s in sessions}) == 1 and store.sessions.builds == builds_before + 1
    out = sessions[0].run(None, {"x": np.zeros((1, 3, 5, 7), np.float32)})[0]
    assert out.shape == (1, 3, 10, 14)
    assert store.session(other) is not sessions[0] and store.sessions.builds == builds_before + 2

    wrapped = [store.cached(got, "rembg", lambda: object()) for _ in range(3)]
    assert wrapped[0] is wrapped[1] is wrapped[2] and store.sessions.builds == builds_before + 3

    store.remove("sr")
    install(store, conv_depth_to_space(2), "sr", "super_resolution", tmp_path)  # the same file again
    again = store.session(store.get("sr"))
    assert again is not sessions[0] and store.cached(store.get("sr"), "rembg", lambda: object()) is not wrapped[0]
    assert store.session(other) is store.session(other)  # the other model's session stayed
    assert store.sessions.builds == builds_before + 5


def test_replacing_a_model_gives_its_users_a_new_session(store, tmp_path):
    install(store, conv_depth_to_space(2, seed=1), "sr", "super_resolution", tmp_path)
    old = store.session(store.get("sr"))
    install(store, conv_depth_to_space(3, seed=1), "sr", "super_resolution", tmp_path, replace=True)
    new = store.session(store.get("sr"))
    assert new is not old
    assert new.run(None, {"x": np.zeros((1, 3, 4, 4), np.float32)})[0].shape == (1, 3, 12, 12)


# --- execution providers ---

CUDA, DML, COREML, CPU = ("CUDAExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider",
                          "CPUExecutionProvider")


@pytest.mark.parametrize("available, wanted, chosen", [
    ([CPU], None, [CPU]),
    ([CPU, "AzureExecutionProvider"], None, [CPU]),
    ([COREML, CPU, CUDA, "TensorrtExecutionProvider"], None, [CUDA, COREML, CPU]),
    ([DML, CPU], None, [DML, CPU]),
    ([CUDA], None, [CUDA, CPU]),  # CPU always last, always there
    ([CUDA, CPU], "CPUExecutionProvider", [CPU]),
    ([CUDA, DML, CPU], f"{DML}, {CUDA}", [DML, CUDA, CPU]),  # the variable's order
    ([CPU], CUDA, [CPU]),  # asked for, not there
    ([CUDA, CPU], " , ", [CUDA, CPU]),  # nothing named: the default order
])
def test_execution_providers_from_what_onnxruntime_offers(monkeypatch, available, wanted, chosen):
    if wanted is None:
        monkeypatch.delenv("IAT_ONNX_PROVIDERS", raising=False)
    else:
        monkeypatch.setenv("IAT_ONNX_PROVIDERS", wanted)
    assert execution_providers(available) == chosen


def test_execution_providers_of_the_installed_onnxruntime(monkeypatch):
    import onnxruntime as ort

    monkeypatch.delenv("IAT_ONNX_PROVIDERS", raising=False)
    chosen = execution_providers()
    assert chosen[-1] == CPU and set(chosen) <= set(ort.get_available_providers()) | {CPU}


@pytest.mark.parametrize("cores, threads", [(16, 15), (2, 1), (1, 1), (None, 1)])
def test_inference_leaves_one_core_free(monkeypatch, cores, threads):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert intra_op_threads() == threads
