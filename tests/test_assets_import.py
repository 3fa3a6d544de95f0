"""Assets with lineage: the content-addressed store, assets.import (all or nothing), links and lineage."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import uuid
import wave
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from iat.app import App
from iat.assets import importer, repo, sniff, store
from iat.clock import utcnow
from iat.errors import Conflict, Forbidden

from support import Client


def png(path: Path, size=(32, 24), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "PNG")
    return path


def asset_files(root: Path) -> list[Path]:
    """Every file under the project's store, temp files included."""
    return sorted(p for p in (root / "assets").rglob("*") if p.is_file())


def root_of(alpha: dict) -> Path:
    return Path(alpha["root_dir"])


def rows(client: Client, slug: str = "alpha") -> list[dict]:
    return client.call("assets.list", slug=slug, limit=500)["items"]


# --- content addressing ---


def test_same_bytes_are_stored_once_under_their_hash(client: Client, alpha: dict, src: Path):
    a = png(src / "a.png")
    (src / "copy-of-a.png").write_bytes(a.read_bytes())
    sha = hashlib.sha256(a.read_bytes()).hexdigest()

    first = client.call("assets.import", slug="alpha", paths=[str(a), str(src / "copy-of-a.png")])
    assert [i["deduplicated"] for i in first["items"]] == [False, True]
    assert first["created"] == 1 and first["deduplicated"] == 1
    item = first["items"][0]
    assert first["items"][1]["id"] == item["id"]
    assert item["storage_uri"] == f"assets/{sha[:2]}/{sha}.png"  # relative to the project root
    assert item["storage_backend"] == "local" and item["sha256"] == sha and item["kind"] == "input"
    assert item["metadata_json"]["size_bytes"] == a.stat().st_size
    stored = store.abs_path(root_of(alpha), item["storage_uri"])
    assert stored.read_bytes() == a.read_bytes()

    again = client.call("assets.import", slug="alpha", paths=[str(a)])
    assert again["items"][0]["id"] == item["id"] and again["items"][0]["deduplicated"] is True
    assert again["created"] == 0
    assert len(rows(client)) == 1 and asset_files(root_of(alpha)) == [stored]

    # Another kind is another asset row, still the same one file.
    ref = client.call("assets.import", slug="alpha", paths=[str(a)], kind="reference")["items"][0]
    assert ref["id"] != item["id"] and ref["storage_uri"] == item["storage_uri"] and not ref["deduplicated"]
    assert len(rows(client)) == 2 and asset_files(root_of(alpha)) == [stored]


def test_folder_import_recursive_or_not(client: Client, alpha: dict, src: Path):
    png(src / "top.png", color=(1, 2, 3))
    png(src / "sub" / "deep.png", color=(4, 5, 6))
    png(src / "sub" / "deeper" / "deepest.png", color=(7, 8, 9))
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # hidden: not part of a folder import
    (src / "sub" / ".hidden").mkdir()
    png(src / "sub" / ".hidden" / "x.png", color=(9, 9, 9))

    (src / "empty").mkdir()
    audit_before = client.call("audit.list", slug="alpha")["items"]
    nothing = client.call("assets.import", slug="alpha", paths=[str(src / "empty")])
    assert nothing == {"items": [], "created": 0, "deduplicated": 0}
    assert client.call("audit.list", slug="alpha")["items"] == audit_before  # no change, nothing audited

    flat = client.call("assets.import", slug="alpha", paths=[str(src)])
    assert [Path(i["source_path"]).name for i in flat["items"]] == ["top.png"]

    deep = client.call("assets.import", slug="alpha", paths=[str(src)], recursive=True)
    assert sorted(Path(i["source_path"]).name for i in deep["items"]) == ["deep.png", "deepest.png", "top.png"]
    assert [i["deduplicated"] for i in deep["items"] if i["source_path"].endswith("top.png")] == [True]
    assert len(rows(client)) == 3 and len(asset_files(root_of(alpha))) == 3


