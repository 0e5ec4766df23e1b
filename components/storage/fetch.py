"""Read a published version back: the way a serving runtime's storage initializer does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kfp_serve.components.errors import InfrastructureError, UserError, first_line
from kfp_serve.components.storage.publish import MANIFEST, crc32c_of, storage_client
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
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        manifest = _fetch_gcs(uri, target, workers)
    for name, info in manifest["files"].items():
        path = target / name
        if not path.is_file() or crc32c_of(path) != info["crc32c"]:
            raise InfrastructureError(f"{uri}/{name} arrived damaged or incomplete; retry")
    (target / MANIFEST).unlink(missing_ok=True)  # the manifest belongs to storage, not the model
    return target


def _load_manifest(text: str | None, uri: str) -> dict:
    if text is None:
        raise UserError(f"{uri} is not a committed kfp-serve version (no {MANIFEST}); it may be"
                        " a publish that was interrupted — publish again and use its output URI")
    return json.loads(text)


def _fetch_gcs(uri: str, target: Path, workers: int) -> dict:
    from google.api_core import exceptions as gexc
    from google.cloud.storage import transfer_manager

    location = parse_gcs_uri(uri)
    client = storage_client()
    bucket = client.bucket(location.bucket)
    try:
        marker = bucket.blob(f"{location.prefix}/{MANIFEST}")
        manifest = _load_manifest(marker.download_as_text() if marker.exists() else None, uri)
        names = sorted(manifest["files"])
        for name in names:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
        results = transfer_manager.download_many(
            [(bucket.blob(f"{location.prefix}/{n}"), str(target / n)) for n in names],
            raise_exception=True, worker_type=transfer_manager.THREAD, max_workers=workers,
        )
    except gexc.NotFound as err:
        raise UserError(f"{uri} is missing objects or its bucket: {first_line(err)}") from err
    except gexc.GoogleAPICallError as err:
        raise InfrastructureError(f"reading {uri} failed: {first_line(err)}") from err
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise InfrastructureError(f"reading {uri} failed: {first_line(failed[0])}")
    return manifest
