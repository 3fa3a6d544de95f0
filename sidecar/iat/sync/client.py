"""The boto3 S3 client of a project's storage policy, and S3 failures as IAT errors.

Credentials, first found wins: the policy's AWS profile (`s3_profile`, read from the OS's AWS config and
credentials files), else the project's secrets of provider `s3` (`aws_access_key_id` and `aws_secret_access_key`,
optional `aws_session_token`; decrypted at the call and masked in logs), else boto3's default chain (environment,
instance role ...). No credential ever reaches a result, an event, the audit trail or an error."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import weakref

from iat.errors import (Conflict, IATError, NotFound, ProviderAuthFailed, ProviderBadRequest, ProviderError,
                        ProviderTimeout, ProviderUnavailable)

PROVIDER = "s3"
KEY_ID, SECRET_KEY, SESSION_TOKEN = "aws_access_key_id", "aws_secret_access_key", "aws_session_token"
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
               "AllAccessDisabled", "AccountProblem", "InvalidClientTokenId", "UnrecognizedClientException",
               "403", "401", "Forbidden"}


def _secret_keys(app, handle) -> dict[str, str]:
    from iat.providers import accounts
    from iat.secrets import repo as secrets

    names = set(handle.store.read(accounts.secret_names, handle.id).get(PROVIDER, ()))
    if not names & {KEY_ID, SECRET_KEY}:
        return {}
    if not {KEY_ID, SECRET_KEY} <= names:
        raise Conflict(f"the project's {PROVIDER} secrets need both {KEY_ID} and {SECRET_KEY}",
                       details={"provider_code": PROVIDER, "stored": sorted(names)})
    keys = {n: secrets.reveal(app, handle, PROVIDER, n) for n in (KEY_ID, SECRET_KEY)}
    if SESSION_TOKEN in names:
        keys[SESSION_TOKEN] = secrets.reveal(app, handle, PROVIDER, SESSION_TOKEN)
    return keys


def credentials_source(handle, policy: dict) -> str:
    """Where the credentials come from (profile | secrets | default), for the audit trail."""
    if policy.get("s3_profile"):
        return "profile"
    from iat.providers import accounts

    names = set(handle.store.read(accounts.secret_names, handle.id).get(PROVIDER, ()))
    return "secrets" if {KEY_ID, SECRET_KEY} <= names else "default"


_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # app -> {what the client is made of: (t, it)}
_clients_lock = threading.Lock()
CLIENT_TTL_S = 300.0  # a profile's files or the environment may change: a client is made anew after this


def build(app, handle, policy: dict, *, max_connections: int = 16):
    """A boto3 S3 client for the policy (its own session: thread-safe for the transfer manager's threads). Kept
    for a while per App and what it is made of (a new session and client cost more than a sync with nothing to
    do); the cache key holds a digest of the credentials, never the credentials."""
    keys = {} if policy.get("s3_profile") else _secret_keys(app, handle)
    cache_key = (policy.get("s3_profile"), policy.get("s3_region"), policy.get("s3_endpoint_url"), max_connections,
                 hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest())
    now = time.monotonic()
    with _clients_lock:
        made = _clients.setdefault(app, {}).get(cache_key)
        if made is not None and now - made[0] < CLIENT_TTL_S:
            return made[1]
    client = _make(policy, keys, max_connections)
    with _clients_lock:
        _clients[app][cache_key] = (now, client)
    return client


def _make(policy: dict, keys: dict, max_connections: int):
    import boto3
    import botocore.config
    import botocore.exceptions

    profile = policy.get("s3_profile")
    try:
        if profile:
            session = boto3.session.Session(profile_name=profile, region_name=policy.get("s3_region"))
        else:
            session = boto3.session.Session(region_name=policy.get("s3_region"), **keys)
    except botocore.exceptions.ProfileNotFound:
        raise Conflict(f"the AWS profile {profile!r} of the storage policy is not configured on this machine",
                       details={"s3_profile": profile}) from None
    # A desktop sidecar is no EC2 instance nor container task: never probe the link-local metadata services.
    resolver = session._session.get_component("credential_provider")
    for method in ("iam-role", "container-role"):
        resolver.remove(method)
    endpoint = policy.get("s3_endpoint_url")
    config = botocore.config.Config(
        connect_timeout=5, read_timeout=60, retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=max_connections,
        # S3-compatible stores (MinIO, moto) are addressed by path; AWS picks virtual hosts itself.
        s3={"addressing_style": "path"} if endpoint else {},
        # We send the SHA-256 we already know instead of a CRC32 botocore would compute for every request.
        request_checksum_calculation="when_required", response_checksum_validation="when_required")
    try:
        client = session.client("s3", endpoint_url=endpoint, config=config)
    except botocore.exceptions.BotoCoreError as exc:
        raise translate(exc, policy) from None
    client.meta.events.register("before-parse.s3.ListObjectsV2", _fast_listing)
    return client


def _fast_listing(response_dict, customized_response_dict, **_):
    """Reads a listing page's objects (key, size, ETag) with ElementTree into `IatContents` and leaves botocore's
    generic parser only the page's envelope: on 1,000 objects the generic parse costs more than the request."""
    import xml.etree.ElementTree as ET
    from urllib.parse import unquote_plus

    if response_dict.get("status_code", 200) >= 300 or not response_dict.get("body"):
        return
    try:
        root = ET.fromstring(response_dict["body"])
    except ET.ParseError:
        return  # botocore's parser reports it
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    decode = unquote_plus if root.findtext(f"{ns}EncodingType") == "url" else (lambda v: v)
    found = root.findall(f"{ns}Contents")
    customized_response_dict["IatContents"] = [
        {"Key": decode(c.findtext(f"{ns}Key")), "Size": int(c.findtext(f"{ns}Size") or 0),
         "ETag": c.findtext(f"{ns}ETag") or ""} for c in found]
    for c in found:
        root.remove(c)
    response_dict["body"] = ET.tostring(root)


def translate(exc: BaseException, policy: dict, key: str | None = None) -> IATError:
    """An S3 or transport failure as the IAT error a client can act on (never with a credential in it)."""
    import botocore.exceptions as be

    details = {"provider_code": PROVIDER, "bucket": policy.get("s3_bucket"),
               "endpoint_url": policy.get("s3_endpoint_url")}
    if key is not None:
        details["key"] = key
    if isinstance(exc, IATError):
        return exc
    if isinstance(exc, be.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        details.update(s3_code=code, http_status=status)
        if code in ("NoSuchBucket",) or (code == "404" and key is None):
            return NotFound(f"the S3 bucket {policy.get('s3_bucket')!r} does not exist", details=details)
        if code in _AUTH_CODES or status in (401, 403):
            return ProviderAuthFailed(f"S3 refused the credentials or the access ({code})", details=details)
        if status is not None and status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            return ProviderUnavailable(f"S3 failed ({code or status})", details=details)
        return ProviderBadRequest(f"S3 refused the request ({code or status})", details=details)
    if isinstance(exc, (be.ConnectTimeoutError, be.ReadTimeoutError)):
        return ProviderTimeout("the S3 endpoint did not answer in time", details=details)
    if isinstance(exc, (be.EndpointConnectionError, be.ConnectionClosedError, be.ConnectionError)):
        return ProviderUnavailable("the S3 endpoint cannot be reached", details=details)
    if isinstance(exc, (be.NoCredentialsError, be.PartialCredentialsError)):
        return Conflict("no S3 credentials: set the policy's s3_profile, the project's s3 secrets "
                        f"({KEY_ID}, {SECRET_KEY}) or the AWS environment", details=details)
    if isinstance(exc, be.BotoCoreError):
        return ProviderError(f"S3 client error: {type(exc).__name__}", details=details)
    if isinstance(exc, OSError):
        return ProviderUnavailable(f"S3 transfer failed: {type(exc).__name__}", details=details)
    return ProviderError(f"S3 sync failed: {type(exc).__name__}", details=details)
