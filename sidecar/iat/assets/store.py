"""The content-addressed file store of one project (SPEC 5.3: `assets.storage_uri`, `storage_backend = "local"`).

Layout
    <project root>/assets/<sha[:2]>/<sha>.<ext>
    A row's `storage_uri` is that path RELATIVE to the project root, with "/" ("assets/3f/3fa9...c2.png"), so
    copying or moving the project folder copies the project: project.db names no path of this machine.
    `abs_path(root, storage_uri)` turns it back into a path. The address is a function of the bytes (their sha256
    and the extension their content sniffs as), so the same bytes are stored once however often they are
    registered; several rows may share one file.

Writing, in two steps so a batch can be checked whole before anything becomes visible
    stage_file / stage_bytes   stream the bytes once into a temp file in assets/.tmp/ (same filesystem as every
                               address), hashing and sniffing them on the way. Nothing is at an address yet;
                               `discard` drops the temps.
    commit                     renames each staged temp onto its address (atomic), or drops it when the address
                               already holds those bytes ("same bytes stored once").
    put_file / put_bytes       both steps for one file, durable on return: what the runner calls per output.

Durability: a row may reference a file only once the file's bytes and its name are on disk, so that a crash (of
the process or of the machine) never leaves a row pointing at a missing or torn file. Hence: flush the temp's
data, rename, flush the folder entry, and only then commit the row. `put_*` do it per file with fsync. A batch
flushes once for all its files (`flush`, `flush_dirs`: on Linux one syncfs(2) of the project's filesystem each,
instead of a journal commit per file; elsewhere an fsync per file and folder) - see iat.assets.importer. (Starting
each file's disk write early with sync_file_range was measured: it moves as much CPU into the staging threads as it
saves in the flush.)

Crash recovery: a crash leaves at worst temp files and files that no row references; `sweep_orphans` removes both.

Concurrency: two writers of the same bytes are harmless (both renames put identical bytes at one address). A file
is safe from removal once a committed row references it. Removal of unreferenced files (`sweep_orphans`,
`remove_unreferenced`) must run where no row can be committed meanwhile - on the project's writer thread, inside
`handle.store.write` - or at start-up. For the same reason, code that registers files in a busy project should
`stage_*` outside the writer and `commit` + insert its rows inside one `store.write` (as the importer does).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import stat
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from iat.assets.sniff import HEAD_BYTES, Sniffed, check_claim, claimed_ext, sniff
from iat.errors import Forbidden
from iat.lifecycle import pid_alive

ASSETS_DIR = "assets"
TEMP_DIR = ".tmp"  # assets/.tmp: temp files of writes in progress
BACKEND = "local"
_CHUNK = 1 << 20
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_ADDRESS = re.compile(r"^[0-9a-f]{2}/([0-9a-f]{64})\.[a-z0-9]+(?:\.[a-z0-9]+)?$")


@dataclass(frozen=True)
class StoredFile:
    """One file at its content address. `rel_uri` is the row's storage_uri (relative to the project root)."""

    sha256: str
    rel_uri: str
    size: int
    mime_type: str
    width: int | None
    height: int | None
    ext: str


@dataclass(frozen=True)
class StagedFile:
    """Bytes hashed and written to a temp file, not yet at their address."""

    temp: str  # path of the temp file (a plain str: this runs once per file of large batches)
    stored: StoredFile


def address(sha256: str, ext: str) -> str:
    """The storage_uri of bytes with this hash and extension."""
    return f"{ASSETS_DIR}/{sha256[:2]}/{sha256}.{ext}"


def abs_path(root: Path, storage_uri: str) -> Path:
    """The file a local storage_uri names. Refuses (Forbidden) any uri that is absolute, has a drive, a
    backslash or `..`, or resolves (through symlinks) outside the project root."""
    pure = PurePosixPath(storage_uri)
    if (not storage_uri or pure.is_absolute() or "\\" in storage_uri or ":" in storage_uri
            or any(part in ("..", "") for part in storage_uri.split("/"))):
        raise Forbidden(f"storage uri {storage_uri!r} is not a path inside the project", details={"storage_uri":
                                                                                                   storage_uri})
    base = Path(root).resolve()
    path = base.joinpath(*pure.parts)
    if not path.resolve().is_relative_to(base):
        raise Forbidden(f"storage uri {storage_uri!r} leads outside the project folder",
                        details={"storage_uri": storage_uri})
    return path


# --- staging ---


