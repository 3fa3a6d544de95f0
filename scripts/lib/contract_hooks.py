"""Schemathesis hooks for scripts/contract (loaded through SCHEMATHESIS_HOOKS).

- The API accepts any absolute `local_project_root`, so a fuzzer would create project folders all over the
  machine. Every absolute root is moved under the run's scratch folder (IAT_CONTRACT_ROOTS) before the request goes
  out: it stays an absolute path the API must accept, and the run leaves nothing behind.
- Every response is counted by status, for the summary scripts/contract prints (IAT_CONTRACT_STATS).
- A shot list (runs.start, runs.plan) has rules that JSON Schema cannot state and the operations' descriptions do:
  job keys unique within the list, character codes naming characters the project has, `shots_csv` holding CSV of
  the documented columns. A schema-valid list that breaks them is rightly refused (invalid_params), so the
  generated *positive* cases are made to follow them before they go out: repeated job keys get a suffix, character
  codes are dropped (the fuzzer cannot know a project's characters), and `shots_csv` becomes one shot whose scene
  is the generated text, written as CSV. Negative cases go out as generated.
- A provider's `config` is validated by that provider's own model (unknown keys refused, ComfyUI workflows checked
  as graphs), which the one shared schema of providers.configure cannot state per path: positive cases keep only
  a config the named provider accepts (else its defaults, {}). Negative cases go out as generated.
- Generated import paths name nothing on this machine, so positive assets.import cases import the pictures
  scripts/contract seeded in the sidecar's home folder (IAT_CONTRACT_IMAGES): the success path is fuzzed too.
"""

from __future__ import annotations

import atexit
import collections
import csv
import io
import json
import os
import posixpath
import threading

import schemathesis

_ROOTS = os.environ["IAT_CONTRACT_ROOTS"]
_STATS = os.environ.get("IAT_CONTRACT_STATS")
_IMAGES = [p for p in os.environ.get("IAT_CONTRACT_IMAGES", "").split(os.pathsep) if p]
_counts: collections.Counter = collections.Counter()
_lock = threading.Lock()


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    body = case.body
    if isinstance(body, dict):
        root = body.get("local_project_root")
        if isinstance(root, str) and root.startswith("/"):
            # normpath first: "/../../x" must not climb out of the scratch folder.
            moved = _ROOTS + posixpath.normpath(root).lstrip("/").join(["/", ""])
            body["local_project_root"] = moved[:4096]  # still within the schema's maxLength
    positive = isinstance(body, dict) and case.meta is not None and case.meta.generation.mode.is_positive
    if positive and case.operation.method.upper() == "POST" and case.operation.path in _SHOT_LISTS:
        _follow_shot_list_rules(body)
    if positive and case.operation.method.upper() == "PUT" and case.operation.path == _CONFIGURE:
        _follow_provider_config(case)
    if positive and case.operation.method.upper() == "POST" and case.operation.path == _IMPORT and _IMAGES:
        paths = body.get("paths")
        if isinstance(paths, list) and paths:
            body["paths"] = [_IMAGES[i % len(_IMAGES)] for i in range(min(len(paths), len(_IMAGES)))]


# The operations taking a shot list (runs.start, runs.plan), and assets.import.
_SHOT_LISTS = ("/api/projects/{slug}/runs", "/api/projects/{slug}/runs/plan")
_IMPORT = "/api/projects/{slug}/assets/import"
_CONFIGURE = "/api/projects/{slug}/providers/{provider_code}"


def _follow_provider_config(case) -> None:
    from pydantic import ValidationError

    from iat.providers import default_providers
    from iat.plugins import LazyRegistry

    code = (case.path_parameters or {}).get("provider_code")
    if not isinstance(case.body, dict) or code not in default_providers():
        return
    provider = LazyRegistry("provider", default_providers()).get(code)
    try:
        provider.config_model.model_validate(case.body.get("config"))
    except ValidationError:
        case.body["config"] = {}


def _follow_shot_list_rules(body: dict) -> None:
    shots = body.get("shots")
    if isinstance(shots, list):
        seen: set[str] = set()
        for i, shot in enumerate(shots):
            if not isinstance(shot, dict):
                continue
            key = shot.get("job_key")
            if isinstance(key, str) and key in seen:
                shot["job_key"] = f"{key[:120]}.{i}"  # still within the pattern and maxLength
            seen.add(shot.get("job_key"))
            if shot.get("characters"):
                shot["characters"] = []
    text = body.get("shots_csv")
    if isinstance(text, str):
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["job_key", "scene"])
        writer.writerow(["s1", text.strip()[:2000] or "a shot"])  # the parser strips fields
        body["shots_csv"] = out.getvalue()


@schemathesis.hook
def after_call(ctx, case, response):
    with _lock:
        _counts[str(response.status_code)] += 1


@atexit.register
def _write_stats() -> None:
    if _STATS:
        with open(_STATS, "w", encoding="utf-8") as f:
            json.dump(dict(sorted(_counts.items())), f)
