# Replaces the contributed hook: boto3's resource models only for S3 (the sidecar's one AWS service).
from PyInstaller.utils.hooks import collect_data_files, collect_submodules

hiddenimports = collect_submodules("boto3.s3")
datas = collect_data_files("boto3", includes=["data/s3/**"])
