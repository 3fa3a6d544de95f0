"""A sync of a project's files with its S3 mirror (storage.sync), and the entry points other parts call:
`push_paths` / `pull_paths` (studio mode) and `after_run` (a run's new files when it ends).

One sync: the local files (hashes cached), one ListObjectsV2 pass over the prefix and the recorded state make the
plan (iat.sync.plan); a HEAD only for objects the state cannot vouch for. Transfers go through boto3's transfer
manager (s3transfer: multipart above the threshold, parts and files in parallel). Every object carries its
sha256 as user metadata `sha256` and as its S3 checksum: a single PUT sends ChecksumSHA256 (the server checks the
bytes against it), a multipart upload ChecksumAlgorithm=SHA256 (per-part checksums, as S3 allows no full-object
SHA-256 there). Finished transfers write their state rows in batches while the sync runs, so a killed sync
resumes; s3transfer aborts a failed multipart upload, and a multipart object is visible only once complete.
Downloads land in a hidden temp file, are checked against the sha256 and renamed into place.

Only one sync per project at a time (a second storage.sync is a conflict; internal callers wait)."""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from iat.audit import repo as audit
from iat.errors import Conflict
from iat.sync import client as s3client
from iat.sync import files
from iat.sync import plan as planning
from iat.sync import state
from iat.sync.files import Local
from iat.sync.plan import Remote
from iat.sync.state import Known

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MULTIPART_THRESHOLD = 8 * MIB  # the AWS CLI's defaults
MULTIPART_CHUNKSIZE = 8 * MIB
MAX_CONCURRENCY = 10
FLUSH_INTERVAL_S = 0.25  # finished transfers' state rows are written at least this often
PROGRESS_INTERVAL_S = 0.25
ITEMS_MAX = 1000  # changes listed in a result; counts are always whole
TEMP_DIR = ".iat-sync"  # hidden, so never synced; removed after each pull
SETTING_AFTER_RUN = "s3_sync_after_run"

_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


@dataclass
class Options:
    direction: str = "push"
    dry_run: bool = False
    delete_remote: bool = False
    confirm_delete: bool = False
    paths: list[str] | None = None
    multipart_threshold: int = MULTIPART_THRESHOLD
    multipart_chunksize: int = MULTIPART_CHUNKSIZE
    max_concurrency: int = MAX_CONCURRENCY
    trigger: str = "command"  # command | after_run | studio


