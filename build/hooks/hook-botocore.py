# Replaces the contributed hook, which collects all of botocore/data (~30 MB, 400+ services). The sidecar talks to
# S3 only; credentials may need STS (assume-role, web identity), SSO / SSO-OIDC (IAM Identity Center) and Sign-In
# (`aws login` sessions). Plus the shared endpoint, partition, retry and default-configuration files.
import os

from PyInstaller.utils.hooks import collect_data_files, get_package_paths

SERVICES = ("s3", "sts", "sso", "sso-oidc", "signin")

hiddenimports = ["html.parser"]

_, _pkg_dir = get_package_paths("botocore")
_data_dir = os.path.join(_pkg_dir, "data")

# Everything outside data/ (cacert.pem, ...).
datas = collect_data_files("botocore", excludes=["data/**"])

# The top-level files of data/ (endpoints.json, partitions.json, sdk-default-configuration.json, _retry.json).
for _name in sorted(os.listdir(_data_dir)):
    _path = os.path.join(_data_dir, _name)
    if os.path.isfile(_path):
        datas.append((_path, "botocore/data"))

_missing = [s for s in SERVICES if not os.path.isdir(os.path.join(_data_dir, s))]
if _missing:
    raise SystemExit(f"hook-botocore: botocore has no data for {_missing}")
for _service in SERVICES:
    for _root, _dirs, _files in os.walk(os.path.join(_data_dir, _service)):
        _dest = os.path.join("botocore", os.path.relpath(_root, _pkg_dir))
        datas.extend((os.path.join(_root, f), _dest) for f in _files)
