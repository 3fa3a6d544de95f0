"""Credentials (an AWS profile file, the project's secrets, the default chain) checked by a moto server that
enforces signatures, and the typed errors of a sync that cannot run: nothing transferred, recorded or audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync_support import free_port, independent, remote_objects, write_files


@pytest.fixture
def app(home: Path):
    """Secrets in passphrase mode: these tests need no OS keyring."""
    from iat.app import App
    from iat.settings import Settings

    application = App(Settings.from_env({"IAT_SECRETS_PASSPHRASE": "sync tests only"}, home=home))
    yield application
    application.close()


def _synced_audits(client, slug="alpha"):
    return [e for e in client.call("audit.list", slug=slug, limit=500)["items"] if e["event_code"] == "storage.synced"]


def _state_rows(client, slug="alpha"):
    from iat.sync import state

    handle = client.app.projects.open(slug)
    return handle.store.read(state.known, handle.id)


def _policy(client, endpoint, bucket, **more):
    client.call("storage.set", slug="alpha", s3_enabled=True, s3_bucket=bucket, s3_prefix="p",
                s3_region="us-east-1", s3_endpoint_url=endpoint, **more)


def test_s3_disabled_is_a_conflict(client, project):
    err = client.error("storage.sync", slug="alpha")
    assert err.name == "conflict" and "not enabled" in err.message


@pytest.mark.parametrize("case", ["bucket_missing", "endpoint_down"])
def test_a_sync_that_cannot_reach_its_bucket_is_typed_and_changes_nothing(client, project, s3_endpoint, case):
    root = client.app.projects.open("alpha").root
    write_files(root, 3)
    endpoint = s3_endpoint if case == "bucket_missing" else f"http://127.0.0.1:{free_port()}"
    _policy(client, endpoint, "no-such-bucket-here")
    audits = _synced_audits(client)
    err = client.error("storage.sync", slug="alpha")
    assert err.name == {"bucket_missing": "not_found", "endpoint_down": "provider_unavailable"}[case]
    assert err.details["bucket"] == "no-such-bucket-here"
    assert _state_rows(client) == {} and _synced_audits(client) == audits


def test_credentials_from_the_projects_secrets_and_wrong_ones_refused(client, project, auth_s3):
    root = client.app.projects.open("alpha").root
    files = write_files(root, 4)
    _policy(client, auth_s3.endpoint, auth_s3.bucket)
    # the default chain (the test env's fake keys) is refused by this server
    err = client.error("storage.sync", slug="alpha")
    assert err.name == "provider_auth_failed" and _state_rows(client) == {}

    client.call("secrets.set", slug="alpha", provider_code="s3", secret_name="aws_access_key_id",
                value=auth_s3.keys["aws_access_key_id"])
    partial = client.error("storage.sync", slug="alpha")
    assert partial.name == "conflict" and "aws_secret_access_key" in partial.message
    client.call("secrets.set", slug="alpha", provider_code="s3", secret_name="aws_secret_access_key",
                value="not-the-secret")
    wrong = client.error("storage.sync", slug="alpha")
    assert wrong.name == "provider_auth_failed" and "not-the-secret" not in str(wrong.to_object())
    client.call("secrets.set", slug="alpha", provider_code="s3", secret_name="aws_secret_access_key",
                value=auth_s3.keys["aws_secret_access_key"])
    out = client.call("storage.sync", slug="alpha")
    assert (out["uploaded"], out["credentials"]) == (4, "secrets")
    assert auth_s3.keys["aws_secret_access_key"] not in str(out)
    remote = remote_objects(independent(auth_s3.endpoint, **auth_s3.keys), auth_s3.bucket, "p")
    assert {k: v["sha256"] for k, v in remote.items()} == files
    audit = _synced_audits(client)[0]
    assert audit["payload_json"]["credentials"] == "secrets"
    assert auth_s3.keys["aws_secret_access_key"] not in str(audit)


def test_credentials_from_an_aws_profile(client, project, auth_s3, tmp_path: Path, monkeypatch):
    config, creds = tmp_path / "aws-config", tmp_path / "aws-credentials"
    config.write_text("[profile studio]\nregion = us-east-1\n")
    creds.write_text(f"[studio]\naws_access_key_id = {auth_s3.keys['aws_access_key_id']}\n"
                     f"aws_secret_access_key = {auth_s3.keys['aws_secret_access_key']}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    root = client.app.projects.open("alpha").root
    write_files(root, 3)
    _policy(client, auth_s3.endpoint, auth_s3.bucket, s3_profile="nobody")
    assert client.error("storage.sync", slug="alpha").name == "conflict"  # a profile this machine lacks
    client.call("storage.set", slug="alpha", s3_profile="studio")
    out = client.call("storage.sync", slug="alpha")
    assert (out["uploaded"], out["credentials"]) == (3, "profile")
