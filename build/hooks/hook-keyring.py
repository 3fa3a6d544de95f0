# keyring finds its backends through entry points (group `keyring.backends`, declared in its metadata) and imports
# them by name; the Secret Service backend needs secretstorage over jeepney (D-Bus), found only at run time.
from PyInstaller.utils.hooks import collect_submodules, copy_metadata

hiddenimports = collect_submodules("keyring.backends") + [
    "secretstorage",
    "jeepney",
    "jeepney.io.blocking",
]
datas = copy_metadata("keyring")
