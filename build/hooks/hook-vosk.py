# vosk opens its native library with cffi from the package folder (libvosk.so / libvosk.dll and its MinGW runtime
# DLLs / libvosk.dyld on macOS): imports cannot reveal it, so collect every native file next to the package.
import os

from PyInstaller.utils.hooks import get_package_paths

_, _pkg_dir = get_package_paths("vosk")
binaries = [
    (os.path.join(_pkg_dir, f), "vosk")
    for f in sorted(os.listdir(_pkg_dir))
    if f.endswith((".so", ".dll", ".dylib", ".dyld")) or ".so." in f
]
if not binaries:
    raise SystemExit("hook-vosk: no native library found in " + _pkg_dir)
hiddenimports = ["vosk.vosk_cffi", "_cffi_backend"]
