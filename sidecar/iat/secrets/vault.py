"""AES-256-GCM encryption of project secrets under a master key kept in the OS keyring (or derived from a
passphrase).

Stored text, version 1:  `v1:<base64(nonce || ciphertext+tag)>` with a fresh 96-bit nonce per write. The row's
`kms_key_ref` names the key:
  - `keyring:<uuid>`: 32 random bytes, base64, in the OS keyring under service "iat-toolkit", username = the ref;
  - `scrypt:<base64 salt>`: derived with scrypt from IAT_SECRETS_PASSPHRASE and that salt (passphrase mode).
The associated data is the JSON of [version, project_id, provider_code, secret_name, kms_key_ref], so a ciphertext
copied onto another row (or relabelled with another key) fails authentication instead of decrypting.

A keyring backend that does not protect the key (keyring's fail and null backends, keyrings.alt's file backends)
is refused: storing then fails with SecretsUnavailable; there is never a plaintext fallback.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import uuid

from iat.errors import IATError

SERVICE = "iat-toolkit"
VERSION = "v1"
_NONCE_BYTES = 12
_KEY_BYTES = 32
# scrypt cost: about 32 MiB and a fraction of a second once per salt (derived keys are cached per process).
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1

_HOWTO = ("install and unlock a Secret Service (e.g. gnome-keyring or KWallet) on Linux, or use the macOS Keychain / "
          "Windows Credential Locker; or set IAT_SECRETS_PASSPHRASE to derive the key from a passphrase")


class SecretsUnavailable(IATError):
    """No safe place for the master key: no usable keyring backend and no passphrase. REST answers 409: the
    installation's state (no keyring) conflicts with storing a secret until the user fixes it, not a server fault."""

    code, name, http_status = -32022, "secrets_unavailable", 409


class SecretUndecryptable(IATError):
    """A stored ciphertext does not authenticate (moved to another row, tampered, or its key is gone)."""

    code, name, http_status = -32023, "secret_undecryptable", 409


def _import_platform_backends() -> None:
    # Imported explicitly so that a frozen build carries them and they register even without entry-point metadata.
    try:
        if sys.platform == "darwin":
            import keyring.backends.macOS  # noqa: F401
        elif os.name == "nt":
            import keyring.backends.Windows  # noqa: F401
        else:
            import keyring.backends.SecretService  # noqa: F401
    except ImportError:  # pragma: no cover - the backend's own dependency missing: the check below refuses
        pass


def _refused(backend) -> bool:
    import keyring.backends.fail
    import keyring.backends.null

    if isinstance(backend, (keyring.backends.fail.Keyring, keyring.backends.null.Keyring)):
        return True
    if type(backend).__module__.startswith("keyrings.alt"):
        return True  # plaintext or file-encrypted files next to the data: not a keyring
    inner = getattr(backend, "backends", None)
    if inner is not None:  # the chainer: usable only through a usable member
        return not inner or all(_refused(b) for b in inner)
    return False


def usable_keyring():
    """The keyring backend, or SecretsUnavailable saying what to do."""
    _import_platform_backends()
    import keyring

    backend = keyring.get_keyring()
    if _refused(backend):
        raise SecretsUnavailable(f"no usable OS keyring for the secrets' master key ({type(backend).__module__}."
                                 f"{type(backend).__name__}): {_HOWTO}", details={"backend": type(backend).__name__})
    return backend


class Vault:
    """Encrypts and decrypts secret values; owns the master keys' lifecycle (create, fetch, retire)."""

    def __init__(self, passphrase: str | None):
        self._passphrase = passphrase or None
        self._derived: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def passphrase_mode(self) -> bool:
        return self._passphrase is not None

    # --- keys ---

    def new_key_ref(self) -> str:
        """A new key (created now) in the current mode: scrypt when a passphrase is set, else the keyring."""
        if self._passphrase is not None:
            return "scrypt:" + base64.b64encode(os.urandom(16)).decode()
        backend = usable_keyring()
        ref = f"keyring:{uuid.uuid4()}"
        try:
            backend.set_password(SERVICE, ref, base64.b64encode(os.urandom(_KEY_BYTES)).decode())
        except Exception as exc:  # locked, dismissed prompt, daemon gone
            raise SecretsUnavailable(f"the OS keyring refused to store the master key ({type(exc).__name__}): "
                                     f"{_HOWTO}") from None
        return ref

    def usable_ref(self, ref: str | None) -> bool:
        """Whether new writes may keep using `ref` (it belongs to the current mode)."""
        return bool(ref) and ref.startswith("scrypt:" if self._passphrase is not None else "keyring:")

    def _key(self, ref: str) -> bytes:
        if ref.startswith("scrypt:"):
            if self._passphrase is None:
                raise SecretsUnavailable("this secret was stored in passphrase mode: set IAT_SECRETS_PASSPHRASE")
            with self._lock:
                key = self._derived.get(ref)
            if key is None:
                from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

                salt = base64.b64decode(ref.split(":", 1)[1])
                key = Scrypt(salt=salt, length=_KEY_BYTES, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P).derive(
                    self._passphrase.encode())
                with self._lock:
                    self._derived[ref] = key
            return key
        if ref.startswith("keyring:"):
            backend = usable_keyring()
            try:
                stored = backend.get_password(SERVICE, ref)
            except Exception as exc:
                raise SecretsUnavailable(f"the OS keyring cannot be read ({type(exc).__name__}): {_HOWTO}") from None
            if stored is None:
                raise SecretUndecryptable(f"master key {ref} is not in the OS keyring", details={"kms_key_ref": ref})
            return base64.b64decode(stored)
        raise SecretUndecryptable(f"unknown key reference {ref!r}", details={"kms_key_ref": ref})

    def retire(self, ref: str) -> None:
        """Removes a keyring key no row uses any more (best effort: a leftover key protects nothing)."""
        if ref.startswith("keyring:"):
            try:
                usable_keyring().delete_password(SERVICE, ref)
            except Exception:
                pass
        with self._lock:
            self._derived.pop(ref, None)

    # --- values ---

    @staticmethod
    def _aad(project_id: str, provider_code: str, secret_name: str, ref: str) -> bytes:
        return json.dumps([VERSION, project_id, provider_code, secret_name, ref]).encode()

    def encrypt(self, value: str, ref: str, project_id: str, provider_code: str, secret_name: str) -> str:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self._key(ref)).encrypt(nonce, value.encode(),
                                                self._aad(project_id, provider_code, secret_name, ref))
        return f"{VERSION}:" + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, stored: str, ref: str, project_id: str, provider_code: str, secret_name: str) -> str:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        version, _, body = stored.partition(":")
        where = {"provider_code": provider_code, "secret_name": secret_name}
        if version != VERSION:
            raise SecretUndecryptable(f"unknown secret format {version!r}", details=where)
        try:
            raw = base64.b64decode(body, validate=True)
            plain = AESGCM(self._key(ref)).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                                   self._aad(project_id, provider_code, secret_name, ref))
        except (InvalidTag, ValueError):
            raise SecretUndecryptable(f"secret {provider_code}/{secret_name} does not decrypt (moved, altered or "
                                      f"its key changed)", details=where) from None
        return plain.decode()
