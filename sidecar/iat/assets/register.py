"""Registering new files with the rows that name them: the one way every writer of a project's files does it
(the importer, the image commands, the pipeline runner).

    stage (outside the writer)  ->  flush the data  ->  one write on the project's writer thread: rename each file
    onto its content address, write the rows, flush the folder entries  ->  on failure, remove what was placed
    and no row references.

Renaming inside the write means no other writer's clean-up (which also runs on the writer thread) can remove a
file between its rename and the commit of the row naming it; flushing the data first means a committed row never
names a torn file, whatever the crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

from iat.assets import repo, store

if TYPE_CHECKING:
    from iat.projects.directory import ProjectHandle

T = TypeVar("T")


def write_with_files(handle: ProjectHandle, staged: Sequence[store.StagedFile], rows: Callable[[], T]) -> T:
    """Puts the staged files at their addresses and runs `rows()` (which inserts the rows naming them) in one
    write transaction; returns what `rows()` returns. Nothing of a failed call stays."""
    root = handle.root
    try:
        store.flush(root, [s.temp for s in staged])
    except BaseException:
        store.discard(staged)
        raise
    created: list[str] = []

    def write() -> T:
        store.commit(root, staged, created)
        out = rows()
        store.flush_dirs(root, [s.stored.rel_uri for s in staged])
        return out

    try:
        return handle.store.write(write)
    except BaseException:
        store.discard(staged)  # temps not yet renamed
        if created:
            handle.store.write(_remove_unreferenced, handle.id, root, created)
        raise


def _remove_unreferenced(project_id: str, root: Path, uris: list[str]) -> list[str]:
    return store.remove_unreferenced(root, uris, repo.referenced_uris(project_id, uris))
