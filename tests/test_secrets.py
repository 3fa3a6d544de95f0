"""Encrypted provider secrets (iat.secrets): AES-256-GCM under a master key in the real OS keyring (a private
gnome-keyring on a private session bus: scripts/lib/with-keyring, which scripts/test runs pytest inside), or derived
from a passphrase. Outside such a session the keyring tests skip, or fail in CI (IAT_REQUIRE_REAL_PARTS=1)."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest

from iat.app import App
from iat.errors import IATError
from iat.logs import setup_logging
from iat.secrets import repo as secrets_repo
from iat.secrets.vault import SERVICE, SecretsUnavailable, usable_keyring
from iat.settings import Settings
from tests.support import Client, missing_real_part

VALUE = "sk-test-Zq8v3YpL0wR7nKd2xT5bHm9cJ4uE6aG1"
OTHER = "sk-other-Pp4mN8sQ2vL6zX0cB3nM7kJ1hG5fD9e"


@pytest.fixture
def real_keyring():
    try:
        backend = usable_keyring()
        backend.set_password(SERVICE, "iat-probe", "x")
        backend.delete_password(SERVICE, "iat-probe")
    except Exception as exc:
        missing_real_part(f"a usable OS keyring (Secret Service): {exc}")
    return backend


def _everywhere(home: Path) -> bytes:
    """Every byte under the data home: project.db and its -wal/-shm, app.db, logs."""
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def _log_through_the_app(app, home: Path, message: str) -> None:
    """Logs one line the way the serving sidecar does (its file handler, through the App's redactor)."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    setup_logging("INFO", home / "logs", app.redactor)
    try:
        logging.getLogger("iat.test").info(message)
    finally:
        for handler in list(root.handlers):
            handler.close()
            root.removeHandler(handler)
        root.setLevel(saved[0])
        for handler in saved[1]:
            root.addHandler(handler)


def _ciphertexts(root: Path) -> set[str]:
    db = sqlite3.connect(root / "project.db")
    try:
        return {r[0] for r in db.execute("SELECT secret_ciphertext FROM project_api_secrets")}
    finally:
        db.close()


def _set(client, name="api_key", value=VALUE, provider="openai"):
    return client.call("secrets.set", slug="alpha", provider_code=provider, secret_name=name, value=value)


def test_a_stored_secret_is_nowhere_in_plaintext_and_decrypts_after_a_restart(real_keyring, home, project, caplog):
    caplog.set_level(logging.DEBUG)
    app = App(Settings.from_env({}, home=home))
    client = Client(app)
    responses = [_set(client), _set(client, "org", OTHER),
                 client.call("secrets.list", slug="alpha"), client.call("secrets.list", slug="alpha",
                                                                        provider_code="openai"),
                 client.call("audit.list", slug="alpha")]
    _log_through_the_app(app, home, f"a connector logs its key {VALUE}")
    assert {e["event_code"] for e in responses[4]["items"]} >= {"secret.created"}
    listed = responses[2]["items"]
    assert [(s["provider_code"], s["secret_name"]) for s in listed] == [("openai", "api_key"), ("openai", "org")]
    assert all(s["kms_key_ref"].startswith("keyring:") for s in listed)
    assert all(set(s) == {"id", "provider_code", "secret_name", "kms_key_ref", "created_at", "updated_at"}
               for s in listed)
    for secret in (VALUE, OTHER):
        assert secret not in json.dumps(responses, default=str)
        assert secret.encode() not in _everywhere(home)  # WAL not checkpointed yet: the -wal file is read too
        assert secret not in caplog.text
    assert "[redacted]" in (home / "logs" / "sidecar.log").read_text()
    app.close()
    assert VALUE.encode() not in _everywhere(home)

    again = App(Settings.from_env({}, home=home))  # a restart: a new App on the same home
    try:
        handle = again.projects.open("alpha")
        assert secrets_repo.reveal(again, handle, "openai", "api_key") == VALUE
        assert secrets_repo.reveal(again, handle, "openai", "org") == OTHER
        assert again.redactor.scrub(f"Authorization: Bearer {VALUE}") == "Authorization: Bearer [redacted]"
    finally:
        again.close()


def test_a_ciphertext_moved_to_another_row_does_not_decrypt(real_keyring, home, app, client, project):
    _set(client)
    _set(client, "org", OTHER)
    handle = app.projects.open("alpha")
    app.close()
    with sqlite3.connect(handle.root / "project.db") as db:
        db.execute("UPDATE project_api_secrets SET secret_ciphertext = (SELECT secret_ciphertext FROM "
                   "project_api_secrets WHERE secret_name = 'api_key') WHERE secret_name = 'org'")
    db.close()
    again = App(Settings.from_env({}, home=home))
    try:
        handle = again.projects.open("alpha")
        assert secrets_repo.reveal(again, handle, "openai", "api_key") == VALUE
        with pytest.raises(IATError) as info:
            secrets_repo.reveal(again, handle, "openai", "org")
        assert info.value.name == "secret_undecryptable"
        assert VALUE not in json.dumps(info.value.to_object())
    finally:
        again.close()


def test_rotate_key_reencrypts_everything_and_retires_the_old_key(real_keyring, app, client, project):
    _set(client)
    _set(client, "token", OTHER, provider="comfyui")
    old = {s["kms_key_ref"] for s in client.call("secrets.list", slug="alpha")["items"]}
    assert len(old) == 1
    handle = app.projects.open("alpha")
    before = _ciphertexts(handle.root)
    rotated = client.call("secrets.rotate_key", slug="alpha")
    assert rotated["secrets"] == 2 and rotated["kms_key_ref"] not in old
    after = client.call("secrets.list", slug="alpha")["items"]
    assert {s["kms_key_ref"] for s in after} == {rotated["kms_key_ref"]}
    assert secrets_repo.reveal(app, handle, "openai", "api_key") == VALUE
    assert secrets_repo.reveal(app, handle, "comfyui", "token") == OTHER
    (old_ref,) = old
    assert real_keyring.get_password(SERVICE, old_ref) is None  # retired after the commit
    assert not before & _ciphertexts(handle.root)  # every ciphertext rewritten


def test_replace_and_delete(real_keyring, app, client, project):
    first = _set(client)
    second = _set(client, value=OTHER)
    assert second["id"] == first["id"]
    handle = app.projects.open("alpha")
    assert secrets_repo.reveal(app, handle, "openai", "api_key") == OTHER
    deleted = client.call("secrets.delete", slug="alpha", provider_code="openai", secret_name="api_key")
    assert deleted["secret_name"] == "api_key"
    assert client.call("secrets.list", slug="alpha")["items"] == []
    assert real_keyring.get_password(SERVICE, first["kms_key_ref"]) is None  # no secret uses it any more
    assert client.error("secrets.delete", slug="alpha", provider_code="openai", secret_name="api_key").name \
        == "not_found"


def test_no_usable_keyring_fails_clearly_and_writes_nothing(app, client, project, home):
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())  # what keyring gives when no backend is usable
    try:
        error = client.error("secrets.set", slug="alpha", provider_code="openai", secret_name="api_key",
                             value=VALUE)
    finally:
        keyring.set_keyring(previous)
    assert isinstance(error, SecretsUnavailable) and error.name == "secrets_unavailable"
    assert "IAT_SECRETS_PASSPHRASE" in error.message and "Secret Service" in error.message
    assert VALUE not in json.dumps(error.to_object())
    assert client.call("secrets.list", slug="alpha")["items"] == []
    assert VALUE.encode() not in _everywhere(home)