def _samples(folder: Path) -> dict[str, tuple[str, tuple[int, int] | None]]:
    """Files of many types: name -> (expected MIME type, expected size or None)."""
    Image.new("RGB", (40, 30), "red").save(folder / "p.png")
    Image.new("RGB", (41, 31), "red").save(folder / "j.jpeg", "JPEG")
    Image.new("RGB", (42, 32), "red").save(folder / "w.webp", "WEBP")
    Image.new("P", (43, 33)).save(folder / "g.gif", "GIF")
    Image.new("RGB", (44, 34), "red").save(folder / "t.tiff", "TIFF")
    Image.new("RGB", (45, 35), "red").save(folder / "b.bmp", "BMP")
    (folder / "d.json").write_text(json.dumps({"a": [1, 2]}))
    (folder / "c.csv").write_text("job_key,scene\nj1,forest\n")
    (folder / "n.txt").write_text("plain words, ünïcode too\n")
    (folder / "h.html").write_text("<!DOCTYPE html><html><body>hi</body></html>")
    with wave.open(str(folder / "s.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 800)
    (folder / "m.mp3").write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" + bytes(400))
    (folder / "o.ogg").write_bytes(b"OggS\x00\x02" + bytes(100))
    (folder / "doc.pdf").write_bytes(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")
    with zipfile.ZipFile(folder / "z.zip", "w") as z:
        z.writestr("inside.txt", "hello")
    (folder / "plain.gz").write_bytes(gzip.compress(b"not a tarball"))
    with tarfile.open(folder / "bundle.tar.gz", "w:gz") as t:
        data = b"hello"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    (folder / "noext").write_bytes(bytes(range(256)))
    return {"p.png": ("image/png", (40, 30)), "j.jpeg": ("image/jpeg", (41, 31)),
            "w.webp": ("image/webp", (42, 32)), "g.gif": ("image/gif", (43, 33)),
            "t.tiff": ("image/tiff", (44, 34)), "b.bmp": ("image/bmp", (45, 35)),
            "d.json": ("application/json", None), "c.csv": ("text/csv", None), "n.txt": ("text/plain", None),
            "h.html": ("text/html", None), "s.wav": ("audio/wav", None), "m.mp3": ("audio/mpeg", None),
            "o.ogg": ("audio/ogg", None), "doc.pdf": ("application/pdf", None),
            "z.zip": ("application/zip", None), "plain.gz": ("application/gzip", None),
            "bundle.tar.gz": ("application/gzip", None), "noext": ("application/octet-stream", None)}


def test_mime_types_and_image_sizes_come_from_the_content(client: Client, alpha: dict, src: Path):
    expected = _samples(src)
    result = client.call("assets.import", slug="alpha", paths=[str(src)])
    got = {Path(i["source_path"]).name: i for i in result["items"]}
    assert set(got) == set(expected)
    for name, (mime, size) in expected.items():
        item = got[name]
        assert item["mime_type"] == mime, name
        assert (item["width"], item["height"]) == (size or (None, None)), name
    assert got["j.jpeg"]["storage_uri"].endswith(".jpg")  # the content's canonical extension
    assert got["bundle.tar.gz"]["storage_uri"].endswith(".tar.gz")
    assert got["plain.gz"]["storage_uri"].endswith(".gz") and not got["plain.gz"]["storage_uri"].endswith(".tar.gz")
    assert got["noext"]["storage_uri"].endswith(".bin")


def test_sniffing_reads_headers_only_and_checks_claims(tmp_path: Path):
    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000), "white").save(big)
    head = big.read_bytes()[:64]  # the header alone is enough for the size
    found = sniff.sniff(head)
    assert (found.mime_type, found.width, found.height) == ("image/png", 3000, 2000)
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, "JPEG")
    with pytest.raises(sniff.ContentMismatch, match="claims image/png"):
        sniff.check_claim("photo.png", sniff.sniff(jpeg.getvalue()))
    with pytest.raises(sniff.ContentMismatch):
        sniff.check_claim("x.json", sniff.sniff(b"a,b\n1,2\n", claimed="json"))
    with pytest.raises(sniff.ContentMismatch):
        sniff.check_claim("x.tar.gz", sniff.sniff(gzip.compress(b"plain")))
    sniff.check_claim("x.JPG", sniff.sniff(jpeg.getvalue()))  # case does not matter
    sniff.check_claim("model.safetensors", sniff.sniff(b"\x00\x01binary"))  # unknown extension: no claim
    with pytest.raises(sniff.ContentMismatch, match="image header"):
        sniff.sniff(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)


