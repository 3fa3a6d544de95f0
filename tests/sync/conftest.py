"""Fixtures of the S3 sync tests: the loopback S3 server (tests/conftest.py s3_endpoint), an independent boto3
session to check what the server holds (never the sidecar's client code), a fresh bucket per test, and a project
whose storage policy mirrors to it. A second moto server that enforces credentials (its own IAM) for the
credentials tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from sync_support import TEST_KEYS, free_port, independent


@pytest.fixture
def s3(s3_endpoint: str):
    return independent(s3_endpoint)


@pytest.fixture
def bucket(s3) -> str:
    name = f"iat-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(autouse=True)
def _test_credentials(monkeypatch):
    # The default chain finds these (scripts/lib/s3.sh exports the same); never a real account's.
    for k, v in {"AWS_ACCESS_KEY_ID": "iat-test", "AWS_SECRET_ACCESS_KEY": "iat-test-secret",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def mirror(client, project, s3_endpoint: str, bucket: str, home: Path) -> SimpleNamespace:
    """Project alpha mirrored to `bucket` under prefix studio/alpha."""
    client.call("storage.set", slug="alpha", s3_enabled=True, s3_bucket=bucket, s3_prefix="studio/alpha",
                s3_region="us-east-1", s3_endpoint_url=s3_endpoint)
    return SimpleNamespace(slug="alpha", root=client.app.projects.open("alpha").root, bucket=bucket,
                           prefix="studio/alpha")


@pytest.fixture
def auth_s3(s3_endpoint):
    """A second moto server that checks signatures against its own IAM: one user allowed s3:*, its key pair."""
    import boto3

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}  # the IAM set-up below, then every call is checked
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "moto_server did not start"
                time.sleep(0.1)
        iam = boto3.session.Session(region_name="us-east-1", **TEST_KEYS).client("iam", endpoint_url=endpoint)
        iam.create_user(UserName="syncer")
        iam.put_user_policy(UserName="syncer", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="syncer")["AccessKey"]
        keys = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
        name = f"iat-auth-{uuid.uuid4().hex[:8]}"
        independent(endpoint, **keys).create_bucket(Bucket=name)
        yield SimpleNamespace(endpoint=endpoint, keys=keys, bucket=name)
    finally:
        proc.terminate()
        proc.wait(10)
