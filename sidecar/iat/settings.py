"""Runtime settings: from the environment, overridable per App (tests build as many Apps as they like)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

# The Tauri webview's origins on each platform; any other Origin header is refused.
TAURI_ORIGINS = ("tauri://localhost", "http://tauri.localhost", "https://tauri.localhost")


@dataclass(frozen=True)
class Settings:
    home: Path
    max_message_bytes: int = 16 * 1024 * 1024
    allowed_origins: tuple[str, ...] = TAURI_ORIGINS
    worker_threads: int = 8
    log_level: str = "INFO"
    # Messages a socket or websocket peer may leave unread before it is dropped (it stopped reading).
    peer_outbox_messages: int = 4096
    # Candidates the pipeline runner works on at once (its own threads, apart from worker_threads).
    runner_threads: int = 2
    # Passphrase mode of the secrets vault (iat.secrets.vault): the master key is derived from it with scrypt
    # instead of living in the OS keyring. Unset: the keyring only.
    secrets_passphrase: str | None = None
    # The user's models folder (IAT_MODELS_DIR); None: <home>/models.
    models_path: Path | None = None
    # Studio mode (IAT_STUDIO_DATABASE_URL): a shared PostgreSQL database where projects created with backend
    # "postgres" live, each in a schema of its own. It carries credentials: never logged or reported.
    studio_database_url: str | None = None
    # How long a runner's claim on a job lasts without renewal (IAT_CLAIM_LEASE_SECONDS): after it, another runner
    # (another workstation) takes the job over.
    claim_lease_seconds: float = 60.0
    # How often a sidecar looks for runs of its studio projects started elsewhere (IAT_STUDIO_POLL_SECONDS).
    studio_poll_seconds: float = 2.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if environ is None else environ
        home = env.get("IAT_HOME")
        if home:
            home_path = Path(home).expanduser()
        else:
            import platformdirs  # only when no IAT_HOME is given: it costs start-up time

            home_path = Path(platformdirs.user_data_dir("iat-toolkit", appauthor=False))
        settings = cls(home=home_path.resolve())
        if env.get("IAT_MAX_MESSAGE_BYTES"):
            settings = replace(settings, max_message_bytes=int(env["IAT_MAX_MESSAGE_BYTES"]))
        if env.get("IAT_ALLOWED_ORIGINS"):
            extra = tuple(o.strip() for o in env["IAT_ALLOWED_ORIGINS"].split(",") if o.strip())
            settings = replace(settings, allowed_origins=TAURI_ORIGINS + extra)
        if env.get("IAT_PEER_OUTBOX_MESSAGES"):
            settings = replace(settings, peer_outbox_messages=int(env["IAT_PEER_OUTBOX_MESSAGES"]))
        if env.get("IAT_RUNNER_THREADS"):
            settings = replace(settings, runner_threads=max(1, int(env["IAT_RUNNER_THREADS"])))
        if env.get("IAT_SECRETS_PASSPHRASE"):
            settings = replace(settings, secrets_passphrase=env["IAT_SECRETS_PASSPHRASE"])
        if env.get("IAT_MODELS_DIR"):
            settings = replace(settings, models_path=Path(env["IAT_MODELS_DIR"]).expanduser().resolve())
        if env.get("IAT_STUDIO_DATABASE_URL"):
            settings = replace(settings, studio_database_url=env["IAT_STUDIO_DATABASE_URL"])
        if env.get("IAT_CLAIM_LEASE_SECONDS"):
            settings = replace(settings, claim_lease_seconds=max(1.0, float(env["IAT_CLAIM_LEASE_SECONDS"])))
        if env.get("IAT_STUDIO_POLL_SECONDS"):
            settings = replace(settings, studio_poll_seconds=max(0.1, float(env["IAT_STUDIO_POLL_SECONDS"])))
        if env.get("IAT_LOG_LEVEL"):
            settings = replace(settings, log_level=env["IAT_LOG_LEVEL"].upper())
        return replace(settings, **overrides)

    @property
    def projects_dir(self) -> Path:
        return self.home / "projects"

    @property
    def trash_dir(self) -> Path:
        return self.home / "trash"

    @property
    def models_dir(self) -> Path:
        return self.models_path or self.home / "models"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def ready_file(self) -> Path:
        return self.home / "sidecar.json"
