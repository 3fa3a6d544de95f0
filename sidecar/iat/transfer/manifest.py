"""The standalone package format: what a package holds, its manifest, and the names it may use.

A package (a `.tar.gz`, a `.zip` or a folder) holds, at its top level:

    manifest.json   this format's name and version, the schema version of project.db, the app version, the
                    project (id, slug, name), when it was made, the rows per table, whether secrets are in it,
                    and the sha256 and size of every other file
    project.db      a SQLite database with the project's rows (whatever database the project lives in)
    assets/ ...     the project's files, at their paths relative to the project folder
    runs/ ...

Every file but manifest.json is listed in the manifest; an import refuses a package holding any file the
manifest does not list, missing one it lists, or whose bytes differ from it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from iat.errors import InvalidParams, SchemaVersionError

FORMAT = "iat-project-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DB_FILE = "project.db"
MAX_MANIFEST_BYTES = 256 << 20  # a million files take about 150 MiB of manifest

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_NAME = 4096
MAX_PART = 255


def refuse(reason: str, message: str, **details: Any) -> InvalidParams:
    """The error an import answers for a package it will not take: details say why (`reason`) and where."""
    return InvalidParams(message, details={"reason": reason, **details})


def check_name(name: str) -> str:
    """A package entry's name, as a relative path with "/" that stays inside the folder it is extracted to:
    refused when empty, absolute, with a drive or colon, a backslash, a NUL or another control character, an
    empty, "." or ".." part, or a part or whole too long. Returns the name."""
    bad = None
    if not name or len(name) > MAX_NAME:
        bad = "empty or too long"
    elif any(ord(c) < 32 for c in name):
        bad = "a NUL or control character"
    elif "\\" in name:
        bad = "a backslash"
    elif name.startswith("/"):
        bad = "an absolute path"
    elif ":" in name:
        bad = "a drive or colon"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        bad = "an empty, '.' or '..' part"
    elif any(len(part) > MAX_PART for part in name.split("/")):
        bad = "a name part over 255 characters"
    if bad:
        raise refuse("unsafe_name", f"the package entry {name!r} is refused: {bad}", entry=name)
    return name


def build(*, schema_version: int, app_version: str, project: dict, created_at: str, counts: dict[str, int],
          files: list[dict], include_secrets: bool, secret_rows: int) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "schema_version": schema_version,
        "app_version": app_version,
        "created_at": created_at,
        "project": {"id": project["id"], "slug": project["slug"], "name": project["name"]},
        "row_counts": counts,
        "secrets": ({"included": True, "rows": secret_rows,
                     "note": "encrypted with the exporting machine's keyring key: usable only where that key is"}
                    if include_secrets else {"included": False}),
        "files": files,
    }


def dumps(manifest: dict) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


def load(data: bytes, latest_schema: int) -> dict:
    """Parses and checks a manifest's shape, format and version; SchemaVersionError when its database is newer
    than this code knows."""
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise refuse("bad_manifest", f"manifest.json is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise refuse("bad_manifest", f"not an IAT Toolkit project package (format is not {FORMAT!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise refuse("format_version", f"package format version {version!r} is not supported (this sidecar reads "
                     f"version {FORMAT_VERSION})", format_version=version, supported=FORMAT_VERSION)
    schema = manifest.get("schema_version")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise refuse("bad_manifest", "manifest.json has no valid schema_version")
    if schema > latest_schema:
        raise SchemaVersionError(
            f"the package's database is at schema version {schema}, newer than this sidecar supports "
            f"({latest_schema}); upgrade IAT Toolkit to import it",
            details={"database_version": schema, "supported_version": latest_schema})
    project = manifest.get("project")
    if not (isinstance(project, dict) and all(isinstance(project.get(k), str) and project[k]
                                              for k in ("id", "slug", "name"))):
        raise refuse("bad_manifest", "manifest.json names no project (id, slug, name)")
    files = manifest.get("files")
    if not isinstance(files, list):
        raise refuse("bad_manifest", "manifest.json lists no files")
    seen: set[str] = set()
    for entry in files:
        if not (isinstance(entry, dict) and isinstance(entry.get("path"), str)
                and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])
                and isinstance(entry.get("size"), int) and entry["size"] >= 0):
            raise refuse("bad_manifest", f"manifest.json has a malformed file entry: {str(entry)[:200]}")
        check_name(entry["path"])
        if entry["path"] in seen or entry["path"] == MANIFEST:
            raise refuse("bad_manifest", f"manifest.json lists {entry['path']!r} twice", entry=entry["path"])
        seen.add(entry["path"])
    if DB_FILE not in seen:
        raise refuse("bad_manifest", f"manifest.json does not list {DB_FILE}")
    return manifest


def verify(manifest: dict, found: dict[str, tuple[str, int]]) -> None:
    """Refuses unless the files found in the package (path -> (sha256, size), manifest.json aside) are exactly
    those the manifest lists, byte for byte."""
    listed = {e["path"]: (e["sha256"], e["size"]) for e in manifest["files"]}
    unlisted = sorted(set(found) - set(listed))
    missing = sorted(set(listed) - set(found))
    if unlisted:
        raise refuse("unlisted_file", f"the package holds {len(unlisted)} file(s) its manifest does not list, "
                     f"e.g. {unlisted[0]!r}", entries=unlisted[:20])
    if missing:
        raise refuse("missing_file", f"the package lacks {len(missing)} file(s) its manifest lists, "
                     f"e.g. {missing[0]!r}", entries=missing[:20])
    wrong = sorted(path for path, got in found.items() if got != listed[path])
    if wrong:
        raise refuse("hash_mismatch", f"{len(wrong)} file(s) differ from the manifest's sha256 or size, "
                     f"e.g. {wrong[0]!r}", entries=wrong[:20])
