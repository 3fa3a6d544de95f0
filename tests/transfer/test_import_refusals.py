"""exports.import refuses hostile or broken packages: each is refused with a typed error, nothing is written
outside the app home's temp folder (which is gone afterwards), and no project is indexed or left on disk."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from iat.app import App
from iat.db.migrations import latest_version
from iat.transfer import manifest as mf
from iat.transfer.import_ import import_package
from iat.transfer.safe_extract import Limits

from support import Client


@pytest.fixture
def package(client: Client, project: dict, tmp_path: Path) -> Path:
    """A genuine folder package of a small project (one imported picture), copied out of the project."""
    src = tmp_path / "pics"
    src.mkdir()
    from PIL import Image
    Image.new("RGB", (32, 32), (10, 120, 200)).save(src / "one.png")
    client.call("projects.update", slug="alpha", settings_json={"import_roots": [str(src)]})
    client.call("assets.import", slug="alpha", paths=[str(src / "one.png")])
    export = client.call("exports.create", slug="alpha", format="folder")
    out = tmp_path / "package"
    shutil.copytree(export["path"], out)
    client.call("projects.delete", slug="alpha", confirm=True, purge=True)
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Where a hostile entry would land if it escaped (tmp_path/escape/...)."""
    folder = tmp_path / "escape"
    folder.mkdir()
    return folder


def _files(package: Path) -> dict[str, bytes]:
    return {p.relative_to(package).as_posix(): p.read_bytes() for p in sorted(package.rglob("*")) if p.is_file()}


def _tar(path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]], level: int = 6) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=level) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _refused(app: App, client: Client, path: Path, outside: Path, name: str, reason: str | None = None, **params):
    err = client.error("exports.import", path=str(path), **params)
    assert err.name == name, err.to_object()
    if reason:
        assert err.details["reason"] == reason, err.to_object()
    assert list(outside.iterdir()) == []
    assert client.call("projects.list")["items"] == []
    tmp = app.settings.home / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []
    projects = app.settings.projects_dir
    assert not projects.exists() or list(projects.iterdir()) == []
    return err


def _genuine(package: Path) -> list[tuple[str, bytes]]:
    return list(_files(package).items())


def test_the_genuine_package_imports(app: App, client: Client, package: Path, tmp_path: Path):
    """The fixture's package is good: what the refusals below break is what they test."""
    path = _tar(tmp_path / "good.tar.gz", _genuine(package))
    assert client.call("exports.import", path=str(path))["slug"] == "alpha"


def test_tar_traversal(app, client, package, outside, tmp_path):
    path = _tar(tmp_path / "p.tar.gz", [*_genuine(package), ("../escape/evil.txt", b"x"),
                                        ("assets/../../escape/evil2.txt", b"x")])
    _refused(app, client, path, outside, "invalid_params", "unsafe_name")


def test_tar_absolute_path(app, client, package, outside, tmp_path):
    path = _tar(tmp_path / "p.tar.gz", [(str(outside / "evil.txt"), b"x"), *_genuine(package)])
    _refused(app, client, path, outside, "invalid_params", "unsafe_name")


def test_tar_symlink(app, client, package, outside, tmp_path):
    link = tarfile.TarInfo("assets/out")
    link.type, link.linkname = tarfile.SYMTYPE, str(outside)
    path = _tar(tmp_path / "p.tar.gz", [link, ("assets/out/evil.txt", b"x"), *_genuine(package)])
    _refused(app, client, path, outside, "invalid_params", "link_entry")


def test_tar_hard_link(app, client, package, outside, tmp_path):
    (outside / "victim.txt").write_bytes(b"mine")
    hard = tarfile.TarInfo("assets/victim.txt")
    hard.type, hard.linkname = tarfile.LNKTYPE, str(outside / "victim.txt")
    path = _tar(tmp_path / "p.tar.gz", [*_genuine(package), hard])
    err = client.error("exports.import", path=str(path))
    assert err.details["reason"] == "link_entry"
    assert (outside / "victim.txt").read_bytes() == b"mine"


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_devices_and_fifos(app, client, package, outside, tmp_path, kind):
    device = tarfile.TarInfo("assets/dev")
    device.type, device.devmajor, device.devminor = kind, 1, 3
    path = _tar(tmp_path / "p.tar.gz", [*_genuine(package), device])
    _refused(app, client, path, outside, "invalid_params", "special_entry")


