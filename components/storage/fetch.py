"""Read a published version back: the way a serving runtime's storage initializer does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath

from kfp_serve.components.errors import InfrastructureError, UserError, first_line
from kfp_serve.components.storage.publish import GCS_TIMEOUT_S, MANIFEST, crc32c_of, storage_client
from kfp_serve.components.storage.uris import is_gcs, local_path, parse_gcs_uri


def fetch_version(uri: str, destination: str | Path, workers: int = 8) -> Path:
    """Copy the committed version at ``uri`` into ``destination`` and check every CRC32C.

    Refuses an uncommitted (half-published) version: it has no manifest.
    """
    target = Path(destination)
    if not is_gcs(uri):
        source = local_path(uri)
        manifest = _load_manifest((source / MANIFEST).read_text() if (source / MANIFEST).is_file()
                                  else None, uri)
        target.mkdir(parents=True, exist_ok=True)
        for name in manifest["files"]:  # only what the manifest names, each inside the target
            path = _inside(target, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(_inside(source, name), path)
    else:
        manifest = _fetch_gcs(uri, target, workers)
    for name, info in manifest["files"].items():
        path = _inside(target, name)
        if not path.is_file() or crc32c_of(path) != info["crc32c"]:
            raise InfrastructureError(f"{uri}/{name} arrived damaged or incomplete; retry")
    (target / MANIFEST).unlink(missing_ok=True)  # the manifest belongs to storage, not the model
    return target


def _load_manifest(text: str | None, uri: str) -> dict:
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


def _inside(target: Path, name: str) -> Path:
    """``target/name``, refusing any path that resolves outside ``target`` (symlinks included)."""
    root = target.resolve()
    path = (target / name).resolve()
    if not path.is_relative_to(root):
        raise UserError(f"{name!r} resolves outside {target}; refusing to write it")
    return path


def _fetch_gcs(uri: str, target: Path, workers: int) -> dict:
    from google.api_core import exceptions as gexc
    from google.cloud.storage import transfer_manager

    location = parse_gcs_uri(uri)
    client = storage_client()
    bucket = client.bucket(location.bucket)
    try:
        marker = bucket.blob(f"{location.prefix}/{MANIFEST}")
        manifest = _load_manifest(marker.download_as_text(timeout=GCS_TIMEOUT_S)
                                  if marker.exists(timeout=GCS_TIMEOUT_S) else None, uri)
        names = sorted(manifest["files"])
        target.mkdir(parents=True, exist_ok=True)
        paths = {n: _inside(target, n) for n in names}
        for path in paths.values():
            path.parent.mkdir(parents=True, exist_ok=True)
        results = transfer_manager.download_many(
            [(bucket.blob(f"{location.prefix}/{n}"), str(paths[n])) for n in names],
            download_kwargs={"timeout": GCS_TIMEOUT_S}, raise_exception=True,
            worker_type=transfer_manager.THREAD, max_workers=workers,
        )
    except gexc.NotFound as err:
        raise UserError(f"{uri} is missing objects or its bucket: {first_line(err)}") from err
    except gexc.GoogleAPICallError as err:
        raise InfrastructureError(f"reading {uri} failed: {first_line(err)}") from err
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise InfrastructureError(f"reading {uri} failed: {first_line(failed[0])}")
    return manifest