# --- refusals: nothing of the batch is imported ---


def _refused(client: Client, alpha: dict, paths: list[str], expected_type: str, name: str, **params) -> dict:
    before_rows, before_files = rows(client), asset_files(root_of(alpha))
    audit_before = len(client.call("audit.list", slug="alpha", limit=500)["items"])
    err = client.error("assets.import", slug="alpha", paths=paths, **params)
    assert err.name == name, err.message
    errors = err.details["errors"]
    assert expected_type in {e["type"] for e in errors}, errors
    for e in errors:
        assert e["path"] in e["msg"]  # each problem names its path
    assert rows(client) == before_rows
    assert asset_files(root_of(alpha)) == before_files  # no file, no temp left behind
    assert len(client.call("audit.list", slug="alpha", limit=500)["items"]) == audit_before
    return err.details


def test_paths_outside_the_import_roots_are_refused(client: Client, alpha: dict, src: Path, tmp_path: Path):
    outside = png(tmp_path / "outside" / "secret.png")
    good = png(src / "good.png")
    _refused(client, alpha, [str(good), f"{src}/../outside/secret.png"], "outside_import_roots", "forbidden")
    _refused(client, alpha, [str(outside)], "outside_import_roots", "forbidden")
    _refused(client, alpha, [str(src / "missing.png")], "not_found", "not_found")
    # Access is the first thing a mixed refusal names.
    details = _refused(client, alpha, [str(src / "missing.png"), str(outside)], "not_found", "forbidden")
    assert len(details["errors"]) == 2
    err = client.error("assets.import", slug="alpha", paths=["relative/x.png"])  # refused by the schema
    assert err.name == "invalid_params" and err.details["errors"][0]["loc"] == ["paths", 0]


def test_symlinks_that_escape_are_refused(client: Client, alpha: dict, src: Path, tmp_path: Path):
    outside = png(tmp_path / "outside" / "secret.png")
    png(src / "fine.png")
    (src / "link.png").symlink_to(outside)
    details = _refused(client, alpha, [str(src)], "symlink_escapes", "forbidden")  # found inside a folder
    assert any(e["path"].endswith("link.png") and str(outside) in e["msg"] for e in details["errors"])
    _refused(client, alpha, [str(src / "link.png")], "symlink_escapes", "forbidden")  # named directly
    (src / "dirlink").symlink_to(tmp_path / "outside", target_is_directory=True)
    (src / "link.png").unlink()
    _refused(client, alpha, [str(src)], "symlink_escapes", "forbidden", recursive=True)


def test_a_symlink_inside_the_roots_is_followed(client: Client, alpha: dict, src: Path):
    real = png(src / "real.png")
    (src / "alias.png").symlink_to(real)
    result = client.call("assets.import", slug="alpha", paths=[str(src / "alias.png"), str(real)])
    assert len(result["items"]) == 1  # one file, named twice


def test_content_contradicting_the_extension_is_refused(client: Client, alpha: dict, src: Path):
    (src / "text.png").write_text("not an image at all")
    details = _refused(client, alpha, [str(src / "text.png")], "content_mismatch", "invalid_params")
    assert "text/plain" in details["errors"][0]["msg"]


