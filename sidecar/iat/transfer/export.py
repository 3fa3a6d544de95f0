"""Writing a project as a standalone package (manifest.py says what one holds) while the sidecar keeps serving it.

The database: a SQLite project is copied with SQLite's online backup API (one step, so one consistent state of the
file, whatever is committed meanwhile); a project on PostgreSQL is copied row by row into a fresh SQLite file in
one REPEATABLE READ transaction (rows.copy). Either way the package carries a SQLite `project.db` in rollback-
journal mode (one file), without run_job_claims (this machine's workers' leases) and, unless asked for, without
project_api_secrets: those rows are deleted and the file VACUUMed, so no ciphertext stays in its free pages.

The files: every regular file of the project folder but the live database and its journals, the migration backups
beside it, exports/ (packages are not packed again into the next one) and names starting with "." (temp files of
writes in flight, run locks). They are taken after the database, so every file a row of the snapshot names is
there (a row is committed only after its file is in place, and files still referenced are never removed); a file
added meanwhile comes along unreferenced, harmlessly.

Each file is read once: hashed while it streams into the archive. The manifest, which lists the hashes, is
written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import queue
import tarfile
import threading
import time
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

from iat import __version__
from iat.clock import format_ts, utcnow
from iat.db.store import Store
from iat.transfer import manifest as mf
from iat.transfer import rows

if TYPE_CHECKING:
    from iat.app import App
    from iat.projects.directory import ProjectHandle

Format = Literal["tar.gz", "zip", "folder"]
Progress = Callable[[int, int], None]  # (bytes done, bytes in all)

EXPORTS_DIR = "exports"  # <project root>/exports: the packages exports.create makes (never packed themselves)
GZIP_LEVEL = 6  # gzip's and zlib's default: what `tar czf` does
CHUNK = 1 << 20
_LEFT_OUT_TOP = {"project.db", "project.db-wal", "project.db-shm", "project.db-journal", EXPORTS_DIR}
# Already compressed: a zip stores them as they are (deflate would spend time and gain nothing).
_STORED_EXT = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".gz", ".tgz", ".zip", ".onnx", ".mp3", ".ogg", ".avif")
_SECRET_TABLES = sorted(rows.SECRET_TABLES)


# --- the database ---


def snapshot_db(handle: ProjectHandle, dest: Path, include_secrets: bool) -> tuple[dict[str, int], int, int]:
    """Writes the project's rows as a SQLite file at `dest`; returns (rows per table, schema version, secret rows
    left in)."""
    if handle.store.is_sqlite:
        source = sqlite3.connect(str(handle.root / "project.db"))
        try:
            target = sqlite3.connect(str(dest))
            try:
                source.backup(target)  # pages=-1: all in one step, one read transaction on the source
            finally:
                target.close()
        finally:
            source.close()
    else:
        target_store = Store.open_sqlite(dest, "project")
        try:
            rows.copy(handle.store, target_store, include_secrets=include_secrets)
        finally:
            target_store.close()
    con = sqlite3.connect(str(dest), isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        con.execute("DELETE FROM run_job_claims")
        if not include_secrets:
            for table in _SECRET_TABLES:
                con.execute(f'DELETE FROM "{table}"')
        con.execute("VACUUM")  # rebuilds the file: deleted rows leave no bytes in free pages
        counts = {m._meta.table_name: con.execute(f'SELECT COUNT(*) FROM "{m._meta.table_name}"').fetchone()[0]
                  for m in rows.tables(include_secrets)}
        secret_rows = sum(con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in _SECRET_TABLES)
        schema = con.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
        project = con.execute("SELECT id, slug, name FROM projects").fetchall()
    finally:
        con.close()
    if len(project) != 1 or project[0][0] != handle.id:
        raise RuntimeError(f"the snapshot of {handle.slug} does not hold exactly its project row")
    return counts, int(schema), secret_rows


# --- the files ---


def project_files(root: Path) -> list[tuple[str, str, int]]:
    """(path in the package, path on disk, size) of every file of the project folder that belongs in a package,
    in a stable order."""
    out: list[tuple[str, str, int]] = []

    def walk(folder: str, prefix: str) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".") or (not prefix and entry.name in _LEFT_OUT_TOP) or \
                    (not prefix and entry.name.endswith(".bak")):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                walk(entry.path, f"{prefix}{entry.name}/")
            elif stat.S_ISREG(info.st_mode):
                out.append((f"{prefix}{entry.name}", entry.path, info.st_size))

    walk(os.fspath(root), "")
    return out


class _HashingReader:
    """A file read once: its bytes hashed on the way into the archive."""

    def __init__(self, f):
        self.f = f
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data


class _HashingWriter:
    """The package file: its sha256 computed as it is written. No seek, so zipfile writes in streaming form."""

    def __init__(self, path: Path):
        self.f = open(path, "wb")
        self.digest = hashlib.sha256()
        self.pos = 0

    def write(self, data) -> int:
        self.digest.update(data)
        n = self.f.write(data)
        self.pos += n
        return n

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


class _Ticker:
    def __init__(self, total: int, progress: Progress | None):
        self.total, self.done, self.progress = total, 0, progress

    def add(self, n: int) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total)


def _entry(path: str, digest, size: int) -> dict:
    return {"path": path, "sha256": digest.hexdigest(), "size": size}


class _GzipPipe:
    """The tar stream, gzipped on a thread of its own: the caller reads and hashes the files while this thread
    deflates what came before (zlib and hashlib release the GIL), as `tar czf` pipes tar into gzip. Writes are
    gathered into 1 MiB pieces; a bounded queue keeps memory flat."""

    def __init__(self, out: _HashingWriter, level: int):
        self.out = out
        self.deflate = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: a gzip member
        self.pieces: queue.Queue = queue.Queue(maxsize=8)
        self.pending = bytearray()
        self.pos = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="iat-export-gzip", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        ended = False
        try:
            while (piece := self.pieces.get()) is not None:
                self.out.write(self.deflate.compress(piece))
            ended = True
            self.out.write(self.deflate.flush())
        except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
            self.error = exc
            while not ended and self.pieces.get() is not None:  # drain: the writer never blocks on a full queue
                pass

    def write(self, data) -> int:
        if self.error is not None:
            raise self.error
        self.pending += data
        self.pos += len(data)
        if len(self.pending) >= CHUNK:
            self.pieces.put(bytes(self.pending))
            self.pending.clear()
        return len(data)

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        if self.pending:
            self.pieces.put(bytes(self.pending))
            self.pending.clear()
        self.pieces.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _write_tar_gz(out: _HashingWriter, files, db: Path, finish: Callable[[list[dict]], bytes], tick: _Ticker):
    listed: list[dict] = []
    mtime = time.time()
    pipe = _GzipPipe(out, GZIP_LEVEL)
    try:
        with tarfile.open(fileobj=pipe, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK) as tar:
            for name, real, _size in [(mf.DB_FILE, str(db), 0), *files]:
                with open(real, "rb") as f:
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = os.fstat(f.fileno()).st_size, mtime, 0o644
                    reader = _HashingReader(f)
                    tar.addfile(info, reader)
                listed.append(_entry(name, reader.digest, reader.size))
                tick.add(reader.size)
            data = finish(listed)
            info = tarfile.TarInfo(mf.MANIFEST)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            tar.addfile(info, _BytesReader(data))
    finally:
        pipe.close()


class _BytesReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n is None or n < 0 else self.pos + n
        chunk = self.data[self.pos:end]
        self.pos += len(chunk)
        return chunk


def _write_zip(out: _HashingWriter, files, db: Path, finish: Callable[[list[dict]], bytes], tick: _Ticker):
    listed: list[dict] = []
    with zipfile.ZipFile(out, "w", compresslevel=GZIP_LEVEL, allowZip64=True) as archive:
        for name, real, _size in [(mf.DB_FILE, str(db), 0), *files]:
            with open(real, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                info = zipfile.ZipInfo(name, time.localtime()[:6])
                info.compress_type = zipfile.ZIP_STORED if name.lower().endswith(_STORED_EXT) \
                    else zipfile.ZIP_DEFLATED
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                info.file_size = size
                digest = hashlib.sha256()
                n = 0
                with archive.open(info, "w", force_zip64=size > 0x7FFF0000) as dst:
                    while chunk := f.read(CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                        n += len(chunk)
            listed.append(_entry(name, digest, n))
            tick.add(n)
        info = zipfile.ZipInfo(mf.MANIFEST, time.localtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = (stat.S_IFREG | 0o644) << 16
        archive.writestr(info, finish(listed))


def _write_folder(dest: Path, files, db: Path, finish: Callable[[list[dict]], bytes], tick: _Ticker) -> str:
    listed: list[dict] = []
    made: set[Path] = set()
    for name, real, _size in [(mf.DB_FILE, str(db), 0), *files]:
        target = dest.joinpath(*name.split("/"))
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        digest = hashlib.sha256()
        n = 0
        with open(real, "rb") as f, open(target, "xb") as g:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                g.write(chunk)
                n += len(chunk)
        listed.append(_entry(name, digest, n))
        tick.add(n)
    data = finish(listed)
    (dest / mf.MANIFEST).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def package_name(slug: str, fmt: Format, export_id: str) -> str:
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return f"{slug}-{stamp}-{export_id[:8]}" + ("" if fmt == "folder" else f".{fmt}")


def write_package(app: App, handle: ProjectHandle, fmt: Format, dest_dir: Path, *, include_secrets: bool = False,
                  progress: Progress | None = None, export_id: str | None = None) -> dict:
    """Writes the project as a package in `dest_dir` (made when missing). Returns `path` (the .tar.gz or .zip, or
    the folder), `sha256` (of the archive; of manifest.json for a folder, which pins every file's hash),
    `size_bytes`, `name` and `manifest`. A failure leaves nothing in `dest_dir`."""
    export_id = export_id or str(uuid.uuid4())
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = package_name(handle.slug, fmt, export_id)
    work = dest_dir / f".{name}.partial-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    final = dest_dir / name
    try:
        db = work / "snapshot.db"
        counts, schema, secret_rows = snapshot_db(handle, db, include_secrets)
        con = sqlite3.connect(str(db))
        try:
            pid, slug, pname = con.execute("SELECT id, slug, name FROM projects").fetchone()
        finally:
            con.close()
        files = project_files(handle.root)
        tick = _Ticker(db.stat().st_size + sum(size for _, _, size in files), progress)
        created_at = format_ts(utcnow())

        def finish(listed: list[dict]) -> bytes:
            return mf.dumps(mf.build(schema_version=schema, app_version=__version__,
                                     project={"id": pid, "slug": slug, "name": pname}, created_at=created_at,
                                     counts=counts, files=listed, include_secrets=include_secrets,
                                     secret_rows=secret_rows))

        manifest_bytes: list[bytes] = []

        def keep(listed: list[dict]) -> bytes:
            manifest_bytes.append(finish(listed))
            return manifest_bytes[-1]

        if fmt == "folder":
            folder = work / "package"
            folder.mkdir()
            sha = _write_folder(folder, files, db, keep, tick)
            db.unlink()
            os.replace(folder, final)
            size = tick.done + len(manifest_bytes[-1])
        else:
            part = work / "package"
            out = _HashingWriter(part)
            try:
                (_write_tar_gz if fmt == "tar.gz" else _write_zip)(out, files, db, keep, tick)
            finally:
                out.close()
            sha = out.digest.hexdigest()
            size = out.pos
            os.replace(part, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    return {"id": export_id, "path": str(final), "name": name, "format": fmt, "sha256": sha, "size_bytes": size,
            "manifest": json.loads(manifest_bytes[-1])}

