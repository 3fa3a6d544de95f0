"""assets.import: files and folders from the user's disk into a project's store, all or nothing.

1. Paths. Every path, and every file found in a folder, is resolved (realpath) and must lie under one of the
   project's import roots: `settings_json["import_roots"]` (absolute folders) when set, else the user's home
   folder and the project root. The project's own store (assets/) and database files are never imported.
   Every problem of the batch is collected and reported at once, before anything is read (see `refuse` for
   which error a refused batch answers with).
2. Content. Each file is read once: copied into a temp file of the store while hashed and sniffed
   (iat.assets.store.stage_file), a few at a time. A file whose content contradicts its extension or that
   cannot be read is a problem too; if there is any, every temp is dropped and nothing is imported.
3. Commit. The temps' data is flushed to disk (one syncfs on Linux), then, in one write transaction on the
   project's writer thread, the temps are renamed onto their content addresses, the folder entries flushed and
   the rows written (bytes already stored under this kind return the existing row, `deduplicated`). If that
   transaction fails, the files it put in place that no row references are removed, again on the writer.
"""

from __future__ import annotations

import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from iat.assets import repo, store
from iat.assets.register import write_with_files
from iat.assets.sniff import ContentMismatch
from iat.clock import utcnow
from iat.errors import Forbidden, IATError, InvalidParams, NotFound
from iat.projects.repo import get_project

# Files staged at once: reading, hashing and writing release the GIL, so a few threads overlap disk and CPU.
STAGE_THREADS = max(2, min(4, os.cpu_count() or 1))
PROGRESS_INTERVAL_S = 0.2  # at most ~5 progress notifications a second
_DB_FILES = ("project.db", "project.db-wal", "project.db-shm", "project.db-journal")


@dataclass(frozen=True)
class Source:
    path: str  # as the user gave it, or as found in a folder they gave
    real: Path


@dataclass(frozen=True)
class Problem:
    path: str
    type: str
    msg: str

    def as_error(self) -> dict:
        return {"loc": ["paths"], "path": self.path, "type": self.type, "msg": self.msg}


def import_roots(settings: dict, project_root: Path) -> list[Path]:
    """The folders imports may come from (resolved): settings_json.import_roots, else home and the project."""
    configured = settings.get("import_roots")
    if configured is None:
        return [Path(os.path.realpath(Path.home())), Path(os.path.realpath(project_root))]
    if not isinstance(configured, list) or not all(isinstance(r, str) and os.path.isabs(r) for r in configured):
        raise InvalidParams("the project's settings_json.import_roots must be a list of absolute folder paths",
                            details={"errors": [{"loc": ["settings_json", "import_roots"],
                                                 "type": "invalid_import_roots",
                                                 "msg": "expected a list of absolute paths"}]})
    return [Path(os.path.realpath(r)) for r in configured]


class _Collector:
    def __init__(self, roots: Sequence[Path], project_root: Path, recursive: bool):
        self.roots = roots
        self.project = Path(os.path.realpath(project_root))
        self.store_dir = self.project / store.ASSETS_DIR
        self.recursive = recursive
        self.sources: dict[Path, Source] = {}  # by realpath: a file named twice is imported once
        self.problems: list[Problem] = []
        self._seen_dirs: set[Path] = set()

    def _allowed(self, real: Path) -> bool:
        return any(real == root or real.is_relative_to(root) for root in self.roots)

    def _own(self, real: Path) -> bool:
        return real == self.store_dir or real.is_relative_to(self.store_dir) or \
            (real.parent == self.project and real.name in _DB_FILES)

    def add(self, given: str) -> None:
        if not os.path.isabs(given):  # relative to what? (and no "~": the client knows the user's home)
            self.problems.append(Problem(given, "not_absolute", f"{given}: an import path must be absolute"))
            return
        self._visit(given, Path(given), explicit=True)

    def _visit(self, shown: str, path: Path, explicit: bool) -> None:
        real = Path(os.path.realpath(path))
        if not self._allowed(real):
            lexical = Path(os.path.abspath(path))  # `..` folded, symlinks not followed
            if self._allowed(lexical) and lexical != real:
                self.problems.append(Problem(shown, "symlink_escapes",
                                             f"{shown}: a symlink leading to {real}, outside the import roots"))
            else:
                self.problems.append(Problem(shown, "outside_import_roots",
                                             f"{shown}: {real} is outside the project's import roots "
                                             f"({', '.join(map(str, self.roots))})"))
            return
        if self._own(real):
            if explicit:
                self.problems.append(Problem(shown, "inside_project_store",
                                             f"{shown}: the project's own store and database are not importable"))
            return
        try:
            info = os.stat(real)
        except FileNotFoundError:
            kind = "broken_symlink" if os.path.islink(path) else "not_found"
            self.problems.append(Problem(shown, kind, f"{shown}: no such file or folder"))
            return
        except OSError as exc:
            self.problems.append(_os_problem(shown, exc))
            return
        if stat.S_ISDIR(info.st_mode):
            if explicit or self.recursive:
                self._folder(shown, real)
        elif stat.S_ISREG(info.st_mode):
            self.sources.setdefault(real, Source(shown, real))
        else:
            self.problems.append(Problem(shown, "not_a_regular_file", f"{shown}: not a regular file"))

    def _folder(self, shown: str, real: Path) -> None:
        if real in self._seen_dirs:  # a symlinked folder seen already (or a loop)
            return
        self._seen_dirs.add(real)
        try:
            entries = sorted(os.scandir(real), key=lambda e: e.name)
        except OSError as exc:
            self.problems.append(_os_problem(shown, exc))
            return
        own_names = (store.ASSETS_DIR, *_DB_FILES) if real == self.project else ()
        for entry in entries:
            if entry.name.startswith(".") or entry.name in own_names:
                continue  # hidden entries (.DS_Store, .git) are never what importing a folder means
            shown_child = os.path.join(shown, entry.name)
            if entry.is_symlink():  # resolved and checked like a path given by the user
                self._visit(shown_child, Path(entry.path), explicit=False)
            elif entry.is_dir(follow_symlinks=False):
                if self.recursive:  # no symlink on the way: inside `real`, so inside the roots
                    self._folder(shown_child, real / entry.name)
            elif entry.is_file(follow_symlinks=False):
                self.sources.setdefault(real / entry.name, Source(shown_child, real / entry.name))
            else:
                self.problems.append(Problem(shown_child, "not_a_regular_file",
                                             f"{shown_child}: not a regular file"))


