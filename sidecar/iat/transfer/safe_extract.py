"""Unpacking a package someone handed us, into a folder of our own, refusing anything that could write outside
it or exhaust the disk or memory.

Refused: entry names that are absolute, hold `..`, a backslash, a colon, a NUL (manifest.check_name); symlinks,
hard links, devices, FIFOs and sparse or other special entries; duplicate names (also differing in case only, as
on case-insensitive file systems) and a file where a folder is (or the reverse); encrypted zip entries and
compression methods other than stored and deflate; and archives over the limits: entries, bytes per entry, bytes in
all, and the compression ratio. Sizes are checked from the headers first and again while the bytes stream
(a tar.gz is inflated by our own reader, so tar's own headers, PAX records included, are bounded too), so a lying
header or a decompression bomb stops after at most `ratio_slack_bytes` beyond the limit.

Files are written with O_EXCL | O_NOFOLLOW into folders this module made; nothing it extracts is a link, so no
later write can be redirected. The caller owns `dest` and removes it on failure.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from iat.errors import PayloadTooLarge
from iat.transfer.manifest import MANIFEST, check_name, refuse

CHUNK = 1 << 20
_O_BINARY = getattr(os, "O_BINARY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

Progress = Callable[[int, int], None]  # (bytes done, bytes in all; 0 when not known)


@dataclass(frozen=True)
class Limits:
    max_entries: int = 2_000_000
    max_entry_bytes: int = 64 << 30
    max_total_bytes: int = 256 << 30
    max_ratio: float = 200.0  # uncompressed / compressed; PNGs are ~1, text ~10, a bomb ~1000
    ratio_slack_bytes: int = 32 << 20  # below this many uncompressed bytes the ratio is not judged


def _too_large(reason: str, message: str, **details) -> PayloadTooLarge:
    return PayloadTooLarge(message, details={"reason": reason, **details})


class _Budget:
    """Entry count and bytes written so far, against the limits."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.entries = 0
        self.total = 0

    def entry(self, name: str, declared: int) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise _too_large("too_many_entries", f"the package has over {self.limits.max_entries} entries",
                             limit=self.limits.max_entries)
        if declared > self.limits.max_entry_bytes:
            raise _too_large("entry_too_large", f"the entry {name!r} has {declared} bytes, over the "
                             f"{self.limits.max_entry_bytes}-byte limit", entry=name, limit=self.limits.max_entry_bytes)
        if self.total + declared > self.limits.max_total_bytes:
            raise _too_large("package_too_large", f"the package unpacks to over {self.limits.max_total_bytes} "
                             "bytes", limit=self.limits.max_total_bytes)

    def add(self, n: int) -> None:
        self.total += n
        if self.total > self.limits.max_total_bytes:
            raise _too_large("package_too_large", f"the package unpacks to over {self.limits.max_total_bytes} "
                             "bytes", limit=self.limits.max_total_bytes)


