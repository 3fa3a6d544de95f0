# The sidecar registers its command modules and migrations through importlib: collect every submodule of `iat`
# (and any data file that lands in the package).
from PyInstaller.utils.hooks import collect_data_files, collect_submodules

hiddenimports = collect_submodules("iat")
datas = collect_data_files("iat")