def test_a_mixed_batch_with_one_bad_file_imports_nothing(client: Client, alpha: dict, src: Path):
    for i in range(12):
        png(src / f"ok{i:02d}.png", color=(i, i, i))
    jpeg_named_png = src / "zz-fake.png"
    Image.new("RGB", (8, 8)).save(jpeg_named_png, "JPEG")
    details = _refused(client, alpha, [str(src)], "content_mismatch", "invalid_params")
    assert [e["path"] for e in details["errors"]] == [str(jpeg_named_png)]
    assert "image/jpeg" in details["errors"][0]["msg"]


def test_the_projects_own_store_is_not_importable(client: Client, project: dict):
    root = Path(project["root_dir"])
    _refused(client, {"root_dir": str(root)}, [str(root / "project.db")], "inside_project_store", "forbidden")


def test_a_failed_write_removes_the_files_it_placed(client: Client, alpha: dict, src: Path, monkeypatch):
    kept = client.call("assets.import", slug="alpha", paths=[str(png(src / "kept.png", color=(5, 5, 5)))])
    png(src / "new.png", color=(6, 6, 6))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")  # after the files were renamed into place, before any row

    monkeypatch.setattr(repo, "import_assets", broken)
    with pytest.raises(Exception):
        client.call("assets.import", slug="alpha", paths=[str(src / "kept.png"), str(src / "new.png")])
    # The new file went; the file a row references stayed.
    assert asset_files(root_of(alpha)) == [store.abs_path(root_of(alpha), kept["items"][0]["storage_uri"])]
    assert len(rows(client)) == 1


# --- progress and events ---


def test_progress_notifications_reach_subscribers(client: Client, app: App, alpha: dict, src: Path, monkeypatch):
    for i in range(25):
        png(src / f"f{i:02d}.png", color=(i, 0, 0))
    seen: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def subscriber(name: str, payload: dict) -> None:
        with lock:
            seen.append((name, payload))

    app.events.subscribe(subscriber)
    monkeypatch.setattr(importer, "PROGRESS_INTERVAL_S", 0.0)  # every file, to see the counts move
    client.call("assets.import", slug="alpha", paths=[str(src)])
    assert app.events.drain()
    progress = [p for n, p in seen if n == "assets.import.progress"]
    assert progress[-1] == {"project_id": alpha["id"], "slug": "alpha", "done": 25, "total": 25}
    dones = [p["done"] for p in progress]
    assert len(dones) > 2 and dones == sorted(dones)
    imported = [p for n, p in seen if n == "assets.imported"]
    assert len(imported) == 1 and len(imported[0]["asset_ids"]) == 25

    seen.clear()
    monkeypatch.setattr(importer, "PROGRESS_INTERVAL_S", 0.2)  # the real pace: a quick import says it once
    for i in range(25):
        png(src / "more" / f"g{i:02d}.png", color=(0, i, 0))
    client.call("assets.import", slug="alpha", paths=[str(src / "more")])
    assert app.events.drain()
    progress = [p for n, p in seen if n == "assets.import.progress"]
    assert 1 <= len(progress) <= 3 and progress[-1]["done"] == 25


# --- links and lineage ---


@pytest.fixture
def graph(client: Client, alpha: dict, src: Path) -> dict[str, str]:
    """A -> B -> C (derived_from), M mask_for A, R reference_of B."""
    names = ["A", "B", "C", "M", "R"]
    for i, name in enumerate(names):
        png(src / f"{name}.png", color=(i * 40, 0, 0))
    result = client.call("assets.import", slug="alpha", paths=[str(src / f"{n}.png") for n in names])
    ids = {Path(i["source_path"]).stem: i["id"] for i in result["items"]}
    for parent, child, link_type in [("A", "B", "derived_from"), ("B", "C", "derived_from"),
                                     ("A", "M", "mask_for"), ("R", "B", "reference_of")]:
        link = client.call("assets.link", slug="alpha", parent_asset_id=ids[parent], child_asset_id=ids[child],
                           link_type=link_type)
        assert (link["parent_asset_id"], link["child_asset_id"], link["link_type"]) == \
            (ids[parent], ids[child], link_type)
    return ids


