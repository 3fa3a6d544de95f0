# Replaces the contributed hook (same content) and adds numba's C extensions that other C code imports through the
# C API (e.g. _dispatcher imports numba._devicearray): static analysis cannot see those. The threading layers
# (workqueue, omppool, tbbpool) load by name too; tbbpool needs Intel TBB, which is not shipped, so numba falls
# back to the others. CUDA and the test suite stay out.
import os

from PyInstaller.utils.hooks import get_package_paths, is_module_satisfies

excludedimports = ["IPython", "scipy", "numba.cuda", "numba.tests"]
hiddenimports = ["llvmlite"]
if is_module_satisfies("numba >= 0.59.0"):
    hiddenimports += ["numba.cloudpickle.cloudpickle_fast"]
if is_module_satisfies("numba >= 0.61.0rc1, < 0.62.0rc1"):  # modules chosen at run time by the new/old type system
    _old = ["numba.core.datamodel.old_models", "numba.core.old_boxing", "numba.core.types.old_scalars",
            "numba.core.typing.old_builtins", "numba.core.typing.old_cmathdecl", "numba.core.typing.old_mathdecl",
            "numba.cpython.old_builtins", "numba.cpython.old_hashing", "numba.cpython.old_mathimpl",
            "numba.cpython.old_numbers", "numba.cpython.old_tupleobj", "numba.np.old_arraymath",
            "numba.np.random.old_distributions", "numba.np.random.old_random_methods"]
    hiddenimports += _old + [name.replace(".old_", ".new_") for name in _old]

_, _pkg_dir = get_package_paths("numba")
for _root, _dirs, _files in os.walk(_pkg_dir):
    _rel = os.path.relpath(_root, os.path.dirname(_pkg_dir))
    _parts = _rel.split(os.sep)
    if "cuda" in _parts or "tests" in _parts:
        _dirs[:] = []
        continue
    for _f in _files:
        if _f.endswith((".so", ".pyd")):
            hiddenimports.append(".".join(_parts + [_f.split(".", 1)[0]]))