def test_tar_duplicate_names(app, client, package, outside, tmp_path):
    files = _genuine(package)
    path = _tar(tmp_path / "p.tar.gz", [*files, (files[0][0], b"again")])
    _refused(app, client, path, outside, "invalid_params", "duplicate_entry")


class _Zeros(io.RawIOBase):
    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def test_gzip_bomb(app, client, package, outside, tmp_path):
    """A 256 MiB entry of zeros (~250 KiB compressed) in a tar.gz: stopped by the ratio while it inflates."""
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        info = tarfile.TarInfo("assets/zeros.bin")
        info.size = 256 << 20
        tar.addfile(info, io.BufferedReader(_Zeros(info.size), 1 << 20))
    assert path.stat().st_size < 2 << 20
    _refused(app, client, path, outside, "payload_too_large", "compression_ratio")


def test_size_and_entry_limits(app, client, package, outside, tmp_path):
    path = _tar(tmp_path / "p.tar.gz", _genuine(package))
    for limits, reason in [(Limits(max_total_bytes=1000), "package_too_large"),
                           (Limits(max_entry_bytes=1000), "entry_too_large"),
                           (Limits(max_entries=2), "too_many_entries")]:
        with pytest.raises(Exception) as info:
            import_package(app, path, limits=limits)
        assert info.value.name == "payload_too_large" and info.value.details["reason"] == reason
    assert client.call("projects.list")["items"] == []


def test_zip_traversal(app, client, package, outside, tmp_path):
    path = tmp_path / "p.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in _genuine(package):
            z.writestr(name, data)
        z.writestr("../escape/evil.txt", b"x")
    _refused(app, client, path, outside, "invalid_params", "unsafe_name")


def test_zip_symlink(app, client, package, outside, tmp_path):
    path = tmp_path / "p.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in _genuine(package):
            z.writestr(name, data)
        info = zipfile.ZipInfo("assets/link")
        info.external_attr = (0o120777 << 16)
        z.writestr(info, str(outside))
    _refused(app, client, path, outside, "invalid_params", "link_entry")


def test_zip_bomb(app, client, package, outside, tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("assets/zeros.bin", "w", force_zip64=True) as dst:
            for _ in range(128):
                dst.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    _refused(app, client, path, outside, "payload_too_large", "compression_ratio")


def test_hash_mismatch(app, client, package, outside):
    asset = next(p for p in package.rglob("*.png"))
    asset.write_bytes(asset.read_bytes()[:-1] + b"\x00")
    _refused(app, client, package, outside, "invalid_params", "hash_mismatch")


def test_extra_unlisted_file(app, client, package, outside):
    (package / "assets" / "stowaway.txt").write_bytes(b"not in the manifest")
    _refused(app, client, package, outside, "invalid_params", "unlisted_file")


def test_missing_file(app, client, package, outside):
    next(p for p in package.rglob("*.png")).unlink()
    _refused(app, client, package, outside, "invalid_params", "missing_file")


def test_folder_package_with_a_symlink(app, client, package, outside):
    (package / "assets" / "link").symlink_to(outside)
    _refused(app, client, package, outside, "invalid_params", "link_entry")


@pytest.mark.parametrize("change,name,reason", [
    (lambda m: m.update(format="something-else"), "invalid_params", "bad_manifest"),
    (lambda m: m.update(format_version=mf.FORMAT_VERSION + 1), "invalid_params", "format_version"),
    (lambda m: m.update(schema_version=latest_version("project") + 1), "schema_version_unsupported", None),
    (lambda m: m["files"].append({"path": "../x", "sha256": "0" * 64, "size": 1}), "invalid_params", "unsafe_name"),
    (lambda m: m["row_counts"].update(assets=99), "invalid_params", "row_counts"),
])
def test_bad_manifests(app, client, package, outside, change, name, reason):
    manifest = json.loads((package / "manifest.json").read_bytes())
    change(manifest)
    (package / "manifest.json").write_bytes(mf.dumps(manifest))
    _refused(app, client, package, outside, name, reason)


def test_not_a_package(app, client, outside, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    _refused(app, client, path, outside, "invalid_params", "unknown_format")
    _refused(app, client, tmp_path / "absent.zip", outside, "not_found")