class _Tree:
    """The names extracted so far: duplicates (case-insensitively) and files where folders are refused."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.files: set[str] = set()
        self.dirs: set[str] = set()

    def _claim_dirs(self, parts: list[str], name: str) -> None:
        for i in range(1, len(parts) + 1):
            folder = "/".join(parts[:i]).casefold()
            if folder in self.files:
                raise refuse("name_clash", f"the entry {name!r} puts a folder where a file is", entry=name)
            if folder not in self.dirs:
                self.dirs.add(folder)
                os.mkdir(self.dest.joinpath(*parts[:i]))

    def add_dir(self, name: str) -> None:
        self._claim_dirs(check_name(name).split("/"), name)

    def open_file(self, name: str) -> int:
        parts = check_name(name).split("/")
        key = name.casefold()
        if key in self.files or key in self.dirs:
            raise refuse("duplicate_entry", f"the package holds {name!r} twice", entry=name)
        self._claim_dirs(parts[:-1], name)
        self.files.add(key)
        return os.open(self.dest.joinpath(*parts), os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _O_BINARY,
                       0o644)


def _copy(src: BinaryIO, fd: int, name: str, declared: int | None, budget: _Budget,
          ratio: Callable[[], None] | None = None) -> tuple[str, int]:
    """Streams one entry into `fd`, hashing it; refuses more bytes than its header declared."""
    digest = hashlib.sha256()
    size = 0
    try:
        while chunk := src.read(CHUNK):
            size += len(chunk)
            if declared is not None and size > declared:
                raise refuse("size_mismatch", f"the entry {name!r} holds more bytes than its header says",
                             entry=name)
            budget.add(len(chunk))
            if ratio is not None:
                ratio()
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    if declared is not None and size != declared:
        raise refuse("size_mismatch", f"the entry {name!r} is shorter than its header says", entry=name)
    return digest.hexdigest(), size


# --- tar.gz ---


class _Inflating:
    """A gzip stream inflated by us, with every byte out counted against the ratio and the total limits (tarfile's
    own gzip reader would hand out whatever the stream holds, PAX headers included, before we see it)."""

    def __init__(self, raw: BinaryIO, limits: Limits):
        self.raw = raw
        self.limits = limits
        self.inflater = zlib.decompressobj(wbits=31)
        self.pending = b""
        self.read_in = 0
        self.put_out = 0
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        want = CHUNK if n is None or n < 0 else n
        out = bytearray()
        while len(out) < want and not self.eof:
            if not self.pending:
                self.pending = self.raw.read(CHUNK)
                self.read_in += len(self.pending)
                if not self.pending:
                    if not self.inflater.eof:
                        raise refuse("corrupt_archive", "the gzip stream ends early")
                    self.eof = True
                    break
            try:
                piece = self.inflater.decompress(self.pending, want - len(out))
            except zlib.error as exc:
                raise refuse("corrupt_archive", f"the gzip stream is corrupt: {exc}") from None
            self.pending = self.inflater.unconsumed_tail
            out += piece
            self.put_out += len(piece)
            self.check()
            if self.inflater.eof:  # one gzip member: what follows it is not read
                self.eof = True
        return bytes(out)

    def check(self) -> None:
        limits = self.limits
        if self.put_out > limits.max_total_bytes + limits.ratio_slack_bytes:
            raise _too_large("package_too_large", f"the package unpacks to over {limits.max_total_bytes} bytes",
                             limit=limits.max_total_bytes)
        if self.put_out > limits.ratio_slack_bytes and self.put_out > limits.max_ratio * max(self.read_in, 1):
            raise _too_large("compression_ratio", f"the package inflates over {limits.max_ratio:g} times its "
                             "compressed size (a decompression bomb?)", limit=limits.max_ratio)


def extract_tar_gz(path: Path, dest: Path, limits: Limits, progress: Progress | None = None) -> dict:
    budget, tree, found = _Budget(limits), _Tree(dest), {}
    total = os.path.getsize(path)
    with open(path, "rb") as raw:
        stream = _Inflating(raw, limits)
        try:
            archive = tarfile.open(fileobj=stream, mode="r|")
        except tarfile.TarError as exc:
            raise refuse("corrupt_archive", f"not a tar archive inside the gzip stream: {exc}") from None
        with archive:
            try:
                for member in archive:
                    name = member.name
                    if member.isdir():
                        tree.add_dir(name.rstrip("/"))
                        budget.entry(name, 0)
                        continue
                    if member.issym() or member.islnk():
                        raise refuse("link_entry", f"the entry {name!r} is a link (refused)", entry=name)
                    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.issparse():
                        raise refuse("special_entry", f"the entry {name!r} is not a regular file or folder "
                                     "(devices, FIFOs and special entries are refused)", entry=name)
                    budget.entry(name, member.size)
                    fd = tree.open_file(name)
                    found[name] = _copy(archive.extractfile(member), fd, name, member.size, budget, stream.check)
                    if progress:
                        progress(stream.read_in, total)
            except tarfile.TarError as exc:
                raise refuse("corrupt_archive", f"the tar archive is corrupt: {exc}") from None
    return found


# --- zip ---

_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def extract_zip(path: Path, dest: Path, limits: Limits, progress: Progress | None = None) -> dict:
    budget, tree, found = _Budget(limits), _Tree(dest), {}
    total = os.path.getsize(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise refuse("corrupt_archive", f"not a readable zip archive: {exc}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise _too_large("too_many_entries", f"the package has over {limits.max_entries} entries",
                             limit=limits.max_entries)
        done_in = 0
        for info in infos:
            name = info.filename
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                raise refuse("link_entry", f"the entry {name!r} is a link (refused)", entry=name)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise refuse("special_entry", f"the entry {name!r} is not a regular file or folder", entry=name)
            if info.is_dir():
                if info.file_size:
                    raise refuse("special_entry", f"the folder entry {name!r} holds bytes", entry=name)
                tree.add_dir(name.rstrip("/"))
                budget.entry(name, 0)
                continue
            if info.flag_bits & 0x1:
                raise refuse("encrypted_entry", f"the entry {name!r} is encrypted", entry=name)
            if info.compress_type not in _ZIP_METHODS:
                raise refuse("unsupported_compression", f"the entry {name!r} uses compression method "
                             f"{info.compress_type} (only stored and deflate are read)", entry=name)
            budget.entry(name, info.file_size)
            if info.file_size > limits.ratio_slack_bytes and \
                    info.file_size > limits.max_ratio * max(info.compress_size, 1):
                raise _too_large("compression_ratio", f"the entry {name!r} inflates over {limits.max_ratio:g} "
                                 "times its compressed size (a decompression bomb?)", entry=name,
                                 limit=limits.max_ratio)
            fd = tree.open_file(name)
            try:
                src = archive.open(info)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
                os.close(fd)
                raise refuse("corrupt_archive", f"the entry {name!r} cannot be read: {exc}", entry=name) from None
            try:
                with src:
                    found[name] = _copy(src, fd, name, info.file_size, budget)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise refuse("corrupt_archive", f"the entry {name!r} is corrupt: {exc}", entry=name) from None
            done_in += info.compress_size
            if progress:
                progress(done_in, total)
    return found


# --- folder ---


def copy_folder(src: Path, dest: Path, limits: Limits, progress: Progress | None = None) -> dict:
    """A folder package, copied in (hashing on the way), refusing links and special files like an archive's."""
    budget, tree, found = _Budget(limits), _Tree(dest), {}
    done = 0

    def walk(folder: Path, prefix: str) -> None:
        nonlocal done
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = f"{prefix}{entry.name}"
                if entry.is_symlink():
                    raise refuse("link_entry", f"the entry {name!r} is a link (refused)", entry=name)
                if entry.is_dir(follow_symlinks=False):
                    tree.add_dir(name)
                    budget.entry(name, 0)
                    walk(Path(entry.path), f"{name}/")
                    continue
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode):
                    raise refuse("special_entry", f"the entry {name!r} is not a regular file or folder",
                                 entry=name)
                budget.entry(name, info.st_size)
                fd = tree.open_file(name)
                src_fd = os.open(entry.path, os.O_RDONLY | _NOFOLLOW | _O_BINARY)
                with os.fdopen(src_fd, "rb") as f:
                    found[name] = _copy(f, fd, name, None, budget)
                done += info.st_size
                if progress:
                    progress(done, 0)

    walk(src, "")
    return found


def extract(path: Path, dest: Path, limits: Limits, progress: Progress | None = None) -> dict[str, tuple[str, int]]:
    """Unpacks the package at `path` (a .tar.gz, a .zip, or a folder; told apart by content) into the empty
    folder `dest`; returns every file's path -> (sha256, size)."""
    if path.is_dir():
        # Checked before anything is copied: a folder that is no package (the user's home, "/") is not walked.
        if not (path / MANIFEST).is_file() or (path / MANIFEST).is_symlink():
            raise refuse("missing_manifest", f"the folder {path} is not a package (no manifest.json in it)",
                         path=str(path))
        return copy_folder(path, dest, limits, progress)
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b":
        return extract_tar_gz(path, dest, limits, progress)
    if head == b"PK\x03\x04" or head == b"PK\x05\x06":
        return extract_zip(path, dest, limits, progress)
    raise refuse("unknown_format", f"{path} is not a tar.gz, a zip or a folder package", path=str(path))
