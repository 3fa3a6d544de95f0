"""The App container, built once per sidecar (or per test): settings, registry, event bus, databases, services.

Nothing here is a module-level singleton, so tests build as many Apps as they like. Databases open lazily: the
stdio transport answers its first ping before peewee is even imported.
"""

from __future__ import annotations

import os
import secrets
import threading
from typing import TYPE_CHECKING

from iat import __version__
from iat.events import EventBus
from iat.logs import Redactor
from iat.registry import load_commands
from iat.settings import Settings

if TYPE_CHECKING:
    from iat.copilot.executor import Agent
    from iat.db.store import Store
    from iat.ledger.ledger import Ledger
    from iat.models.store import ModelStore
    from iat.pipeline.runner import Runner
    from iat.plugins import LazyRegistry
    from iat.projects.directory import ProjectDirectory
    from iat.secrets.vault import Vault
    from iat.studio.notify import StudioBridge


class App:
    def __init__(self, settings: Settings, *, token: str | None = None):
        self.settings = settings
        self.registry = load_commands()
        self.events = EventBus()
        # Masks this App's secrets (its token, API keys while a connector uses them) in every log line.
        self.redactor = Redactor()
        # Per-start secret for the socket and HTTP transports; stdio needs none (its parent owns the pipe).
        self.token = token or secrets.token_urlsafe(32)
        self.redactor.add(self.token)
        if settings.secrets_passphrase:
            self.redactor.add(settings.secrets_passphrase)
        if settings.studio_database_url:  # its password, should a driver's message quote the URL
            from urllib.parse import unquote, urlparse

            password = urlparse(settings.studio_database_url).password
            if password:
                self.redactor.add(unquote(password))
                self.redactor.add(password)
            self.events.on_subscribe = lambda: self.studio_bridge  # other workstations' events, once a client listens
        self.started_transports: dict[str, dict] = {}
        self.stopping = threading.Event()  # set when shutdown begins: transports admit no new calls
        self.shutdown_requested = threading.Event()  # set by system.shutdown and signals: the runner stops
        self._lock = threading.Lock()
        self._app_store: Store | None = None
        self._projects: ProjectDirectory | None = None
        self._runner: Runner | None = None
        self._agent: Agent | None = None
        self._providers: LazyRegistry | None = None
        self._engines: LazyRegistry | None = None
        self._vault: Vault | None = None
        self._ledger: Ledger | None = None
        self._models: ModelStore | None = None
        self._studio_bridge: StudioBridge | None = None
        self._bridge_lock = threading.Lock()  # not self._lock: a service made under it may subscribe to events
        self._bridge_closed = False

    # --- databases and services, opened on first use ---

    @property
    def app_store(self) -> Store:
        with self._lock:
            if self._app_store is None:
                from iat.db.store import Store
                from iat.users.service import ensure_local_user

                self.settings.home.mkdir(parents=True, exist_ok=True)
                store = Store.open_sqlite(self.settings.home / "app.db", "app")
                store.write(ensure_local_user)
                self._app_store = store
            return self._app_store

    @property
    def projects(self) -> ProjectDirectory:
        with self._lock:
            if self._projects is None:
                from iat.projects.directory import ProjectDirectory

                self._projects = ProjectDirectory(self)
            return self._projects

    @property
    def providers(self) -> LazyRegistry:
        """Generation providers by code (preview, later openai, comfyui, a1111), each built on first use."""
        with self._lock:
            if self._providers is None:
                from iat.plugins import LazyRegistry
                from iat.providers import default_providers

                self._providers = LazyRegistry("provider", default_providers())
            return self._providers

    @property
    def engines(self) -> LazyRegistry:
        """Image engines by code (key, lanczos, later rembg, removebg, photoroom), each built on first use."""
        with self._lock:
            if self._engines is None:
                from iat.engines import default_engines
                from iat.plugins import LazyRegistry

                self._engines = LazyRegistry("engine", default_engines())
            return self._engines

    @property
    def vault(self) -> Vault:
        """Encrypts and decrypts project secrets; its key in the OS keyring, or from the passphrase setting."""
        with self._lock:
            if self._vault is None:
                from iat.secrets.vault import Vault

                self._vault = Vault(self.settings.secrets_passphrase)
            return self._vault

    @property
    def ledger(self) -> Ledger:
        """Every outbound provider call goes through it: retries, limits, budget, attempts and costs recorded."""
        with self._lock:
            if self._ledger is None:
                from iat.ledger.ledger import Ledger

                self._ledger = Ledger(self)
            return self._ledger

    @property
    def models(self) -> ModelStore:
        """The ONNX models folders and the inference sessions shared by every engine."""
        with self._lock:
            if self._models is None:
                from iat.models.store import open_store

                self._models = open_store(self.settings)
            return self._models

    @property
    def runner(self) -> Runner:
        """The pipeline runner: its own threads, apart from the request workers."""
        with self._lock:
            if self._runner is None:
                from iat.pipeline.runner import Runner

                self._runner = Runner(self, threads=self.settings.runner_threads)
                from iat.sync.s3 import subscribe as mirror_runs  # settings_json.s3_sync_after_run

                mirror_runs(self)
            return self._runner

    @property
    def agent(self) -> Agent:
        """The agent that carries out copilot instructions (built in, or an external agent API): its own threads."""
        with self._lock:
            if self._agent is None:
                from iat.copilot.executor import Agent

                self._agent = Agent(self)
            return self._agent

    @property
    def studio_bridge(self) -> StudioBridge | None:
        """Studio projects' events to and from other workstations (LISTEN/NOTIFY); None without a studio database.
        Started on first use: when a client subscribes to events or a studio project opens."""
        if not self.settings.studio_database_url:
            return None
        with self._bridge_lock:
            if self._bridge_closed:
                return None
            if self._studio_bridge is None:
                from iat.studio.notify import StudioBridge

                self._studio_bridge = StudioBridge(self, self.settings.studio_database_url)
            bridge = self._studio_bridge
        bridge.start()
        return bridge

    def cancel_runs(self, slug: str) -> None:
        """Stops the project's runs in this process, if any (before the project is deleted)."""
        with self._lock:
            runner = self._runner
        if runner is not None:
            runner.cancel_project(slug)

    def current_user(self) -> dict:
        """The acting user: the single seeded `local` user until authentication lands (SPEC 3.1)."""
        from iat.users.service import get_user

        return self.app_store.read(get_user, "local")

    def info(self) -> dict:
        from iat.db.migrations import latest_version

        return {
            "version": __version__,
            "schema_version": {"app": latest_version("app"), "project": latest_version("project")},
            "pid": os.getpid(),
            "home": str(self.settings.home),
        }

    def close(self) -> None:
        """Closes every database after queued writes finish. Call once the transports stopped taking calls."""
        with self._lock:
            projects, self._projects = self._projects, None
            store, self._app_store = self._app_store, None
            runner, self._runner = self._runner, None
            agent, self._agent = self._agent, None
        with self._bridge_lock:
            bridge, self._studio_bridge = self._studio_bridge, None
            self._bridge_closed = True
        if agent is not None:  # first: it follows runs and writes its instructions' ends
            agent.close()
        if runner is not None:
            runner.close()
        self.events.close()
        if bridge is not None:  # after the bus delivered its last events to it
            bridge.close()
        if projects is not None:
            projects.close_all()
        if store is not None:
            store.close(timeout=0.5)
