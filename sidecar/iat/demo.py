"""`iat-sidecar demo`: the main job, offline, on the embedded defaults.

Until the pipeline lands it shows the sidecar core end to end: a project created in its own folder and database,
its storage policy, its audit trail, all through the same JSON-RPC dispatcher the transports use.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def run_demo(home: str | None) -> int:
    from iat.app import App
    from iat.errors import IATError
    from iat.context import Session
    from iat.rpc.protocol import Dispatcher
    from iat.settings import Settings

    with tempfile.TemporaryDirectory(prefix="iat-demo-") as tmp:
        settings = Settings.from_env(home=Path(home or tmp).resolve())
        app = App(settings)
        dispatcher = Dispatcher(app)
        session = Session("demo", authenticated=True)

        def call(method: str, **params):
            result = dispatcher.call(method, params, session)
            print(f"-> {method} {json.dumps(params)}")
            print("   " + json.dumps(result, indent=2).replace("\n", "\n   "))
            return result

        try:
            print(f"IAT Toolkit demo; data in {settings.home}\n")
            call("system.info")
            slug = "demo-comic"
            if any(p["slug"] == slug for p in call("projects.list")["items"]):
                call("projects.delete", slug=slug, confirm=True, purge=True)
            project = call("projects.create", slug=slug, name="Demo comic",
                           description="A short comic in one hand, with stable characters.",
                           settings_json={"candidates_per_shot": 4, "stages": ["style_lock", "light_time",
                                                                              "weather_effects"]})
            call("storage.set", slug=slug, s3_enabled=False, s3_prefix=f"projects/{slug}")
            call("projects.get", slug=slug)
            call("audit.list", slug=slug)
            try:
                dispatcher.call("projects.delete", {"slug": slug}, session)
            except IATError as exc:
                print(f"-> projects.delete without confirm is refused: {exc.name}: {exc.message}")
            print(f"\nproject folder: {project['root_dir']}")
            for path in sorted(Path(project["root_dir"]).rglob("*")):
                print(f"  {path.relative_to(project['root_dir'])}")
            return 0
        finally:
            app.close()