def temp_dir(root: Path) -> Path:
    path = Path(root) / ASSETS_DIR / TEMP_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def _new_temp(tmp: Path | str) -> tuple[str, int]:
    # Named for the writing process, so a sweep can tell a dead writer's leftovers from a live one's work.
    path = os.path.join(tmp, f"{os.getpid()}-{uuid.uuid4().hex}.part")
    return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o644)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def stage_file(root: Path, src: Path | str, *, check_extension: bool = True, follow_symlinks: bool = True,
               tmp: Path | None = None) -> StagedFile:
    """Copies `src` into a temp file, hashing and sniffing it in the same single read. With `check_extension`, a
    file whose content contradicts its extension raises sniff.ContentMismatch (and leaves no temp). OSError
    (unreadable, not a regular file, a symlink when not `follow_symlinks`) passes through."""
    tmp = tmp or temp_dir(root)
    name = os.path.basename(src)
    nofollow = 0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0)
    # O_NONBLOCK: a FIFO put where a file was must fail at the S_ISREG check below, not hang in open().
    fd = os.open(src, os.O_RDONLY | _O_BINARY | nofollow | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{src} is not a regular file")
        temp, out = _new_temp(tmp)
        try:
            digest = hashlib.sha256()
            size = 0
            head = b""
            # Small files: one read of the size fstat gave (+1 to see growth), no 1 MiB buffer, and no second
            # read to meet the end when exactly that many bytes came (system calls are most of a small file's cost).
            want = min(info.st_size + 1, _CHUNK)
            while chunk := os.read(fd, want):
                if len(head) < HEAD_BYTES:
                    head += chunk[:HEAD_BYTES - len(head)]
                digest.update(chunk)
                _write_all(out, chunk)
                size += len(chunk)
                if size == info.st_size and len(chunk) < want:
                    break
                want = _CHUNK
        except BaseException:
            os.close(out)
            _unlink(temp)
            raise
        os.close(out)
    finally:
        os.close(fd)
    try:
        sniffed = sniff(head, claimed=claimed_ext(name), path=temp)
        if check_extension:
            check_claim(name, sniffed)
    except BaseException:
        _unlink(temp)
        raise
    return StagedFile(temp, _stored(digest.hexdigest(), size, sniffed))


def stage_bytes(root: Path, data: bytes, *, name: str | None = None, tmp: Path | None = None) -> StagedFile:
    """Writes `data` to a temp file. `name`, when given, is checked like a file name's extension."""
    temp, out = _new_temp(tmp or temp_dir(root))
    try:
        _write_all(out, data)
    except BaseException:
        os.close(out)
        _unlink(temp)
        raise
    os.close(out)
    try:
        sniffed = sniff(data[:HEAD_BYTES], claimed=claimed_ext(name) if name else None)
        if name:
            check_claim(name, sniffed)
    except BaseException:
        _unlink(temp)
        raise
    return StagedFile(temp, _stored(hashlib.sha256(data).hexdigest(), len(data), sniffed))


def _stored(sha: str, size: int, sniffed: Sniffed) -> StoredFile:
    return StoredFile(sha, address(sha, sniffed.ext), size, sniffed.mime_type, sniffed.width, sniffed.height,
                      sniffed.ext)


def discard(staged: Iterable[StagedFile]) -> None:
    for item in staged:
        _unlink(item.temp)


# --- committing ---


def commit(root: Path, staged: Sequence[StagedFile], created: list[str] | None = None) -> list[bool]:
    """Moves each staged temp onto its content address; returns, per file, whether this call put it there (False:
    the address held those bytes already and the temp was dropped). Each uri put there is appended to `created`
    as it happens, so a caller that fails half-way knows what to clean up. Flush the temps' data first (`flush`)
    when the result must survive a crash, and the folders (`flush_dirs`) before committing rows."""
    base = os.fspath(root)
    made: set[str] = set()
    out = []
    for item in staged:
        dest = os.path.join(base, item.stored.rel_uri)
        folder = os.path.dirname(dest)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        try:
            existing = os.stat(dest).st_size
        except FileNotFoundError:
            existing = None
        if existing == item.stored.size:
            _unlink(item.temp)  # same address, same size: the same bytes (sha256)
            out.append(False)
            continue
        # Absent, or torn by a crash before its data reached the disk: (re)place it.
        os.replace(item.temp, dest)
        if created is not None:
            created.append(item.stored.rel_uri)
        out.append(True)
    return out


def put_file(root: Path, src: Path | str, *, check_extension: bool = True) -> StoredFile:
    """Stores one file durably (fsync of the data before the rename and of the folder after) and returns it."""
    staged = stage_file(root, src, check_extension=check_extension)
    return _put(root, staged)


def put_bytes(root: Path, data: bytes, *, name: str | None = None) -> StoredFile:
    """Stores `data` durably and returns it; `name` (optional) is checked like put_file's extension."""
    return _put(root, stage_bytes(root, data, name=name))


def _put(root: Path, staged: StagedFile) -> StoredFile:
    try:
        _fsync(staged.temp)
        commit(root, [staged])
    except BaseException:
        discard([staged])
        raise
    _fsync_dir((Path(root) / staged.stored.rel_uri).parent)
    return staged.stored


# --- durability ---


def flush(root: Path, files: Sequence[Path | str]) -> None:
    """Makes the data of `files` durable: one syncfs(2) of the project's filesystem on Linux when there are several
    (one journal commit instead of one per file), else an fsync each."""
    if len(files) > 1 and _syncfs(root):
        return
    for path in files:
        _fsync(path)


def flush_dirs(root: Path, rel_uris: Iterable[str]) -> None:
    """Makes the folder entries of files just renamed into place durable (see `flush`)."""
    folders = {(Path(root) / uri).parent for uri in rel_uris}
    if not folders or (len(folders) > 1 and _syncfs(root)):
        return
    for folder in folders:
        _fsync_dir(folder)


def _fsync(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | _O_BINARY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    if sys.platform == "win32":  # NTFS has no directory fsync; the rename is journaled
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_libc_syncfs: object = None  # looked up on first use; False where the system has no syncfs(2)


def _syncfs(root: Path) -> bool:
    """syncfs(2) of the filesystem holding the project; False where there is no such call."""
    global _libc_syncfs
    if _libc_syncfs is None:
        _libc_syncfs = False
        if sys.platform.startswith("linux"):
            try:
                _libc_syncfs = ctypes.CDLL(None, use_errno=True).syncfs
            except (OSError, AttributeError):
                pass
    if _libc_syncfs is False:
        return False
    fd = os.open(Path(root) / ASSETS_DIR, os.O_RDONLY)
    try:
        return _libc_syncfs(fd) == 0
    finally:
        os.close(fd)


# --- removing ---


def remove_unreferenced(root: Path, rel_uris: Iterable[str], referenced: set[str]) -> list[str]:
    """Removes the files among `rel_uris` that no row references (the files of a batch that failed). Run it on
    the project's writer thread (see the module doc)."""
    removed = []
    for uri in dict.fromkeys(rel_uris):
        if uri not in referenced and _unlink(abs_path(root, uri)):
            removed.append(uri)
    return removed


def sweep_orphans(root: Path, referenced: set[str]) -> list[str]:
    """Removes every content-addressed file under assets/ that no row references, and every temp file of an
    interrupted write (its writing process is gone); returns their storage uris (temps as
    "assets/.tmp/<name>"). Files that do not follow the store's layout are left alone. Run it on the project's
    writer thread (or at start-up): a file renamed into place is then either referenced already or not yet
    renamed, and temps of writers still alive (this process's or another's on the same project) are kept."""
    base = Path(root) / ASSETS_DIR
    removed: list[str] = []
    if not base.is_dir():
        return removed
    for shard in sorted(base.iterdir()):
        if shard.name == TEMP_DIR and shard.is_dir():
            for temp in sorted(shard.iterdir()):
                if temp.is_file() and not _writer_alive(temp.name) and _unlink(temp):
                    removed.append(f"{ASSETS_DIR}/{TEMP_DIR}/{temp.name}")
            continue
        if not (shard.is_dir() and re.fullmatch(r"[0-9a-f]{2}", shard.name)):
            continue
        for path in sorted(shard.iterdir()):
            rel = f"{shard.name}/{path.name}"
            match = _ADDRESS.match(rel)
            uri = f"{ASSETS_DIR}/{rel}"
            if match and match.group(1)[:2] == shard.name and uri not in referenced and path.is_file() \
                    and _unlink(path):
                removed.append(uri)
    return removed


def _writer_alive(temp_name: str) -> bool:
    """Whether the process that wrote this temp (`<pid>-<uuid>.part`) still runs (then its write may still be
    in flight). A name without a pid is an older writer's: gone."""
    pid, sep, _ = temp_name.partition("-")
    if not sep or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    return pid_alive(int(pid)) is True  # unknown (Windows): only this process's temps are known to be alive


def _unlink(path: Path | str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
