"""`iat-sidecar demo`: the main job, offline, on the embedded defaults.

Makes a small comic from nothing: a project with a style guide and two characters, a shot list of six shots
(two of them cut-outs) with four candidates each through three stages, run by the same commands every client uses
(preview renderer, key background removal, colour correction, 2x upscale, QA guard, automatic choice), and
prints where each result and the contact sheet are.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

SLUG = "demo-comic"
CANDIDATES = 4

STYLE = {
    "name": "Harbour town, ink and flat colour",
    "description": "flat-colour comic panels, bold simple shapes, soft shading, one consistent line weight",
    "rules_json": {
        "palette": ["#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51", "#f1faee", "#a8dadc", "#1d3557"],
        "max_chroma": 0.2,
        "negative_prompt": "photo, blurry, extra limbs, text, watermark",
        "size": {"width": 768, "height": 512},
    },
}

CHARACTERS = [
    {"code": "mira", "name": "Mira", "bio": "A young harbour pilot who reads the weather.",
     "identity_constraints_json": {"appearance": "long hair in a braid, round glasses", "outfit": "red dress",
                                   "palette": ["#e76f51", "#264653"]}},
    {"code": "bolt", "name": "Bolt", "bio": "An old lighthouse keeper, tall and slow.",
     "identity_constraints_json": {"appearance": "tall, grey beard, top hat", "outfit": "teal coat, white scarf",
                                   "palette": ["#2a9d8f", "#f1faee"]}},
]

SHOTS = [
    {"job_key": "01-harbour", "scene": "Mira waves from the harbour at dawn, boats on the water",
     "characters": ["mira"], "time_of_day": "dawn", "weather": "fog"},
    {"job_key": "02-market", "scene": "Mira and Bolt meet at the market stalls", "characters": ["mira", "bolt"],
     "time_of_day": "day", "weather": "clear"},
    {"job_key": "03-storm", "scene": "Bolt climbs the lighthouse road as the storm comes", "characters": ["bolt"],
     "time_of_day": "dusk", "weather": "rain"},
    {"job_key": "04-night", "scene": "Mira and Bolt look at the sea from the lighthouse room",
     "characters": ["mira", "bolt"], "time_of_day": "night", "weather": "snow"},
    {"job_key": "05-mira-sheet", "scene": "Mira, full figure, for the character sheet", "characters": ["mira"],
     "time_of_day": "day", "weather": "clear", "cutout": True},
    {"job_key": "06-bolt-sheet", "scene": "Bolt, full figure, for the character sheet", "characters": ["bolt"],
     "time_of_day": "day", "weather": "clear", "cutout": True},
]


def run_demo(home: str | None, quick: bool = False) -> int:
    """The demo; `quick`: two shots (one a cut-out) of two candidates, for smoke tests of a build."""
    from iat.app import App
    from iat.errors import IATError
    from iat.pipeline.console import local_caller, start_and_follow
    from iat.settings import Settings

    keep = tempfile.mkdtemp(prefix="iat-demo-") if home is None else home
    settings = Settings.from_env(home=Path(keep).resolve())
    app = App(settings)
    call = local_caller(app)

    try:
        print(f"IAT Toolkit demo: a six-shot comic, offline. Data in {settings.home}\n")
        if any(p["slug"] == SLUG for p in call("projects.list")["items"]):
            call("projects.delete", slug=SLUG, confirm=True, purge=True)
        project = call("projects.create", slug=SLUG, name="Demo comic: The Harbour Light",
                       description="Six panels in one hand, with two stable characters.")
        guide = call("style_guides.create", slug=SLUG, **STYLE)
        for character in CHARACTERS:
            call("characters.create", slug=SLUG, **character)
        print(f"project   {project['root_dir']}")
        print(f"style     {guide['name']} (palette {', '.join(guide['rules_json']['palette'])})")
        print(f"cast      {', '.join(c['name'] for c in CHARACTERS)}")
        print(f"shots     {len(SHOTS)} x {CANDIDATES} candidates x 3 stages; "
              f"{sum(1 for s in SHOTS if s.get('cutout'))} cut-outs; preview renderer, key background removal, "
              "colour correction, 2x upscale, QA guard\n")
        shots, k = ([SHOTS[1], SHOTS[4]], 2) if quick else (SHOTS, CANDIDATES)
        return start_and_follow(app, call, {"slug": SLUG, "shots": shots, "candidates": k, "upscale_factor": 2,
                                            "seed": 2026})
    except IATError as exc:
        print(f"demo failed: {exc.name}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        app.close()