def _depths(lineage: dict, ids: dict[str, str]) -> dict[str, int]:
    by_id = {v: k for k, v in ids.items()}
    return {by_id[n["id"]]: n["depth"] for n in lineage["nodes"]}


def _edges(lineage: dict, ids: dict[str, str]) -> set[tuple[str, str, str]]:
    by_id = {v: k for k, v in ids.items()}
    return {(by_id[e["parent_asset_id"]], by_id[e["child_asset_id"]], e["link_type"]) for e in lineage["edges"]}


def test_lineage_in_both_directions(client: Client, graph: dict[str, str]):
    up = client.call("assets.lineage", slug="alpha", asset_id=graph["C"], direction="ancestors")
    assert _depths(up, graph) == {"C": 0, "B": 1, "A": 2, "R": 2}
    assert _edges(up, graph) == {("A", "B", "derived_from"), ("B", "C", "derived_from"),
                                 ("R", "B", "reference_of")}
    assert up["nodes"][0]["id"] == graph["C"] and up["nodes"][0]["mime_type"] == "image/png"

    down = client.call("assets.lineage", slug="alpha", asset_id=graph["A"], direction="descendants")
    assert _depths(down, graph) == {"A": 0, "B": 1, "M": 1, "C": 2}
    assert _edges(down, graph) == {("A", "B", "derived_from"), ("B", "C", "derived_from"), ("A", "M", "mask_for")}

    near = client.call("assets.lineage", slug="alpha", asset_id=graph["A"], direction="descendants", max_depth=1)
    assert _depths(near, graph) == {"A": 0, "B": 1, "M": 1}
    alone = client.call("assets.lineage", slug="alpha", asset_id=graph["M"], direction="descendants")
    assert _depths(alone, graph) == {"M": 0} and alone["edges"] == []


def test_links_refuse_cycles_self_links_and_duplicates(client: Client, graph: dict[str, str]):
    err = client.error("assets.link", slug="alpha", parent_asset_id=graph["C"], child_asset_id=graph["A"],
                       link_type="derived_from")
    assert err.name == "conflict" and "cycle" in err.message
    assert client.error("assets.link", slug="alpha", parent_asset_id=graph["A"], child_asset_id=graph["A"],
                        link_type="variant_of").name == "conflict"
    assert client.error("assets.link", slug="alpha", parent_asset_id=graph["A"], child_asset_id=graph["B"],
                        link_type="derived_from").name == "conflict"
    # Other link types may loop; the lineage walk still ends.
    client.call("assets.link", slug="alpha", parent_asset_id=graph["C"], child_asset_id=graph["A"],
                link_type="variant_of")
    loop = client.call("assets.lineage", slug="alpha", asset_id=graph["A"], direction="descendants")
    assert _depths(loop, graph) == {"A": 0, "B": 1, "M": 1, "C": 2}
    events = [e["event_code"] for e in client.call("audit.list", slug="alpha", limit=500)["items"]]
    assert events.count("asset.linked") == 5 and events.count("assets.imported") == 1


def test_a_link_to_another_projects_asset_is_refused(client: Client, graph: dict[str, str], tmp_path: Path):
    beta = client.call("projects.create", slug="beta", name="Beta")
    other = png(tmp_path / "beta-in" / "x.png", color=(1, 1, 1))
    client.call("projects.update", slug="beta", settings_json={"import_roots": [str(other.parent)]})
    foreign = client.call("assets.import", slug="beta", paths=[str(other)])["items"][0]
    assert foreign["project_id"] == beta["id"]
    err = client.error("assets.link", slug="alpha", parent_asset_id=graph["A"], child_asset_id=foreign["id"],
                       link_type="derived_from")
    assert err.name == "conflict" and "one project" in err.message
    assert err.details == {"asset_id": foreign["id"], "param": "child_asset_id"}
    err = client.error("assets.link", slug="beta", parent_asset_id=graph["A"], child_asset_id=foreign["id"],
                       link_type="derived_from")
    assert err.details["param"] == "parent_asset_id"
    down = client.call("assets.lineage", slug="alpha", asset_id=graph["A"], direction="descendants")
    assert foreign["id"] not in {n["id"] for n in down["nodes"]}
    assert client.error("assets.lineage", slug="beta", asset_id=graph["A"],
                        direction="ancestors").name == "not_found"


