"""What a sync moves: local files, one listing of the remote prefix and the recorded state in, actions out.

Push: a file is uploaded unless the mirror is known to hold its bytes (a state row with its sha256 and size whose
ETag is the one listed). An object listed with the file's size but no row (a sync killed before it wrote one, or a
mirror made elsewhere) is `verify`: one HEAD reads its sha256 metadata before deciding. Remote objects with no
local file are `delete` candidates, removed only with confirmation.

Pull: an object is downloaded when the file is missing, or when the local file is the one last synced (its sha256
is the state row's) and the remote one changed. A local file that differs from the remote object otherwise is a
`conflict`, never overwritten. The remote sha256 comes from the state row when the ETag is the one recorded, from
the asset's address, else from a HEAD (`verify`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from iat.sync.files import Local, content_address
from iat.sync.state import Known


@dataclass(frozen=True)
class Remote:
    path: str
    key: str
    size: int
    etag: str


@dataclass
class Plan:
    upload: list[Local] = field(default_factory=list)
    download: list[tuple[Remote, str | None]] = field(default_factory=list)  # (object, expected sha256 if known)
    delete: list[Remote] = field(default_factory=list)
    conflict: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    skip: list[str] = field(default_factory=list)
    verify: list[tuple[Local | None, Remote]] = field(default_factory=list)
    refresh: list[Known] = field(default_factory=list)  # state rows to (re)write without a transfer


def push(local: dict[str, Local], remote: dict[str, Remote], known: dict[str, Known]) -> Plan:
    plan = Plan()
    for path, f in sorted(local.items()):
        r, k = remote.get(path), known.get(path)
        if r is None:
            plan.upload.append(f)
        elif k is not None and k.sha256 == f.sha256 and k.size_bytes == f.size == r.size \
                and (k.etag is None or k.etag == r.etag):
            plan.skip.append(path)
            if k.etag != r.etag or k.mtime_ns != f.mtime_ns:
                plan.refresh.append(Known(path, f.sha256, f.size, r.etag, f.mtime_ns))
        elif r.size == f.size and (k is None or k.etag != r.etag):
            plan.verify.append((f, r))  # bytes of that size are there; their sha256 says whether they are these
        else:
            plan.upload.append(f)
    plan.delete = [r for path, r in sorted(remote.items()) if path not in local]
    return plan


def after_verify_push(plan: Plan, results: list[tuple[Local, Remote, str | None]]) -> None:
    """Sorts the verified objects: the same sha256 is a skip (and a state row), anything else an upload."""
    for f, r, remote_sha in results:
        if remote_sha == f.sha256:
            plan.skip.append(f.path)
            plan.refresh.append(Known(f.path, f.sha256, f.size, r.etag, f.mtime_ns))
        else:
            plan.upload.append(f)
    plan.upload.sort(key=lambda f: f.path)


def pull(local: dict[str, Local], remote: dict[str, Remote], known: dict[str, Known]) -> Plan:
    plan = Plan()
    for path, r in sorted(remote.items()):
        f, k = local.get(path), known.get(path)
        remote_sha = content_address(path)
        if remote_sha is None and k is not None and k.etag == r.etag and k.size_bytes == r.size:
            remote_sha = k.sha256
        if remote_sha is None:
            plan.verify.append((f, r))
            continue
        decide_pull(plan, f, r, k, remote_sha)
    return plan


def decide_pull(plan: Plan, f: Local | None, r: Remote, k: Known | None, remote_sha: str | None) -> None:
    if f is None:
        plan.download.append((r, remote_sha))
    elif remote_sha is not None and f.sha256 == remote_sha:
        plan.skip.append(r.path)
        if k is None or k.sha256 != remote_sha or k.etag != r.etag or k.mtime_ns != f.mtime_ns:
            plan.refresh.append(Known(r.path, remote_sha, f.size, r.etag, f.mtime_ns))
    elif k is not None and f.sha256 == k.sha256:
        plan.download.append((r, remote_sha))  # the local file is the last synced one: the remote is newer
    else:
        plan.conflict.append((r.path, "the local file differs from the remote object and from the last sync"))
