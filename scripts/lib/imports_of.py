#!/usr/bin/env python3
"""What each code path of the sidecar really imports, measured in the venv: the ground truth for the frozen
build's PRODUCT_MODULES / EXCLUDES / METADATA lists (build/iat-sidecar.spec).

    .venv/bin/python scripts/lib/imports_of.py [--json FILE] [--check] [--quiet] [--per-module]

Code paths, each run in a fresh interpreter of this venv:
- each subpackage of `iat` (or top-level module) with external imports: each of its modules is imported, then
  every external name the module imports anywhere (module level and inside functions, so the lazy imports too;
  `if TYPE_CHECKING:` blocks left out); where that alone would not import as the product does, the module's
  EXERCISE runs in between (rembg's session modules through iat.models.rembg's bare package; `doctor`'s check of
  every library the product carries: vosk, sounddevice, boto3, ...);
- `spec hiddenimports`: the spec's PRODUCT_MODULES.
Each path runs with the spec's EXCLUDES unimportable, as in the frozen build (and, to compare, with everything the
venv has). Reported per path: the distributions it adds to start-up (`iat.cli`), scipy subpackages, the wheels'
vendored shared libraries (*.libs, from /proc/self/maps on Linux), distribution metadata read by name, and what
EXCLUDES keeps out.

--check exits 1 when a path fails only because of EXCLUDES (the frozen build would fail there; VENV_ONLY lists
the exceptions), when a path fails even in the venv, or when metadata read at run time is not in METADATA.
scripts/build-sidecar runs `--check --quiet` before each PyInstaller run.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "sidecar" / "iat"
SPEC = ROOT / "build" / "iat-sidecar.spec"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

# Runs in the fresh interpreter: imports (or calls) what it is given, prints what got loaded. With `blocked`, the
# spec's EXCLUDES cannot be imported (as in the frozen build): an optional import of one (peewee's psycopg2) fails
# the way it will frozen, and a path that needs one fails here, in the venv, before any build.
_PROBE = r"""
import importlib, json, sys
todo = json.loads(sys.argv[1])

class Excluded:
    def find_spec(self, name, path=None, target=None):
        if any(name == e or name.startswith(e + ".") for e in todo["blocked"]):
            raise ModuleNotFoundError(f"No module named {name!r} (excluded from the frozen build)", name=name)
        return None

sys.meta_path.insert(0, Excluded())

# Distribution metadata read by name (importlib.metadata.version() and friends go through from_name): the frozen
# build must carry those .dist-info folders.
import importlib.metadata as md
metadata_read = set()
_from_name = md.Distribution.from_name.__func__
def _recording(cls, name):
    metadata_read.add(name)
    return _from_name(cls, name)
md.Distribution.from_name = classmethod(_recording)
failed = {}
for step in todo["steps"]:
    try:
        if step.startswith("exec:"):
            exec(step[5:], {})
        else:
            importlib.import_module(step)
    except BaseException as exc:
        failed[step] = f"{type(exc).__name__}: {exc}"[:300]
libs = []
try:
    with open("/proc/self/maps") as maps:
        libs = sorted({line.split()[-1] for line in maps if ".so" in line.rsplit("/", 1)[-1]})
except OSError:
    pass
