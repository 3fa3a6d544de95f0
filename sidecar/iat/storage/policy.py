"""A project's storage policy (SPEC 2.4, 5.1 project_storage): local folder first, optional S3 mirror.

Credentials never live here: an S3 profile name refers to the OS's AWS configuration, and keys go through the
encrypted secrets store.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

from iat.errors import InvalidParams

_BUCKET = re.compile(r"^(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$|^[a-z0-9-]{2,32}$")


def validate(policy: dict) -> None:
    """Raises InvalidParams unless the merged policy is usable."""
    problems: list[dict] = []

    def bad(field: str, msg: str) -> None:
        problems.append({"loc": [field], "msg": msg, "type": "value_error"})

    bucket = policy.get("s3_bucket")
    if bucket is not None and not _BUCKET.match(bucket):
        bad("s3_bucket", "not a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)")
    if policy.get("s3_enabled") and not bucket:
        bad("s3_bucket", "required when s3_enabled is true")
    prefix = policy.get("s3_prefix")
    if prefix is not None and (prefix.startswith("/") or "//" in prefix or ".." in prefix.split("/")):
        bad("s3_prefix", "must be a relative key prefix without '//' or '..'")
    region = policy.get("s3_region")
    if region is not None and not _REGION.match(region):
        bad("s3_region", "not a valid region name")
    endpoint = policy.get("s3_endpoint_url")
    if endpoint is not None:
        url = urlparse(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname or url.username or url.password:
            bad("s3_endpoint_url", "must be an http(s) URL without credentials")
    if problems:
        raise InvalidParams(f"invalid storage policy: {problems[0]['loc'][0]}: {problems[0]['msg']}",
                            details={"errors": problems})
