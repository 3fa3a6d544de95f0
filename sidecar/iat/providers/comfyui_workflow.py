"""ComfyUI workflow templates: the shipped defaults, the checks a project's override passes, and the substitution.

A template is a workflow in ComfyUI's API format (what "Save (API)" exports, and what `POST /prompt` takes as
"prompt"): node id -> {"class_type": str, "inputs": {name: value or [node id, output index]}, "_meta": {...}}.
Values the connector fills in are written as placeholders inside strings:

    "{{seed}}"                -> the value itself, with its JSON type (here an int)
    "storybook, {{prompt}}"   -> text: the placeholder's value written into the string

so a template stays valid JSON and a number input gets a number. The names and their types are `NAMES`, plus
`reference_image_N` (the uploaded name of the request's N-th reference image, N = 0..7) and `reference_weight_N`
(its weight). `init_image` is the uploaded name of the previous stage's picture: img2img templates must use it,
text2img templates must not.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from iat.providers.base import STAGES

NAMES: dict[str, type] = {
    "prompt": str, "negative_prompt": str, "seed": int, "width": int, "height": int, "model": str, "steps": int,
    "cfg": float, "sampler_name": str, "scheduler": str, "denoise": float, "init_image": str,
    "filename_prefix": str, "stage": str,
}
MAX_REFERENCES = 8
_REFERENCE = re.compile(r"reference_(image|weight)_([0-7])$")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

# Nodes whose history output is {"images": [{"filename", "subfolder", "type"}]}, fetched through /view: core
# ComfyUI's SaveImage (type "output") and PreviewImage (type "temp"), nodes.py.
OUTPUT_CLASSES = ("SaveImage", "PreviewImage")
WORKFLOW_KEYS = ("text2img", "img2img", *STAGES)
MAX_NODES = 500
MAX_JSON = 1_000_000


def placeholder_type(name: str) -> type | None:
    if name in NAMES:
        return NAMES[name]
    match = _REFERENCE.match(name)
    if match:
        return str if match.group(1) == "image" else float
    return None


def is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def check_workflow(graph: Any, key: str) -> dict[str, dict[str, Any]]:
    """A workflow as `POST /prompt` takes it, or a ValueError saying what is wrong (node by node)."""
    if not isinstance(graph, dict) or not graph:
        raise ValueError("a workflow is a non-empty object of node id -> {class_type, inputs} (ComfyUI's API format)")
    if "nodes" in graph and "links" in graph:
        raise ValueError("this is ComfyUI's UI format; export the workflow with 'Save (API)' instead")
    if len(graph) > MAX_NODES:
        raise ValueError(f"a workflow has at most {MAX_NODES} nodes")
    if len(json.dumps(graph)) > MAX_JSON:
        raise ValueError(f"a workflow is at most {MAX_JSON} bytes of JSON")
    for node_id, node in graph.items():
        where = f"node {node_id!r}"
        if not isinstance(node, dict):
            raise ValueError(f"{where} is not an object")
        unknown = set(node) - {"class_type", "inputs", "_meta"}
        if unknown:
            raise ValueError(f"{where} has unknown keys {sorted(unknown)} (API format: class_type, inputs, _meta)")
        if not isinstance(node.get("class_type"), str) or not node["class_type"].strip():
            raise ValueError(f"{where} needs a class_type (the node's type, e.g. KSampler)")
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise ValueError(f"{where}: inputs must be an object")
        for name, value in inputs.items():
            if isinstance(value, list):
                if not is_link(value):
                    raise ValueError(f"{where} input {name!r}: a list must be a link [node id, output index]")
                if value[0] not in graph:
                    raise ValueError(f"{where} input {name!r} links to node {value[0]!r}, which is not in the "
                                     f"workflow")
                if value[1] < 0:
                    raise ValueError(f"{where} input {name!r}: output index must be >= 0")
            elif value is not None and not isinstance(value, (str, int, float, bool)):
                raise ValueError(f"{where} input {name!r} must be a string, number, boolean or link")
    if not any(node["class_type"] in OUTPUT_CLASSES for node in graph.values()):
        raise ValueError(f"the workflow saves no image: it needs one of {', '.join(OUTPUT_CLASSES)}")
    names = placeholders(graph)
    unknown = sorted(n for n in names if placeholder_type(n) is None)
    if unknown:
        raise ValueError(f"unknown placeholder(s) {', '.join('{{' + n + '}}' for n in unknown)}; known: "
                         f"{', '.join(sorted(NAMES))}, reference_image_N, reference_weight_N")
    if key == "img2img" and "init_image" not in names:
        raise ValueError("an img2img workflow must load the previous stage's picture: use \"{{init_image}}\" "
                         "as a LoadImage node's image")
    if key == "text2img" and "init_image" in names:
        raise ValueError("a text2img workflow has no input picture: remove \"{{init_image}}\"")
    return graph


def placeholders(graph: Mapping[str, Any]) -> set[str]:
    found: set[str] = set()
    for node in graph.values():
        for value in node.get("inputs", {}).values():
            if isinstance(value, str):
                found.update(_PLACEHOLDER.findall(value))
    return found


def whole_value_paths(graph: Mapping[str, Any], name: str) -> list[tuple[str, str]]:
    """(node id, input name) of every input that is exactly "{{name}}": where to read a value back from the
    workflow the server ran (its history keeps the prompt)."""
    paths = []
    for node_id, node in graph.items():
        for input_name, value in node.get("inputs", {}).items():
            if isinstance(value, str):
                match = _PLACEHOLDER.fullmatch(value.strip())
                if match and match.group(1) == name:
                    paths.append((node_id, input_name))
    return paths


def fill(graph: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A copy of the template with every placeholder replaced; a placeholder without a value is a KeyError."""
    out = copy.deepcopy(dict(graph))
    for node in out.values():
        inputs = node.get("inputs", {})
        for input_name, value in inputs.items():
            if not isinstance(value, str):
                continue
            whole = _PLACEHOLDER.fullmatch(value.strip())
            if whole:
                inputs[input_name] = values[whole.group(1)]
            elif "{{" in value:
                inputs[input_name] = _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), value)
    return out


@lru_cache(maxsize=None)
def _default_text(mode: str) -> str:
    return resources.files("iat.providers").joinpath("comfyui_workflows", f"{mode}.json").read_text("utf-8")


def default(mode: str) -> dict[str, dict[str, Any]]:
    """The shipped workflow of a mode (text2img, img2img): ComfyUI's standard SD1.5/SDXL graph."""
    return check_workflow(json.loads(_default_text(mode)), mode)
