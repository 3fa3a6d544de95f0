"""Schemathesis hooks for scripts/contract (loaded through SCHEMATHESIS_HOOKS).

- The API accepts any absolute `local_project_root`, so a fuzzer would create project folders all over the
  machine. Every absolute root is moved under the run's scratch folder (IAT_CONTRACT_ROOTS) before the request goes
  out: it stays an absolute path the API must accept, and the run leaves nothing behind.
- Every response is counted by status, for the summary scripts/contract prints (IAT_CONTRACT_STATS).
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import posixpath
import threading

import schemathesis

_ROOTS = os.environ["IAT_CONTRACT_ROOTS"]
_STATS = os.environ.get("IAT_CONTRACT_STATS")
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


@schemathesis.hook
def after_call(ctx, case, response):
    with _lock:
        _counts[str(response.status_code)] += 1


@atexit.register
def _write_stats() -> None:
    if _STATS:
        with open(_STATS, "w", encoding="utf-8") as f:
            json.dump(dict(sorted(_counts.items())), f)
