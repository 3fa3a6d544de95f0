"""The storage features through the frozen binary: boto3's transfer manager and botocore's trimmed data (S3 sync
against the loopback S3 server), tarfile/zipfile and SQLite's backup API (export, then import into a second frozen
sidecar with another home). Only the frozen build can show that what they load at run time was carried."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.frozen.test_frozen_smoke import FrozenSidecar, bare_env, frozen_binary  # noqa: F401 - fixtures
from tests.support import missing_real_part


def _ready(sidecar: FrozenSidecar) -> FrozenSidecar:
    assert sidecar.read_message(timeout=60).get("method") == "sidecar.ready", sidecar.log()
    return sidecar


def _project_with_pictures(sidecar: FrozenSidecar, folder: Path) -> dict[str, str]:
    """Project 'store' with two imported PNGs; returns {storage_uri: sha256}."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sidecar.result("projects.create", {"slug": "store", "name": "Store"})
    sidecar.result("projects.update", {"slug": "store", "settings_json": {"import_roots": [str(folder)]}})
    paths = []
    for i, colour in enumerate([(200, 40, 40), (40, 90, 200)]):
        path = folder / f"pic{i}.png"
        Image.new("RGB", (64, 48), colour).save(path)
        paths.append(str(path))
    items = sidecar.result("assets.import", {"slug": "store", "paths": paths})["items"]
    return {a["storage_uri"]: a["sha256"] for a in items}


def test_frozen_s3_sync_pushes_every_file_with_its_checksum(frozen_binary: Path, bare_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    import os
    import uuid

    import boto3

    endpoint = os.environ.get("IAT_TEST_S3_ENDPOINT")
    if not endpoint:
        missing_real_part("S3 API server (IAT_TEST_S3_ENDPOINT; scripts/test starts moto_server)")
    keys = {"aws_access_key_id": "iat-test", "aws_secret_access_key": "iat-test-secret"}
    s3 = boto3.session.Session(region_name="us-east-1", **keys).client("s3", endpoint_url=endpoint)
    bucket = f"iat-frozen-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    env = {**bare_env, "AWS_ACCESS_KEY_ID": keys["aws_access_key_id"],
           "AWS_SECRET_ACCESS_KEY": keys["aws_secret_access_key"], "AWS_DEFAULT_REGION": "us-east-1"}
    sidecar = _ready(FrozenSidecar(frozen_binary, env))
    try:
        stored = _project_with_pictures(sidecar, tmp_path / "pictures")
        sidecar.result("storage.set", {"slug": "store", "s3_enabled": True, "s3_bucket": bucket,
                                       "s3_prefix": "frozen/store", "s3_region": "us-east-1",
                                       "s3_endpoint_url": endpoint})
        first = sidecar.result("storage.sync", {"slug": "store", "direction": "push"})
        again = sidecar.result("storage.sync", {"slug": "store", "direction": "push"})
    finally:
        sidecar.kill()
    remote = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="frozen/store/"):
        for obj in page.get("Contents", ()):
            head = s3.head_object(Bucket=bucket, Key=obj["Key"])
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            assert head["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
            remote[obj["Key"][len("frozen/store/"):]] = head["Metadata"]["sha256"]
    for uri, sha in stored.items():
        assert remote.get(uri) == sha, (uri, sorted(remote))
    assert first["status"] == "done" and first["uploaded"] == len(remote) and first["failed"] == 0
    assert again["uploaded"] == 0 and again["skipped"] == len(remote)  # nothing changed: nothing sent


def test_frozen_export_then_import_into_another_home(frozen_binary: Path, bare_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    sidecar = _ready(FrozenSidecar(frozen_binary, bare_env))
    try:
        stored = _project_with_pictures(sidecar, tmp_path / "pictures")
        made = sidecar.result("exports.create", {"slug": "store", "format": "tar.gz"})
    finally:
        sidecar.kill()
    package = Path(made["path"])
    assert package.is_file() and hashlib.sha256(package.read_bytes()).hexdigest() == made["sha256"]

    other = {**bare_env, "IAT_HOME": str(tmp_path / "second-home")}
    sidecar = _ready(FrozenSidecar(frozen_binary, other))
    try:
        imported = sidecar.result("exports.import", {"path": str(package)})
        counts = dict(imported["row_counts"])
        assert counts.pop("project_api_secrets", 0) == 0  # left out of the package: none came in
        assert imported["slug"] == "store" and counts == made["row_counts"]
        assets = sidecar.result("assets.list", {"slug": "store", "limit": 100})["items"]
        got = {a["storage_uri"]: a["sha256"] for a in assets if a["storage_uri"] in stored}
        assert got == stored
        root = Path(imported["root_dir"])
        for uri, sha in stored.items():
            assert hashlib.sha256((root / uri).read_bytes()).hexdigest() == sha
    finally:
        sidecar.kill()
