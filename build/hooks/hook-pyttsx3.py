# pyttsx3 imports its drivers by name (importlib.import_module(f"pyttsx3.drivers.{name}")): collect them all; the
# platform ones whose own imports are missing here (sapi5: comtypes, nsss/avspeech: pyobjc) cost only a warning.
from PyInstaller.utils.hooks import collect_submodules

hiddenimports = collect_submodules("pyttsx3.drivers")
