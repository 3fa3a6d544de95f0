"""storage.sync against the real loopback S3 server, checked with an independent boto3 session."""

from __future__ import annotations

import base64
import os


from iat.sync import s3 as sync_s3
from sync_support import remote_objects, sha256, write_files


def _audits(client, slug="alpha") -> list[dict]:
    return [e for e in client.call("audit.list", slug=slug, limit=500)["items"] if e["event_code"] == "storage.synced"]


def test_push_puts_every_file_with_its_checksum_and_a_second_push_transfers_nothing(client, mirror, s3, alpha, src):
    files = write_files(mirror.root, 40)
    png = src / "pic.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(png)
    asset = client.call("assets.import", slug="alpha", paths=[str(png)])["items"][0]
    files[asset["storage_uri"]] = asset["sha256"]
    (mirror.root / "runs" / "r1" / "work").mkdir(parents=True)
    (mirror.root / "runs" / "r1" / "work" / "scratch.bin").write_bytes(b"scratch")
    (mirror.root / "x.lock").write_bytes(b"")

    first = client.call("storage.sync", slug="alpha")
    assert first["status"] == "done" and first["uploaded"] == len(files) and first["failed"] == 0
    assert first["uploaded_bytes"] == sum((mirror.root / p).stat().st_size for p in files)

    remote = remote_objects(s3, mirror.bucket, mirror.prefix)
    assert set(remote) == set(files)  # no project.db, lock, hidden temp or run scratch file
    for rel, digest in files.items():
        assert remote[rel]["sha256"] == digest
        assert remote[rel]["checksum"] == base64.b64encode(bytes.fromhex(digest)).decode()
        body = s3.get_object(Bucket=mirror.bucket, Key=f"{mirror.prefix}/{rel}")["Body"].read()
        assert sha256(body) == digest

    second = client.call("storage.sync", slug="alpha")
    assert (second["uploaded"], second["skipped"], second["items"]) == (0, len(files), [])
    audits = _audits(client)
    assert [a["payload_json"]["uploaded"] for a in audits[:2]] == [0, len(files)] or \
        sorted(a["payload_json"]["uploaded"] for a in audits) == [0, len(files)]
    done = next(a for a in audits if a["payload_json"]["uploaded"])
    assert done["payload_json"]["uploaded_bytes"] == first["uploaded_bytes"]
    assert done["payload_json"]["credentials"] == "default" and "iat-test" not in str(done)


def test_a_changed_file_is_uploaded_again_and_a_dry_run_changes_nothing(client, mirror, s3):
    files = write_files(mirror.root, 6)
    client.call("storage.sync", slug="alpha")
    rel = sorted(files)[2]
    (mirror.root / rel).write_bytes(b"new content")
    before = remote_objects(s3, mirror.bucket, mirror.prefix)

    dry = client.call("storage.sync", slug="alpha", dry_run=True)
    assert dry["status"] == "planned" and dry["dry_run"] is True
    assert [(i["path"], i["action"]) for i in dry["items"]] == [(rel, "upload")]
    assert remote_objects(s3, mirror.bucket, mirror.prefix) == before
    assert _audits(client)[0]["payload_json"]["dry_run"] is True

    real = client.call("storage.sync", slug="alpha")
    assert (real["uploaded"], real["skipped"]) == (1, 5)
    assert remote_objects(s3, mirror.bucket, mirror.prefix)[rel]["sha256"] == sha256(b"new content")


def test_remote_objects_without_a_local_file_are_deleted_only_with_confirmation(client, mirror, s3):
    write_files(mirror.root, 3)
    client.call("storage.sync", slug="alpha")
    extra = f"{mirror.prefix}/old/gone.txt"
    s3.put_object(Bucket=mirror.bucket, Key=extra, Body=b"old")

    plain = client.call("storage.sync", slug="alpha")
    assert plain["deleted"] == 0 and plain["delete_pending"] == 0
    asked = client.call("storage.sync", slug="alpha", delete_remote=True)
    assert (asked["deleted"], asked["delete_pending"]) == (0, 1)
    assert [(i["path"], i["action"]) for i in asked["items"]] == [("old/gone.txt", "delete_pending")]
    dry = client.call("storage.sync", slug="alpha", delete_remote=True, confirm_delete=True, dry_run=True)
    assert dry["deleted"] == 1
    assert s3.head_object(Bucket=mirror.bucket, Key=extra)  # still there after all three

    done = client.call("storage.sync", slug="alpha", delete_remote=True, confirm_delete=True)
    assert (done["deleted"], done["deleted_bytes"]) == (1, 3)
    assert "old/gone.txt" not in remote_objects(s3, mirror.bucket, mirror.prefix)
    assert len(remote_objects(s3, mirror.bucket, mirror.prefix)) == 3