def collect(paths: Sequence[str], roots: Sequence[Path], project_root: Path,
            recursive: bool) -> tuple[list[Source], list[Problem]]:
    """The files the paths name (folders: their files; with `recursive`, their subfolders' too)."""
    collector = _Collector(roots, project_root, recursive)
    for given in paths:
        collector.add(given)
    return list(collector.sources.values()), collector.problems


# The error a refused batch answers with follows its most fundamental problem: access (forbidden), then a path
# that names nothing (not_found), then what the files hold (invalid_params). Each problem keeps its own `type`.
_FORBIDDEN = {"outside_import_roots", "symlink_escapes", "inside_project_store", "permission_denied"}
_NOT_FOUND = {"not_found", "broken_symlink"}


def refuse(problems: Sequence[Problem]) -> IATError:
    kinds = {p.type for p in problems}
    for cls, types in ((Forbidden, _FORBIDDEN), (NotFound, _NOT_FOUND), (InvalidParams, kinds)):
        if kinds & types:
            break
    first = next(p for p in problems if p.type in types)
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return cls(f"nothing imported: {first.msg}{more}", details={"errors": [p.as_error() for p in problems]})


def _os_problem(shown: str, exc: OSError) -> Problem:
    kind = "permission_denied" if isinstance(exc, PermissionError) else "unreadable"
    return Problem(shown, kind, f"{shown}: {exc.strerror or exc}")


def stage_all(root: Path, sources: Sequence[Source],
              progress: Callable[[int, int], None]) -> tuple[list[store.StagedFile], list[Problem]]:
    """Copies, hashes and sniffs every source into temp files (results in source order); collects problems."""
    tmp = store.temp_dir(root)
    total = len(sources)

    def one(source: Source) -> store.StagedFile | Problem:
        try:
            # No symlink is followed at the last step: the path was resolved and checked in collect().
            return store.stage_file(root, source.real, tmp=tmp, follow_symlinks=False)
        except ContentMismatch as exc:
            return Problem(source.path, "content_mismatch", f"{source.path}: {exc}")
        except OSError as exc:
            return _os_problem(source.path, exc)

    staged: list[store.StagedFile] = []
    problems: list[Problem] = []
    last = time.monotonic()
    with ThreadPoolExecutor(STAGE_THREADS, thread_name_prefix="iat-import") as pool:
        futures = [pool.submit(one, source) for source in sources]
        try:
            for done, future in enumerate(futures, start=1):
                result = future.result()
                (problems if isinstance(result, Problem) else staged).append(result)
                now = time.monotonic()
                if now - last >= PROGRESS_INTERVAL_S and done < total:
                    progress(done, total)
                    last = now
        except BaseException:  # an unexpected error (or an interrupt): no temp file may outlive it
            for future in futures:
                future.cancel()
            wait(futures)
            store.discard(f.result() for f in futures
                          if not f.cancelled() and f.exception() is None and isinstance(f.result(), store.StagedFile))
            raise
    progress(total, total)
    return staged, problems


def import_files(handle, paths: Sequence[str], kind: str, recursive: bool, actor_id: str | None,
                 progress: Callable[[int, int], None]) -> list[tuple[dict, bool, str]]:
    """Imports all the files or none; returns (asset row, deduplicated, source path) per file."""
    project = handle.store.read(get_project, handle.id)
    roots = import_roots(project["settings_json"] or {}, handle.root)
    sources, problems = collect(paths, roots, handle.root, recursive)
    if problems:
        raise refuse(problems)
    if not sources:
        return []  # folders holding no files: nothing changes, nothing to audit
    staged, problems = stage_all(handle.root, sources, progress)
    if problems:
        store.discard(staged)
        raise refuse(problems)
    files = [(s.stored, {"original_name": src.real.name, "source_path": str(src.real)})
             for s, src in zip(staged, sources)]
    rows = write_with_files(handle, staged, lambda: repo.import_assets(handle.id, kind, files, utcnow(), actor_id))
    return [(row, dedup, src.path) for (row, dedup), src in zip(rows, sources)]