# --- the store's API for other code ---


def test_put_bytes_dedups_and_sweep_removes_orphans_and_temps(tmp_path: Path):
    root = tmp_path / "proj"
    (root / "assets").mkdir(parents=True)
    one = io.BytesIO()
    Image.new("RGB", (5, 7), "green").save(one, "PNG")
    kept = store.put_bytes(root, one.getvalue())
    assert (kept.mime_type, kept.width, kept.height, kept.ext) == ("image/png", 5, 7, "png")
    assert store.put_bytes(root, one.getvalue()) == kept  # same bytes, same address, one file
    orphan = store.put_bytes(root, b"an unreferenced note\n")
    assert orphan.rel_uri.endswith(".txt")
    stray = store.temp_dir(root) / "deadbeef.part"  # an older writer's name, no pid: gone
    stray.write_bytes(b"half a file")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = store.temp_dir(root) / f"{int(gone.stdout)}-0123.part"  # a writer that exited (killed mid-write)
    dead.write_bytes(b"half a file")
    live = store.stage_bytes(root, b"a write in flight in this process")  # a live writer's: kept
    foreign = root / "assets" / "README"
    foreign.write_text("not the store's")  # outside the layout: left alone

    removed = store.sweep_orphans(root, {kept.rel_uri})
    assert sorted(removed) == sorted([orphan.rel_uri, "assets/.tmp/deadbeef.part", f"assets/.tmp/{dead.name}"])
    assert store.abs_path(root, kept.rel_uri).is_file() and foreign.is_file() and Path(live.temp).is_file()
    assert not store.abs_path(root, orphan.rel_uri).exists() and not stray.exists() and not dead.exists()
    assert store.sweep_orphans(root, {kept.rel_uri}) == []
    store.discard([live])


def test_put_file_refuses_a_lying_extension_and_leaves_no_temp(tmp_path: Path):
    root = tmp_path / "proj"
    liar = tmp_path / "liar.png"
    liar.write_text("text")
    with pytest.raises(sniff.ContentMismatch):
        store.put_file(root, liar)
    assert asset_files(root) == []
    ok = store.put_file(root, png(tmp_path / "ok.png"))
    assert store.abs_path(root, ok.rel_uri).read_bytes() == (tmp_path / "ok.png").read_bytes()


@pytest.mark.parametrize("uri", ["/etc/passwd", "../x", "assets/../../x", "assets\\..\\x", "C:/x", "s3://b/k", ""])
def test_abs_path_refuses_uris_leaving_the_project(tmp_path: Path, uri: str):
    with pytest.raises(Forbidden):
        store.abs_path(tmp_path, uri)


def test_abs_path_refuses_a_symlink_out_of_the_project(tmp_path: Path):
    root = tmp_path / "proj"
    (root / "assets").mkdir(parents=True)
    (root / "assets" / "out").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(Forbidden):
        store.abs_path(root, "assets/out/x.png")
    assert store.abs_path(root, "assets/ab/x.png") == root.resolve() / "assets" / "ab" / "x.png"


def test_insert_asset_for_the_runner(app: App, client: Client, project: dict):
    handle = app.projects.open("alpha")
    stored = store.put_bytes(handle.root, b'{"run": 1}')
    row = handle.store.write(repo.insert_asset, handle.id, "run_log", stored, {"run_id": "r1"}, utcnow())
    assert row["mime_type"] == "application/json" and row["metadata_json"] == {"size_bytes": 10, "run_id": "r1"}
    assert handle.store.read(repo.find_by_sha, handle.id, stored.sha256)["id"] == row["id"]
    assert handle.store.read(repo.find_by_sha, handle.id, stored.sha256, "input") is None
    assert client.call("assets.get", slug="alpha", asset_id=row["id"])["storage_uri"] == stored.rel_uri
    assert "asset.created" in [e["event_code"] for e in client.call("audit.list", slug="alpha")["items"]]
    assert os.path.isfile(store.abs_path(handle.root, row["storage_uri"]))