def test_pull_restores_every_file_and_never_overwrites_a_different_local_file(client, mirror, s3, s3_endpoint):
    files = write_files(mirror.root, 12)
    client.call("storage.sync", slug="alpha")
    client.call("projects.create", slug="beta", name="Beta")
    client.call("storage.set", slug="beta", s3_enabled=True, s3_bucket=mirror.bucket, s3_prefix=mirror.prefix,
                s3_endpoint_url=s3_endpoint, s3_region="us-east-1")
    beta = client.app.projects.open("beta").root
    db_before = (beta / "project.db").stat().st_size

    pulled = client.call("storage.sync", slug="beta", direction="pull")
    assert (pulled["downloaded"], pulled["failed"], pulled["conflicts"]) == (12, 0, 0)
    for rel, digest in files.items():
        assert sha256((beta / rel).read_bytes()) == digest
    assert not (beta / ".iat-sync").exists()
    assert client.call("storage.sync", slug="beta", direction="pull")["downloaded"] == 0
    assert (beta / "project.db").stat().st_size >= db_before  # its own database, never pulled over

    a, b = sorted(files)[:2]
    (mirror.root / a).write_bytes(b"alpha's new a")
    (mirror.root / b).write_bytes(b"alpha's new b")
    client.call("storage.sync", slug="alpha")
    (beta / b).write_bytes(b"beta's own b")
    again = client.call("storage.sync", slug="beta", direction="pull")
    assert again["downloaded"] == 1 and again["conflicts"] == 1
    assert (beta / a).read_bytes() == b"alpha's new a"  # unchanged here since the last sync: updated
    assert (beta / b).read_bytes() == b"beta's own b"  # changed here too: a conflict, left as it is
    assert [i["path"] for i in again["items"] if i["action"] == "conflict"] == [b]


def test_pull_refuses_keys_that_name_no_project_file(client, mirror, s3, tmp_path):
    write_files(mirror.root, 2)
    client.call("storage.sync", slug="alpha")
    db = (mirror.root / "project.db").read_bytes()[:100]
    for key in ("../escape.txt", "project.db", ".hidden/x", "a/../../b.txt"):
        s3.put_object(Bucket=mirror.bucket, Key=f"{mirror.prefix}/{key}", Body=b"evil")
    pulled = client.call("storage.sync", slug="alpha", direction="pull")
    assert pulled["refused"] == 4 and pulled["downloaded"] == 0
    assert not (mirror.root.parent / "escape.txt").exists()
    assert (mirror.root / "project.db").read_bytes()[:100] == db
    pushed = client.call("storage.sync", slug="alpha", delete_remote=True, confirm_delete=True)
    assert pushed["deleted"] == 0  # not ours to judge either


def test_large_files_go_multipart_in_parallel(client, mirror, s3):
    data = os.urandom(13 * 1024 * 1024)
    (mirror.root / "big").mkdir()
    (mirror.root / "big" / "movie.bin").write_bytes(data)
    handle = client.app.projects.open("alpha")
    opts = sync_s3.Options("push", multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    out = sync_s3.sync(client.app, handle, opts, actor_id=None)
    assert out["uploaded"] == 1
    head = s3.head_object(Bucket=mirror.bucket, Key=f"{mirror.prefix}/big/movie.bin")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: S3's multipart ETag
    assert head["Metadata"]["sha256"] == sha256(data)
    body = s3.get_object(Bucket=mirror.bucket, Key=f"{mirror.prefix}/big/movie.bin")["Body"].read()
    assert body == data
    assert s3.list_multipart_uploads(Bucket=mirror.bucket).get("Uploads", []) == []
    assert sync_s3.sync(client.app, handle, opts, actor_id=None)["uploaded"] == 0

    # and back, verified against the sha256 it carries
    (mirror.root / "big" / "movie.bin").unlink()
    known = handle.store.read(__import__("iat.sync.state", fromlist=["x"]).known, handle.id)
    assert known["big/movie.bin"].sha256 == sha256(data)
    pulled = sync_s3.sync(client.app, handle, sync_s3.Options("pull", multipart_threshold=5 * 1024 * 1024,
                                                               multipart_chunksize=5 * 1024 * 1024), actor_id=None)
    assert pulled["downloaded"] == 1
    assert (mirror.root / "big" / "movie.bin").read_bytes() == data


def test_progress_events_and_the_synced_event(client, mirror):
    write_files(mirror.root, 30)
    seen: list[tuple[str, dict]] = []
    client.app.events.subscribe(lambda name, payload: seen.append((name, payload)))
    client.call("storage.sync", slug="alpha")
    assert client.app.events.drain()
    progress = [p for n, p in seen if n == "storage.sync.progress"]
    assert progress and progress[-1]["files_done"] == progress[-1]["files_total"] == 30
    assert progress[-1]["bytes_done"] == progress[-1]["bytes_total"] > 0
    synced = [p for n, p in seen if n == "storage.synced"]
    assert len(synced) == 1 and synced[0]["uploaded"] == 30 and synced[0]["slug"] == "alpha"


def test_paths_limit_a_sync_and_studio_mode_pushes_and_pulls_named_files(client, mirror, s3):
    files = write_files(mirror.root, 8)
    handle = client.app.projects.open("alpha")
    one = sorted(files)[0]
    out = sync_s3.push_paths(client.app, handle, [one, "results/g1"])
    assert out["uploaded"] == 1 + sum(1 for p in files if p.startswith("results/g1/"))
    assert set(remote_objects(s3, mirror.bucket, mirror.prefix)) == {one} | {p for p in files
                                                                         if p.startswith("results/g1/")}
    (mirror.root / one).unlink()
    assert sync_s3.pull_paths(client.app, handle, [one])["downloaded"] == 1
    assert sha256((mirror.root / one).read_bytes()) == files[one]

    client.call("projects.create", slug="local", name="Local")
    plain = client.app.projects.open("local")
    assert sync_s3.push_paths(client.app, plain, ["results"])["uploaded"] == 0  # S3 off: nothing, no error
    assert sync_s3.pull_paths(client.app, plain, ["results"])["downloaded"] == 0
