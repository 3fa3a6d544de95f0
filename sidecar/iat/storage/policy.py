"""A project's storage policy (SPEC 2.4, 5.1 project_storage): local folder first, optional S3 mirror.

Credentials never live here: an S3 profile name refers to the OS's AWS configuration, and keys go through the
encrypted secrets store.

The value formats are pydantic types (used by storage.set's params, so the OpenAPI document states them and a
request breaking one is invalid_params); `problems()` checks a whole policy, as stored after a change.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from iat.errors import InvalidParams

# 3-63 lowercase letters, digits, dots and hyphens; a letter or digit first and last; no "..". Written without
# look-around so that every JSON Schema tool can read it; the "xn--" prefix S3 reserves is refused apart.
BUCKET_PATTERN = r"^[a-z0-9](?:\.?[a-z0-9-])*\.?[a-z0-9]$"
_RESERVED_BUCKET_PREFIX = "xn--"
# A relative key prefix: no leading "/", no empty segment ("//"), no ".." segment.
_SEGMENT = r"(?:[^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+|\.)"
PREFIX_PATTERN = rf"^(?:{_SEGMENT}/)*{_SEGMENT}?$"
REGION_PATTERN = r"^[a-z0-9-]{2,32}$"
# http(s), a host name or [IPv6 address], an optional port, then printable ASCII (no space; "\s" means other things
# in ECMAScript, Python and Rust regexes); no user:password@.
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_H16 = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join([rf"(?:{_H16}:){{7}}{_H16}", rf"(?:{_H16}:){{1,7}}:", rf"(?:{_H16}:){{1,6}}:{_H16}",
                  *(rf"(?:{_H16}:){{1,{n}}}(?::{_H16}){{1,{7 - n}}}" for n in range(5, 0, -1)),
                  rf":(?:(?::{_H16}){{1,7}}|:)"])
ENDPOINT_PATTERN = (rf"^https?://(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[(?:{_IPV6})\])(?::{_PORT})?"
                    r"(?:[/?#][!-~]*)?$")


def _not_reserved(bucket: str) -> str:
    if bucket.startswith(_RESERVED_BUCKET_PREFIX):
        raise ValueError(f"an S3 bucket name cannot start with {_RESERVED_BUCKET_PREFIX!r}")
    return bucket


S3Bucket = Annotated[str, StringConstraints(min_length=3, max_length=63, pattern=BUCKET_PATTERN),
                     AfterValidator(_not_reserved),
                     Field(description="S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens",
                           json_schema_extra={"not": {"pattern": f"^{_RESERVED_BUCKET_PREFIX}"}})]
S3Prefix = Annotated[str, StringConstraints(max_length=512, pattern=PREFIX_PATTERN),
                     Field(description="Key prefix: relative, without '//' or '..'")]
S3Region = Annotated[str, StringConstraints(max_length=32, pattern=REGION_PATTERN)]
S3EndpointUrl = Annotated[str, StringConstraints(max_length=2048, pattern=ENDPOINT_PATTERN),
                          Field(description="http(s) URL of an S3-compatible service, without credentials")]

_FORMATS = {
    "s3_bucket": (re.compile(BUCKET_PATTERN), "not a valid S3 bucket name (3-63 lowercase letters, digits, dots, "
                                              "hyphens)"),
    "s3_prefix": (re.compile(PREFIX_PATTERN), "must be a relative key prefix without '//' or '..'"),
    "s3_region": (re.compile(REGION_PATTERN), "not a valid region name"),
    "s3_endpoint_url": (re.compile(ENDPOINT_PATTERN), "must be an http(s) URL without credentials"),
}


def problems(policy: dict) -> list[dict]:
    """What makes a whole policy unusable (empty when it is usable), in pydantic's error shape."""
    found: list[dict] = []
    for field, (pattern, msg) in _FORMATS.items():
        value = policy.get(field)
        if value is not None and not pattern.fullmatch(value):
            found.append({"loc": [field], "msg": msg, "type": "value_error"})
    bucket = policy.get("s3_bucket")
    if bucket is not None and not 3 <= len(bucket) <= 63:
        found.append({"loc": ["s3_bucket"], "msg": "must be 3-63 characters long", "type": "value_error"})
    if bucket is not None and bucket.startswith(_RESERVED_BUCKET_PREFIX):
        found.append({"loc": ["s3_bucket"], "msg": f"cannot start with {_RESERVED_BUCKET_PREFIX!r}",
                      "type": "value_error"})
    if policy.get("s3_enabled") and not bucket:
        found.append({"loc": ["s3_bucket"], "msg": "required when s3_enabled is true", "type": "value_error"})
    return found


def validate(policy: dict) -> None:
    """Raises InvalidParams unless the policy is usable."""
    found = problems(policy)
    if found:
        raise InvalidParams(f"invalid storage policy: {found[0]['loc'][0]}: {found[0]['msg']}",
                            details={"errors": found})