# --- the same repository code on both engines ---


def _project(engine_store, slug: str) -> str:
    from iat.projects import repo as projects

    now = utcnow()
    owner = {"id": str(uuid.uuid4()), "username": f"u-{slug}", "display_name": "U", "email": None,
             "is_active": True, "created_at": now, "updated_at": now}
    pid = str(uuid.uuid4())
    engine_store.write(projects.create_project, owner, {"id": pid, "slug": slug, "name": slug, "description": "",
                                              "settings_json": {}}, {"local_base_dir": "/p"}, now)
    return pid


def test_repository_on_both_engines(engine_store):
    """Batch insert, dedup, links, the cycle check, lineage and the project scope on a shared database."""
    a, b = _project(engine_store, "a"), _project(engine_store, "b")

    def stored(n: int) -> store.StoredFile:
        sha = hashlib.sha256(str(n).encode()).hexdigest()
        return store.StoredFile(sha, store.address(sha, "png"), 10 + n, "image/png", n + 1, n + 2, "png")

    files = [(stored(n), {"original_name": f"{n}.png"}) for n in (0, 1, 2, 1)]
    out = engine_store.write(repo.import_assets, a, "input", files, utcnow(), None)
    assert [dedup for _, dedup in out] == [False, False, False, True] and out[3][0]["id"] == out[1][0]["id"]
    [(first, dedup)] = engine_store.write(repo.import_assets, a, "input", files[:1], utcnow(), None)
    assert first["id"] == out[0][0]["id"] and dedup is True
    ids = [row["id"] for row, _ in out[:3]]
    row = engine_store.read(repo.get_asset, a, ids[2])
    assert (row["width"], row["height"], row["metadata_json"]) == (3, 4, {"size_bytes": 12, "original_name": "2.png"})
    foreign = engine_store.write(repo.insert_asset, b, "input", stored(9), {}, utcnow())

    now = utcnow()
    engine_store.write(repo.insert_link, a, ids[0], ids[1], "derived_from", now)
    engine_store.write(repo.insert_link, a, ids[1], ids[2], "derived_from", now)
    with pytest.raises(Conflict):
        engine_store.write(repo.insert_link, a, ids[2], ids[0], "derived_from", now)
    with pytest.raises(Conflict):  # the row exists in this database, but in project b
        engine_store.write(repo.insert_link, a, ids[0], foreign["id"], "derived_from", now)
    up = engine_store.read(repo.lineage, a, ids[2], "ancestors")
    assert [(n["id"], n["depth"]) for n in up["nodes"]] == [(ids[2], 0), (ids[1], 1), (ids[0], 2)]
    assert len(up["edges"]) == 2
    down = engine_store.read(repo.lineage, a, ids[0], "descendants", 1)
    assert [(n["id"], n["depth"]) for n in down["nodes"]] == [(ids[0], 0), (ids[1], 1)]
    assert engine_store.read(repo.referenced_uris, a, [stored(0).rel_uri, stored(9).rel_uri]) == {stored(0).rel_uri}


def test_an_unexpected_error_while_staging_leaves_no_temp(client: Client, alpha: dict, src: Path, monkeypatch):
    for i in range(20):
        png(src / f"s{i:02d}.png", color=(0, 0, i))
    real_stage = store.stage_file
    calls = []

    def failing(root, path, **kwargs):
        calls.append(path)
        if len(calls) == 7:
            raise RuntimeError("a bug in a decoder")  # not a refusal: an internal error
        return real_stage(root, path, **kwargs)

    monkeypatch.setattr(store, "stage_file", failing)
    with pytest.raises(RuntimeError):  # transports answer internal_error
        client.call("assets.import", slug="alpha", paths=[str(src)])
    assert asset_files(root_of(alpha)) == [] and rows(client) == []
