"""Helpers of the S3 sync tests (importable by name, unlike a conftest)."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

TEST_KEYS = {"aws_access_key_id": "iat-test", "aws_secret_access_key": "iat-test-secret"}


def independent(endpoint: str, **keys):
    import boto3

    session = boto3.session.Session(region_name="us-east-1", **(keys or TEST_KEYS))
    return session.client("s3", endpoint_url=endpoint)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_files(root: Path, n: int, folder: str = "results", seed: int = 0) -> dict[str, str]:
    """n small files of distinct bytes under root/folder; returns {relative path: sha256}."""
    out = {}
    for i in range(n):
        rel = f"{folder}/g{i % 4}/file-{i}.txt"
        data = f"{seed}:{i}:".encode() * (1 + i % 7) + os.urandom(16)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        out[rel] = sha256(data)
    return out


def remote_objects(s3, bucket: str, prefix: str) -> dict[str, dict]:
    """Every object under prefix, by path relative to it: size, ETag, and its metadata sha256 and S3 checksum
    (one HEAD each, through the independent client)."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", ()):
            head = s3.head_object(Bucket=bucket, Key=o["Key"], ChecksumMode="ENABLED")
            out[o["Key"][len(prefix) + 1:]] = {"size": o["Size"], "etag": o["ETag"].strip('"'),
                                               "sha256": head["Metadata"].get("sha256"),
                                               "checksum": head.get("ChecksumSHA256")}
    return out


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