print(json.dumps({"modules": sorted(sys.modules), "libs": libs, "failed": failed, "metadata": sorted(metadata_read)}))
"""


def spec_lists(path: Path = SPEC) -> dict[str, list[str]]:
    """PRODUCT_MODULES, EXCLUDES, VENV_ONLY and METADATA as the spec assigns them (literal lists, read without
    running the spec)."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("PRODUCT_MODULES", "EXCLUDES", "METADATA", "VENV_ONLY"):
                out[name] = ast.literal_eval(node.value)
    return out


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` blocks: never executed."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def external_imports(path: Path) -> list[str]:
    """Absolute non-stdlib, non-iat modules a source file imports anywhere (and the literal names it passes to
    importlib.import_module or iat.lazy.lazy_import)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_blocks(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (isinstance(node, ast.Call)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "lazy_import")
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    return sorted(n for n in names if n.split(".")[0] not in STDLIB and n.split(".")[0] != "iat")


def package_modules() -> dict[str, list[str]]:
    """iat module name -> the external modules it imports."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = external_imports(path)
    return out


def probe(steps: list[str], blocked: list[str] = ()) -> dict:
    """Runs `steps` (module names to import, or "exec:" and code) in a fresh interpreter of this venv."""
    todo = {"steps": steps, "blocked": list(blocked)}
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(todo)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "sidecar")})
    if proc.returncode != 0:
        return {"modules": [], "libs": [], "metadata": [], "failed": {"<interpreter>": proc.stderr[-1000:]}}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def vendored_lib(path: str) -> str | None:
    """`numpy.libs/libscipy_openblas64_...so` for a wheel's vendored library, else None."""
    parent = Path(path).parent
    return f"{parent.name}/{Path(path).name}" if parent.name.endswith(".libs") else None


# Code that runs a path's own imports, where importing its module's names one by one would not do what the product
# does: rembg's session modules load through iat.models.rembg's bare package (importing them plainly runs rembg's
# __init__, which needs pymatting). Run after the module's import and before its other names.
EXERCISE: dict[str, list[str]] = {
    "iat.models.rembg": ["exec:from iat.models.rembg import SESSIONS, session_class\nfor arch in SESSIONS: session_class(arch)"],
    # Every library the product carries, as `iat-sidecar doctor` checks them (it reports failures, not raises).
    "iat.doctor": ["exec:from iat.doctor import check_modules\n"
                   "bad = {k: v['error'] for k, v in check_modules().items() if not v['ok']}\n"
                   "assert not bad, bad"],
}


def code_paths(per_module: bool = False) -> dict[str, list[str]]:
    """name -> steps: each iat subpackage (or top-level module) with external imports, each of its modules in turn
    (the module, its exercise, then each external name it imports); then the spec's hiddenimports. With
    `per_module`, one path per module."""
    paths: dict[str, list[str]] = {}
    for module, externals in package_modules().items():
        if externals or module in EXERCISE:
            parts = module.split(".")
            key = module if per_module or (PACKAGE / f"{parts[1]}.py").is_file() else ".".join(parts[:2])
            paths.setdefault(key, []).extend([module, *EXERCISE.get(module, []), *externals])
    # As PyInstaller is told to collect them, with rembg's names resolved through the bare package, as the product
    # imports them.
    paths["spec hiddenimports"] = ["iat.models.rembg", *EXERCISE["iat.models.rembg"], *spec_lists()["PRODUCT_MODULES"]]
    return paths


def measure(per_module: bool = False, compare: bool = True) -> dict:
    """Each code path as the frozen build will run it (EXCLUDES unimportable) and, with `compare` or where that
    fails, with everything the venv has (what the excludes keep out; whether a failure is theirs)."""
    lists = spec_lists()
    excludes, venv_only = lists["EXCLUDES"], lists.get("VENV_ONLY", [])
    paths = code_paths(per_module)
    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        base_f = pool.submit(probe, ["iat.cli"], excludes)
        frozen_f = {name: pool.submit(probe, steps, excludes) for name, steps in paths.items()}
        base = base_f.result()
        frozen = {name: f.result() for name, f in frozen_f.items()}
        venv_f = {name: pool.submit(probe, steps) for name, steps in paths.items() if compare or frozen[name]["failed"]}
        venv = {name: venv_f[name].result() if name in venv_f else {"modules": [], "failed": {}} for name in paths}

    dists = packages_distributions()
    base_modules, base_libs = set(base["modules"]), set(base["libs"])
    report: dict = {"excludes": excludes,
                    "baseline": {"imports": ["iat.cli"], "distributions": _dists(base["modules"], dists)},
                    "paths": {}}
    union: dict[str, set] = {"distributions": set(_dists(base["modules"], dists)), "scipy": set(),
                             "vendored_libs": set(), "metadata": set(base["metadata"])}
    for name, result in frozen.items():
        added = [m for m in result["modules"] if m not in base_modules]
        broken = {k: v for k, v in result["failed"].items() if k not in venv[name]["failed"]}
        allowed = {k: v for k, v in broken.items() if _missing_excluded(v) in venv_only}
        row = {
            "steps": paths[name],
            "distributions": _dists(added, dists),
            "scipy": sorted({m.split(".")[1] for m in result["modules"]
                             if m.startswith("scipy.") and not m.split(".")[1].startswith("_")}),
            "vendored_libs": sorted(filter(None, (vendored_lib(p) for p in result["libs"] if p not in base_libs))),
            "metadata": result["metadata"],
            # Failing only with the excludes in force: the frozen build would break this path.
            "broken_by_excludes": {k: v for k, v in broken.items() if k not in allowed},
            "venv_only": allowed,
            "failed": venv[name]["failed"],
            "kept_out": sorted({m.split(".")[0] for m in venv[name]["modules"] if _excluded_by(m, excludes)}),
        }
        report["paths"][name] = row
        for key in ("distributions", "scipy", "vendored_libs", "metadata"):
            union[key].update(row[key])
    report["union"] = {key: sorted(values) for key, values in union.items()}
    carried = {_canonical(d) for d in lists["METADATA"]}
    report["metadata_missing"] = sorted(d for d in report["union"]["metadata"] if _canonical(d) not in carried)
    report["broken_by_excludes"] = {n: r["broken_by_excludes"] for n, r in report["paths"].items() if r["broken_by_excludes"]}
    report["failed"] = {n: r["failed"] for n, r in report["paths"].items() if r["failed"]}
    return report


def _canonical(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _missing_excluded(error: str) -> str | None:
    """The top-level package an import failed on, when the failure is the probe's refusal of an excluded module."""
    match = re.search(r"No module named '([^']+)' \(excluded", error)
    return match.group(1).split(".")[0] if match else None


def _excluded_by(module: str, excludes: list[str]) -> str | None:
    return next((e for e in excludes if module == e or module.startswith(e + ".")), None)


def _dists(modules, dists: dict[str, list[str]]) -> list[str]:
    """The distributions that the loaded top-level modules come from (stdlib and Cython's module-name leftovers,
    which belong to none, drop out)."""
    tops = {m.split(".")[0] for m in modules} - STDLIB - {"iat"}
    return sorted({d for top in tops for d in dists.get(top, [])} - {"iat-toolkit"})


def print_report(report: dict) -> None:
    print(f"start-up (iat.cli): {', '.join(report['baseline']['distributions']) or '-'}")
    print("what each code path adds, with the spec's EXCLUDES unimportable (as frozen):")
    for name, row in report["paths"].items():
        print(f"  {name}: {', '.join(row['distributions']) or '-'}")
        if row["scipy"]:
            print(f"      scipy: {', '.join(row['scipy'])}")
        if row["metadata"]:
            print(f"      reads metadata of: {', '.join(row['metadata'])}")
        if row["kept_out"]:
            print(f"      kept out by EXCLUDES: {', '.join(row['kept_out'])}")
        for what, error in row["venv_only"].items():
            print(f"      venv only (VENV_ONLY) {what}: {error}")
        for what, error in row["broken_by_excludes"].items():
            print(f"      BROKEN BY EXCLUDES {what}: {error}")
        for what, error in row["failed"].items():
            print(f"      FAILS EVEN IN THE VENV {what}: {error}")
    union = report["union"]
    print(f"\nunion of distributions ({len(union['distributions'])}): {', '.join(union['distributions'])}")
    print(f"scipy subpackages: {', '.join(union['scipy']) or '-'}")
    print(f"vendored libs: {', '.join(union['vendored_libs']) or '-'}")
    print(f"metadata read: {', '.join(union['metadata']) or '-'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the report as JSON too")
    parser.add_argument("--check", action="store_true", help="exit 1 on an excluded module loaded or an import failing")
    parser.add_argument("--per-module", action="store_true", help="one code path per iat module, not per subpackage")
    parser.add_argument("--quiet", action="store_true", help="print only problems")
    args = parser.parse_args()
    # --check alone (the build's) skips the venv-side run where nothing failed: half the time.
    report = measure(args.per_module, compare=not (args.check and args.quiet))
    if not args.quiet:
        print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    bad = False
    for name, broken in report["broken_by_excludes"].items():
        for what, error in broken.items():
            bad = True
            print(f"imports_of: {name}: {what} needs what the spec excludes: {error}", file=sys.stderr)
    if report["metadata_missing"]:
        bad = True
        print(f"imports_of: metadata read at run time but not in the spec's METADATA: "
              f"{', '.join(report['metadata_missing'])}", file=sys.stderr)
    for name, failed in report["failed"].items():
        for what, error in failed.items():
            bad = True
            print(f"imports_of: {name}: {what} does not import even in the venv: {error}", file=sys.stderr)
    return 1 if (bad and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