def _lock(app, project_id: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(app, {}).setdefault(project_id, threading.Lock())


def sync(app, handle, opts: Options, *, actor_id: str | None, wait: bool = False) -> dict:
    """Runs one sync of the project's files with its mirror; returns what it did (or would do, dry)."""
    from iat.projects import repo as projects_repo

    policy = handle.store.read(projects_repo.get_storage, handle.id)
    if not policy["s3_enabled"]:
        raise Conflict("S3 is not enabled in this project's storage policy (storage.set s3_enabled)",
                       details={"slug": handle.slug})
    lock = _lock(app, handle.id)
    if not lock.acquire(blocking=wait):
        raise Conflict("a sync of this project is already running", details={"slug": handle.slug})
    try:
        return _Sync(app, handle, policy, opts, actor_id).run()
    finally:
        lock.release()


def enabled(handle) -> bool:
    from iat.projects import repo as projects_repo

    return bool(handle.store.read(projects_repo.get_storage, handle.id)["s3_enabled"])


def _actor(app) -> str | None:
    try:
        return app.current_user()["id"]
    except Exception:  # noqa: BLE001 - an internal sync is attributed to nobody rather than not made
        return None


def push_paths(app, handle, rel_paths) -> dict:
    """Pushes the named project files or folders (studio mode); counts 0 when the project's S3 is off."""
    if not enabled(handle):
        return _nothing("push")
    return sync(app, handle, Options("push", paths=list(rel_paths), trigger="studio"), actor_id=_actor(app),
                wait=True)


def pull_paths(app, handle, rel_paths) -> dict:
    """Pulls the named project files or folders (studio mode); counts 0 when the project's S3 is off."""
    if not enabled(handle):
        return _nothing("pull")
    return sync(app, handle, Options("pull", paths=list(rel_paths), trigger="studio"), actor_id=_actor(app),
                wait=True)


def run_paths(project_id: str, run_id: str) -> list[str]:
    """Inside Store.read: a run's folder and the assets made since it started (its new files)."""
    from iat.db.models import Asset, Run

    run = Run.select(Run.created_at, Run.started_at).where(Run.id == run_id).dicts().first()
    if run is None:
        return []
    since = run["started_at"] or run["created_at"]
    uris = [r for (r,) in Asset.select(Asset.storage_uri)
            .where((Asset.project_id == project_id) & (Asset.created_at >= since)).tuples()]
    return sorted({f"runs/{run_id}", *uris})


def after_run(app, handle, run_id: str) -> dict | None:
    """Mirrors a finished run's new files when the project asks for it (settings_json.s3_sync_after_run and S3
    enabled); None when it does not."""
    from iat.projects import repo as projects_repo

    project = handle.store.read(projects_repo.get_project, handle.id)
    if not (project.get("settings_json") or {}).get(SETTING_AFTER_RUN) or not enabled(handle):
        return None
    paths = handle.store.read(run_paths, handle.id, run_id)
    return sync(app, handle, Options("push", paths=paths, trigger="after_run"), actor_id=_actor(app), wait=True)


def subscribe(app) -> None:
    """Listens for run.finished on the App's bus; each mirroring runs on its own thread (the bus never waits)."""

    def on_event(name: str, payload: dict) -> None:
        if name != "run.finished" or app.stopping.is_set():
            return
        threading.Thread(target=_after_run_safely, args=(app, payload), name="iat-sync-after-run",
                         daemon=True).start()

    app.events.subscribe(on_event)


def _after_run_safely(app, payload: dict) -> None:
    try:
        with app.projects.lease(payload["slug"]) as handle:
            if handle.id == payload.get("project_id"):
                after_run(app, handle, payload["run_id"])
    except Exception:  # noqa: BLE001 - a failed mirror is logged and audited; the run itself is done
        log.warning("mirroring run %s to S3 failed", payload.get("run_id"), exc_info=True)


def _nothing(direction: str) -> dict:
    return {"direction": direction, "dry_run": False, "status": "disabled", **{k: 0 for k in _COUNTS},
            "items": [], "items_truncated": False}


_COUNTS = ("uploaded", "downloaded", "skipped", "deleted", "failed", "conflicts", "refused", "delete_pending",
           "uploaded_bytes", "downloaded_bytes", "deleted_bytes", "failed_bytes")


@dataclass
class _Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    done_files: int = 0
    done_bytes: int = 0
    rows: list[Known] = field(default_factory=list)  # finished, not yet written
    counts: dict = field(default_factory=lambda: {k: 0 for k in _COUNTS})
    items: list[dict] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)

    def item(self, path: str, action: str, size: int | None, reason: str | None = None) -> None:
        if len(self.items) < ITEMS_MAX:
            self.items.append({"path": path, "action": action, "size_bytes": size, "reason": reason})


