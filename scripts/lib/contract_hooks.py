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
- Generated package paths name nothing (or no package) on this machine, so positive exports.import cases import a
  genuine package this module makes once in the scratch folder: the success path is fuzzed too.
- An agent instruction's inputs, execution and constraints are validated by its type's own models (one shared body
  schema cannot state them per type): positive agent.instructions.create cases the type refuses get a valid
  payload of that type instead. Negative cases go out as generated.
- Schema-valid base64 is rarely audio, and generated asset, session and message ids name nothing: positive
  voice.stt cases send a short silent WAV (no asset, no session; vosk without a model and openai without an
  account then answer conflict), positive voice.tts cases naming a message speak a fixed text instead.
- models.download must never reach outside this machine: every case whose URL the sidecar would accept (positive
  or not) gets the URL of a loopback server this module runs, which serves one small super-resolution model
  (built with tests/onnx_models in the scratch folder). Positive models.download and models.install cases name that
  model, with its sha256 and kind (a schema-valid sha256 or path naming nothing else is rightly refused), and a
  max_bytes it fits in: the success path is fuzzed too. Negative cases keep their invalid fields and are refused.
"""

from __future__ import annotations

import atexit
import collections
import csv
import functools
import http.server
import io
import json
import os
import posixpath
import sys
import threading
from pathlib import Path

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
    if case.operation.method.upper() == "POST" and case.operation.path in (_MODELS, _DOWNLOAD) \
            and isinstance(body, dict):
        _models_on_loopback(case.operation.path, body, positive)
    if positive and case.operation.method.upper() == "POST" and case.operation.path == _EXPORTS_IMPORT \
            and isinstance(body, dict):
        body["path"] = _package()
        # In the default projects folder: fuzzed roots nest projects' folders in one another, and deleting the
        # outer project takes the inner one's folder with it (a projects.create problem, reported, not this one's).
        body["local_project_root"] = None
    if positive and case.operation.method.upper() == "POST" and case.operation.path == _INSTRUCTIONS:
        _follow_instruction_type(body)
    if positive and case.operation.method.upper() == "POST" and case.operation.path == _IMPORT and _IMAGES:
        paths = body.get("paths")
        if isinstance(paths, list) and paths:
            body["paths"] = [_IMAGES[i % len(_IMAGES)] for i in range(min(len(paths), len(_IMAGES)))]
    if positive and case.operation.method.upper() == "POST" and case.operation.path == _STT \
            and isinstance(body, dict):
        # Schema-valid base64 is rarely a WAV, FLAC or OGG file, and a generated asset or session id names none.
        body.update({"audio_base64": _wav_base64(), "asset_id": None, "session_id": None})
    if positive and case.operation.method.upper() == "POST" and case.operation.path == _TTS \
            and isinstance(body, dict) and body.get("message_id") is not None:
        body.update({"message_id": None, "text": "The copilot speaks."})  # a generated message id names none


# The operations taking a shot list (runs.start, runs.plan), and assets.import.
_SHOT_LISTS = ("/api/projects/{slug}/runs", "/api/projects/{slug}/runs/plan")
_IMPORT = "/api/projects/{slug}/assets/import"
_CONFIGURE = "/api/projects/{slug}/providers/{provider_code}"
_MODELS, _DOWNLOAD = "/api/models", "/api/models/download"
_EXPORTS_IMPORT = "/api/exports/import"
_INSTRUCTIONS = "/api/projects/{slug}/agent/instructions"
_STT, _TTS = "/api/projects/{slug}/voice/stt", "/api/projects/{slug}/voice/tts"


@functools.cache
def _wav_base64() -> str:
    """A quarter second of silence as 16 kHz mono 16-bit WAV, base64: what positive voice.stt cases send."""
    import base64
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 4000)
    return base64.b64encode(buf.getvalue()).decode("ascii")

# A valid payload of each instruction type, for positive agent.instructions.create cases whose generated inputs,
# execution or constraints the type refuses (what each type takes is in schema/agent_instruction.schema.json and
# the operation's description; the body's schema is one for every type).
_INSTRUCTION_EXAMPLES = {
    "pipeline_run": {"inputs": {"shots": [{"job_key": "a", "scene": "a lighthouse"}]}},
    "asset_edit": {"inputs": {"asset_id": "00000000-0000-4000-8000-000000000000", "operation": "color_correct"}},
    "qa_check": {"inputs": {"asset_ids": ["00000000-0000-4000-8000-000000000000"]}},
    "storage_sync": {"inputs": {"direction": "push"}, "execution": {"dry_run": True}},
    "custom": {"inputs": {"action": "export_project"}},
}


def _follow_instruction_type(body: dict) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sidecar"))
    from iat.copilot.envelope import validate_payload
    from iat.errors import InvalidParams

    kind = body.get("instruction_type")
    if kind not in _INSTRUCTION_EXAMPLES:
        return
    # Left in draft: the contract is the API's; carrying instructions out (runs, syncs) is the agent tests' part.
    body["queue"] = False
    try:
        validate_payload(kind, "x", body.get("inputs", {}), body.get("execution"), body.get("constraints"))
    except InvalidParams:
        body.update({"inputs": {}, "execution": {}, "constraints": {}, **_INSTRUCTION_EXAMPLES[kind]})


@functools.cache
def _package() -> str:
    """A genuine export package (a small project made in a home of its own in the scratch folder): generated
    package paths name nothing on this machine, so positive exports.import cases import this one."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sidecar"))
    from iat.app import App
    from iat.settings import Settings
    from iat.transfer.export import write_package

    base = Path(_ROOTS).parent / "export-package"
    app = App(Settings.from_env({}, home=base / "home"))
    try:
        app.projects.create("contract-package", "Contract package", "", {}, None)
        made = write_package(app, app.projects.open("contract-package"), "tar.gz", base / "out")
    finally:
        app.close()
    return made["path"]


@functools.cache
def _model() -> tuple[str, str, int, str]:
    """A small super-resolution model in the scratch folder and a loopback server handing it out: its path,
    sha256, size and URL."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.onnx_models import save
    from tests.onnx_models.superres import conv_depth_to_space

    path = Path(_ROOTS) / "contract-model.onnx"
    sha = save(conv_depth_to_space(2), path)
    data = path.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server interface
            found = self.path == "/model.onnx"
            self.send_response(200 if found else 404)
            self.send_header("Content-Length", str(len(data) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="contract-models", daemon=True).start()
    return str(path), sha, len(data), f"http://127.0.0.1:{server.server_address[1]}/model.onnx"


def _models_on_loopback(path: str, body: dict, positive: bool) -> None:
    from iat.models.download import check_url

    url = body.get("url")
    if path == _DOWNLOAD and isinstance(url, str):
        try:
            check_url(url)
        except ValueError:
            pass  # refused by validation: never fetched
        else:
            body["url"] = _model()[3]
    if not positive:
        return
    model_path, sha, size, url = _model()
    body.update({"sha256": sha, "kind": "super_resolution"})
    body.pop("arch", None)
    if path == _DOWNLOAD:
        body["url"] = url
        if isinstance(body.get("max_bytes"), (int, float)) and body["max_bytes"] < size:  # 2.0 is an integer too
            body.pop("max_bytes")
    else:
        body["path"] = model_path


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
