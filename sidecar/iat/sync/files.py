"""Which files of a project folder the S3 mirror holds, and their sha256.

Synced: every regular file under the project root, by its path relative to the root with "/" (assets/, runs/,
results, logs, exports ...), except the project's database (`project.db` and its -wal/-shm/-journal), lock files
(`*.lock`), hidden files and folders (any segment starting with "."; temp and staging folders such as assets/.tmp
and this package's own download temps live there) and a run's scratch folder `runs/<id>/work/` (removed when the
run ends). Symlinks are never followed nor synced.

Hashes are cached in storage_sync_objects by (size, mtime_ns): a file whose size and mtime are those recorded is
not read again. Asset files are content-addressed (assets/<sha[:2]>/<sha>.<ext>): their name is their sha256."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from iat.sync.state import Known

_ASSET = re.compile(r"^assets/[0-9a-f]{2}/([0-9a-f]{64})\.[a-z0-9]+(?:\.[a-z0-9]+)?$")
_DB = re.compile(r"^project\.db(?:-wal|-shm|-journal)?$")


@dataclass
class Local:
    path: str
    size: int
    mtime_ns: int
    sha256: str | None = None  # filled by hash_all


def is_synced(rel: str) -> bool:
    """Whether a relative path (with "/") names a file the mirror holds; also the guard a pulled key must pass."""
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        return False
    parts = rel.split("/")
    if any(not p or p.startswith(".") for p in parts):  # also refuses "." and ".." segments
        return False
    if len(parts) == 1 and _DB.match(parts[0]):
        return False
    if parts[-1].endswith(".lock"):
        return False
    if len(parts) >= 3 and parts[0] == "runs" and parts[2] == "work":
        return False
    if len(parts[0]) == 2 and parts[0][1] == ":":  # a Windows drive ("C:") is not a relative path
        return False
    return True


def wanted(rel: str, subset: list[str] | None) -> bool:
    """Within the caller's subset: each entry names a file or a folder (everything under it)."""
    if subset is None:
        return True
    return any(rel == s or rel.startswith(s.rstrip("/") + "/") for s in subset)


def scan(root: Path, subset: list[str] | None = None) -> dict[str, Local]:
    """The synced files under `root` (optionally only those within `subset`), with size and mtime."""
    found: dict[str, Local] = {}
    tops = [""] if subset is None else sorted({s.rstrip("/") for s in subset})
    for top in tops:
        start = root / top if top else root
        if top and start.is_file() and not start.is_symlink():
            st = start.stat()
            if is_synced(top):
                found[top] = Local(top, st.st_size, st.st_mtime_ns)
            continue
        _walk(start, top, found)
    return found


def _walk(folder: Path, rel: str, out: dict[str, Local]) -> None:
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_dir(follow_symlinks=False):
            _walk(Path(entry.path), path, out)
        elif entry.is_file(follow_symlinks=False) and is_synced(path):
            st = entry.stat(follow_symlinks=False)
            out[path] = Local(path, st.st_size, st.st_mtime_ns)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def hash_all(root: Path, files: dict[str, Local], known: dict[str, Known]) -> int:
    """Fills each file's sha256: from its address (assets), from the cache when size and mtime match, else read.
    Returns how many files were read."""
    read = 0
    for f in files.values():
        k = known.get(f.path)
        m = _ASSET.match(f.path)
        if m:
            f.sha256 = m.group(1)
        elif k is not None and k.size_bytes == f.size and k.mtime_ns == f.mtime_ns:
            f.sha256 = k.sha256
        else:
            f.sha256 = sha256_file(root / f.path)
            read += 1
    return read


def content_address(rel: str) -> str | None:
    """The sha256 an asset path is named for (None for other files)."""
    m = _ASSET.match(rel)
    return m.group(1) if m else None