class _Sync:
    def __init__(self, app, handle, policy: dict, opts: Options, actor_id: str | None):
        self.app, self.handle, self.policy, self.opts, self.actor_id = app, handle, policy, opts, actor_id
        self.root: Path = handle.root
        self.bucket: str = policy["s3_bucket"]
        self.prefix: str = (policy.get("s3_prefix") or "").strip("/")
        self.base = f"{self.prefix}/" if self.prefix else ""
        self.tally = _Tally()
        self.refused: list[str] = []
        self.started = time.monotonic()

    # --- the steps ---

    def run(self) -> dict:
        opts = self.opts
        self.client = s3client.build(self.app, self.handle, self.policy, max_connections=opts.max_concurrency + 4)
        known = self.handle.store.read(state.known, self.handle.id)
        local = files.scan(self.root, opts.paths)
        files.hash_all(self.root, local, known)
        remote = self._list()
        if opts.direction == "push":
            plan = planning.push(local, remote, known)
            planning.after_verify_push(plan, [(f, r, sha) for (f, r), sha in zip(plan.verify, self._heads(plan))])
        else:
            plan = planning.pull(local, remote, known)
            for (f, r), sha in zip(plan.verify, self._heads(plan)):
                planning.decide_pull(plan, f, r, known.get(r.path), sha)
        plan.verify = []
        self._describe(plan)
        if not opts.dry_run:
            self._transfer(plan)
            self._delete(plan)
        return self._finish(plan)

    def _list(self) -> dict[str, Remote]:
        subset = self.opts.paths
        prefixes = [self.base + p.strip("/") for p in subset] if subset is not None and len(subset) <= 16 \
            else [self.base]
        out: dict[str, Remote] = {}
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for lp in prefixes:
                for page in paginator.paginate(Bucket=self.bucket, Prefix=lp):
                    for o in page.get("IatContents", page.get("Contents", ())):
                        key = o["Key"]
                        rel = key[len(self.base):]
                        if key.endswith("/") or not files.wanted(rel, subset):
                            continue
                        if not files.is_synced(rel):
                            self.refused.append(rel)  # never written locally nor deleted: not ours to judge
                            continue
                        out[rel] = Remote(rel, key, int(o["Size"]), o.get("ETag", "").strip('"'))
        except Exception as exc:  # noqa: BLE001 - every failure before a change: typed, nothing written
            raise s3client.translate(exc, self.policy) from None
        return out

    def _heads(self, plan) -> list[str | None]:
        """The sha256 metadata of the objects the state cannot vouch for (one HEAD each, in parallel)."""
        import botocore.exceptions

        def head(r: Remote) -> str | None:
            try:
                meta = self.client.head_object(Bucket=self.bucket, Key=r.key).get("Metadata", {})
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return None  # gone since the listing
                raise s3client.translate(exc, self.policy, r.key) from None
            except Exception as exc:  # noqa: BLE001
                raise s3client.translate(exc, self.policy, r.key) from None
            sha = str(meta.get("sha256", "")).lower()
            return sha if len(sha) == 64 else None

        if not plan.verify:
            return []
        with ThreadPoolExecutor(self.opts.max_concurrency, thread_name_prefix="iat-sync-head") as pool:
            return list(pool.map(head, [r for _, r in plan.verify]))

    def _describe(self, plan) -> None:
        t = self.tally
        t.counts["skipped"] = len(plan.skip)
        t.counts["conflicts"] = len(plan.conflict)
        t.counts["refused"] = len(self.refused)
        for path, why in plan.conflict:
            t.item(path, "conflict", None, why)
        for rel in self.refused:
            t.item(rel, "refused", None, "not a path this project syncs (outside the project's files)")
        if self.opts.direction == "push" and plan.delete and not self.opts.delete_remote:
            plan.delete = []  # remote-only objects are left alone unless the caller asks
        if self.opts.dry_run:
            for f in plan.upload:
                t.item(f.path, "upload", f.size)
                t.counts["uploaded"] += 1
                t.counts["uploaded_bytes"] += f.size
            for r, _ in plan.download:
                t.item(r.path, "download", r.size)
                t.counts["downloaded"] += 1
                t.counts["downloaded_bytes"] += r.size
        for r in plan.delete:
            t.item(r.path, "delete" if self.opts.confirm_delete else "delete_pending", r.size,
                   None if self.opts.confirm_delete else "needs confirm_delete")
            if not self.opts.confirm_delete:
                t.counts["delete_pending"] += 1
            elif self.opts.dry_run:
                t.counts["deleted"] += 1
                t.counts["deleted_bytes"] += r.size
        t.rows.extend(plan.refresh)

    # --- transfers ---

    def _transfer(self, plan) -> None:
        jobs = len(plan.upload) + len(plan.download)
        if not jobs:
            return
        from boto3.s3.transfer import TransferConfig
        from s3transfer.manager import TransferManager
        from s3transfer.subscribers import BaseSubscriber

        sync = self
        total_bytes = sum(f.size for f in plan.upload) + sum(r.size for r, _ in plan.download)
        total_files = jobs

        class Watch(BaseSubscriber):
            def __init__(self, done):
                self.done = done

            def on_progress(self, future, bytes_transferred, **kwargs):
                with sync.tally.lock:
                    sync.tally.done_bytes += bytes_transferred

            def on_done(self, future, **kwargs):
                try:
                    future.result()
                    error = None
                except BaseException as exc:  # noqa: BLE001 - one file's failure is counted, the others go on
                    error = exc
                try:
                    self.done(error)
                except Exception as exc:  # noqa: BLE001
                    log.warning("sync: finishing a transfer failed", exc_info=True)
                    sync._failed(getattr(self.done, "path", "?"), 0, exc)
                with sync.tally.lock:
                    sync.tally.done_files += 1

        config = TransferConfig(multipart_threshold=self.opts.multipart_threshold,
                                multipart_chunksize=self.opts.multipart_chunksize,
                                max_concurrency=self.opts.max_concurrency, use_threads=True)
        stop = threading.Event()
        flusher = threading.Thread(target=self._flush_loop, args=(stop, total_files, total_bytes),
                                   name="iat-sync-flush", daemon=True)
        flusher.start()
        manager = TransferManager(self.client, config)
        futures = []
        try:
            if plan.download:
                (self.root / TEMP_DIR).mkdir(exist_ok=True)
            for f in plan.upload:
                if self.app.stopping.is_set():
                    break
                key = self.base + f.path
                extra = {"Metadata": {"sha256": f.sha256}, "ChecksumAlgorithm": "SHA256"}
                if f.size < self.opts.multipart_threshold:  # the server checks the bytes against our hash
                    extra["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(f.sha256)).decode()
                futures.append(manager.upload(str(self.root / f.path), self.bucket, key, extra_args=extra,
                                              subscribers=[Watch(self._uploaded_fn(f))]))
            for r, expected in plan.download:
                if self.app.stopping.is_set():
                    break
                tmp = self.root / TEMP_DIR / uuid.uuid4().hex
                futures.append(manager.download(self.bucket, r.key, str(tmp),
                                                subscribers=[Watch(self._downloaded_fn(r, expected, tmp))]))
            for fut in futures:
                try:
                    fut.result()
                except BaseException:  # noqa: BLE001 - counted by its subscriber
                    pass
        finally:
            manager.shutdown(cancel=self.app.stopping.is_set())
            stop.set()
            flusher.join()
            if plan.download:
                _remove_tree(self.root / TEMP_DIR)
        self._fill_etags()

    def _uploaded_fn(self, f: Local):
        def done(error):
            if error is not None:
                return self._failed(f.path, f.size, error, key=self.base + f.path)
            try:
                st = (self.root / f.path).stat()
                unchanged = st.st_size == f.size and st.st_mtime_ns == f.mtime_ns
            except OSError:
                unchanged = False
            with self.tally.lock:
                self.tally.counts["uploaded"] += 1
                self.tally.counts["uploaded_bytes"] += f.size
                self.tally.item(f.path, "upload", f.size)
                self.tally.uploaded.append(f.path)
                if unchanged:  # a file changed while it went up is left for the next sync to check
                    self.tally.rows.append(Known(f.path, f.sha256, f.size, None, f.mtime_ns))
        done.path = f.path
        return done

    def _downloaded_fn(self, r: Remote, expected: str | None, tmp: Path):
        def done(error):
            if error is not None:
                tmp.unlink(missing_ok=True)
                return self._failed(r.path, r.size, error, key=r.key)
            sha = files.sha256_file(tmp)
            if expected is not None and sha != expected:
                tmp.unlink(missing_ok=True)
                return self._failed(r.path, r.size, None, reason=f"sha256 mismatch: got {sha}, want {expected}")
            dest = self.root / r.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.parent.resolve().is_relative_to(self.root.resolve()):
                tmp.unlink(missing_ok=True)
                return self._failed(r.path, r.size, None, reason="the folder leads outside the project")
            os.replace(tmp, dest)
            st = dest.stat()
            with self.tally.lock:
                self.tally.counts["downloaded"] += 1
                self.tally.counts["downloaded_bytes"] += st.st_size
                self.tally.item(r.path, "download", st.st_size)
                self.tally.rows.append(Known(r.path, sha, st.st_size, r.etag, st.st_mtime_ns))
        done.path = r.path
        return done

    def _failed(self, path: str, size: int, error: BaseException | None, *, key: str | None = None,
                reason: str | None = None) -> None:
        if error is not None:
            reason = s3client.translate(error, self.policy, key).message
        with self.tally.lock:
            self.tally.counts["failed"] += 1
            self.tally.counts["failed_bytes"] += size
            self.tally.item(path, "failed", size, reason)

    def _flush_loop(self, stop: threading.Event, total_files: int, total_bytes: int) -> None:
        last: tuple | None = None
        while True:
            stopped = stop.wait(min(FLUSH_INTERVAL_S, PROGRESS_INTERVAL_S))
            self._flush()
            with self.tally.lock:
                now = (self.tally.done_files, self.tally.done_bytes)
            if now != last:
                last = now
                self.app.events.publish("storage.sync.progress", {
                    "project_id": self.handle.id, "slug": self.handle.slug, "direction": self.opts.direction,
                    "files_done": now[0], "files_total": total_files, "bytes_done": min(now[1], total_bytes),
                    "bytes_total": total_bytes})
            if stopped:
                return

    def _flush(self) -> None:
        with self.tally.lock:
            rows, self.tally.rows = self.tally.rows, []
        if rows:
            try:
                self.handle.store.write(state.upsert, self.handle.id, rows)
            except Exception:  # noqa: BLE001 - kept for the final write
                log.warning("sync: writing state rows failed; retried at the end", exc_info=True)
                with self.tally.lock:
                    self.tally.rows[:0] = rows

    def _fill_etags(self) -> None:
        """Records the ETags of what this sync uploaded, from one more listing (the transfer manager returns
        none); a failure leaves them unknown, which the next sync accepts."""
        with self.tally.lock:
            uploaded = set(self.tally.uploaded)
        if not uploaded:
            return
        try:
            listed = self._list()
        except Exception:  # noqa: BLE001
            log.warning("sync: listing the ETags of the uploads failed", exc_info=True)
            return
        fresh = []
        for path in uploaded:
            r = listed.get(path)
            if r is None:
                continue
            fresh.append((path, r.etag))
        self._flush()
        known = self.handle.store.read(state.known, self.handle.id)
        rows = [Known(p, k.sha256, k.size_bytes, etag, k.mtime_ns) for p, etag in fresh
                if (k := known.get(p)) is not None and k.etag is None]
        with self.tally.lock:
            self.tally.rows.extend(rows)

    def _delete(self, plan) -> None:
        if not (plan.delete and self.opts.confirm_delete):
            return
        gone: list[str] = []
        for start in range(0, len(plan.delete), 1000):
            batch = plan.delete[start:start + 1000]
            try:
                resp = self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": r.key} for r in batch], "Quiet": True})
            except Exception as exc:  # noqa: BLE001
                for r in batch:
                    self._failed(r.path, r.size, exc, key=r.key)
                continue
            errors = {e.get("Key"): e for e in resp.get("Errors", ())}
            for r in batch:
                if r.key in errors:
                    self._failed(r.path, r.size, None, reason=f"not deleted: {errors[r.key].get('Code')}")
                else:
                    gone.append(r.path)
                    self.tally.counts["deleted"] += 1
                    self.tally.counts["deleted_bytes"] += r.size
        self.gone = gone

    # --- the end ---

    def _finish(self, plan) -> dict:
        t = self.tally
        counts = dict(t.counts)
        status = "planned" if self.opts.dry_run else ("partial" if counts["failed"] else "done")
        payload = {"direction": self.opts.direction, "dry_run": self.opts.dry_run, "status": status,
                   "trigger": self.opts.trigger, "bucket": self.bucket, "prefix": self.prefix,
                   "paths": None if self.opts.paths is None else len(self.opts.paths),
                   "credentials": s3client.credentials_source(self.handle, self.policy), **counts,
                   "seconds": round(time.monotonic() - self.started, 3)}
        rows = [] if self.opts.dry_run else list(t.rows)
        gone = getattr(self, "gone", [])

        def finish() -> None:
            state.upsert(self.handle.id, rows)
            state.forget(self.handle.id, gone)
            audit.record(self.handle.id, self.actor_id, "storage.synced", payload)

        self.handle.store.write(finish)
        event = {"project_id": self.handle.id, "slug": self.handle.slug, **payload}
        self.app.events.publish("storage.synced", event)
        return {**payload, "project_id": self.handle.id, "slug": self.handle.slug, "items": t.items,
                "items_truncated": sum(counts[k] for k in ("uploaded", "downloaded", "deleted", "failed",
                                                           "conflicts", "refused", "delete_pending")) > len(t.items)}


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
