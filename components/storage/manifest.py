"""A published version's manifest: every file's size and CRC32C, written last (the commit
marker) and checked by every reader."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import google_crc32c

from kfp_serve.components.errors import UserError

MANIFEST = "_kfp_serve_manifest.json"
CLAIM = "_kfp_serve_claim.json"
#: a version folder's name: ``v<N>``
VERSION_NAME = re.compile(r"^v(\d+)$")


def crc32c_of(path: Path) -> str:
    """Base64 CRC32C of a file, as GCS reports it in ``Blob.crc32c``."""
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(4 * 1024 * 1024), b""):
            checksum.update(block)
    return base64.b64encode(checksum.digest()).decode()


def build_manifest(source: Path) -> dict[str, Any]:
    """``{"files": {relative path: {"size", "crc32c"}}}`` of every file under ``source``."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    if not files:
        raise UserError(f"{source} holds no files; pass a built repository or archive")
    if any(p.name == MANIFEST for p in files):
        raise UserError(f"{source} already contains {MANIFEST}; publish the built folder, not a"
                        " published version")
    return {"files": {p.relative_to(source).as_posix(): {"size": p.stat().st_size,
                                                         "crc32c": crc32c_of(p)} for p in files}}


def parse_manifest(text: str | None, uri: str) -> dict:
    """The manifest, checked: a JSON object whose ``files`` maps relative names (no ``..``, not
    absolute) to ``{"size", "crc32c"}``; anything else is a one-line error, not a KeyError."""
    if text is None:
        raise UserError(f"{uri} is not a committed kfp-serve version (no {MANIFEST}); it may be"
                        " a publish that was interrupted — publish again and use its output URI")
    try:
        manifest = json.loads(text)
    except ValueError as err:
        raise UserError(f"{uri}/{MANIFEST} is not JSON ({err}); the version is damaged") from err
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        raise UserError(f"{uri}/{MANIFEST} lists no files; the version is damaged")
    for name, info in files.items():
        parts = PurePosixPath(name).parts
        if (not isinstance(name, str) or not name or name.startswith("/") or "\\" in name
                or ".." in parts or (parts and parts[0].endswith(":"))):
            raise UserError(f"{uri}/{MANIFEST} names {name!r}, which is not a path inside the"
                            " version; refusing to fetch it")
        if not isinstance(info, dict) or "crc32c" not in info:
            raise UserError(f"{uri}/{MANIFEST}: entry {name!r} has no crc32c; the version is damaged")
    return manifest


def inside(target: Path, name: str) -> Path:
    """``target/name``, refusing any path that resolves outside ``target`` (symlinks included)."""
    root = target.resolve()
    path = (target / name).resolve()
    if not path.is_relative_to(root):
        raise UserError(f"{name!r} resolves outside {target}; refusing to write it")
    return path


def manifest_text(manifest: dict[str, Any]) -> str:
    """The manifest as it is stored."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"