def test_passphrase_mode_is_used_only_when_set(tmp_path):
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())  # passphrase mode needs no keyring at all
    try:
        home = tmp_path / "home"
        app = App(Settings.from_env({"IAT_SECRETS_PASSPHRASE": "correct horse battery staple"}, home=home))
        client = Client(app)
        client.call("projects.create", slug="alpha", name="Alpha")
        row = _set(client)
        assert row["kms_key_ref"].startswith("scrypt:")
        app.close()
        assert VALUE.encode() not in _everywhere(home)

        again = App(Settings.from_env({"IAT_SECRETS_PASSPHRASE": "correct horse battery staple"}, home=home))
        assert secrets_repo.reveal(again, again.projects.open("alpha"), "openai", "api_key") == VALUE
        again.close()

        wrong = App(Settings.from_env({"IAT_SECRETS_PASSPHRASE": "another passphrase"}, home=home))
        with pytest.raises(IATError) as info:
            secrets_repo.reveal(wrong, wrong.projects.open("alpha"), "openai", "api_key")
        assert info.value.name == "secret_undecryptable"
        wrong.close()

        unset = App(Settings.from_env({}, home=home))  # no passphrase: keyring mode, which is refused here
        assert Client(unset).error("secrets.set", slug="alpha", provider_code="openai", secret_name="b",
                                   value=OTHER).name == "secrets_unavailable"
        unset.close()
    finally:
        keyring.set_keyring(previous)


@pytest.mark.parametrize("value", [VALUE * 500, 12345, ["sk", VALUE], {"v": VALUE}, ""])
def test_a_rejected_value_never_appears_in_the_error(client, project, value):
    error = client.error("secrets.set", slug="alpha", provider_code="openai", secret_name="api_key", value=value)
    assert error.name == "invalid_params"
    text = json.dumps(error.to_object())
    assert VALUE[:20] not in text and "12345" not in text


def test_other_invalid_fields_do_not_echo_the_value(client, project):
    error = client.error("secrets.set", slug="alpha", provider_code="Not Valid", secret_name="a b", value=VALUE)
    assert error.name == "invalid_params" and VALUE not in json.dumps(error.to_object())
    missing = client.error("secrets.set", slug="nope", provider_code="openai", secret_name="x", value=VALUE)
    assert missing.name == "not_found" and VALUE not in json.dumps(missing.to_object())
