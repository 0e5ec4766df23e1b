"""Read a published version back, checked: only a committed version, every file's CRC32C.

Stricter than a serving runtime's reader: KServe's storage initializer copies every object under
the URI prefix and checks nothing (``kserve_storage.Storage._download_gcs``), so a half-published
or damaged version reaches its model server; the local runtime and the packer refuse it here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kfp_serve.components.errors import InfrastructureError, UserError, first_line
from kfp_serve.components.storage.gcs_store import GCS_TIMEOUT_S, storage_client
from kfp_serve.components.storage.manifest import MANIFEST, crc32c_of, inside, parse_manifest
from kfp_serve.components.storage.retries import OutageRetry
from kfp_serve.components.storage.uris import is_gcs, local_path, parse_gcs_uri


def fetch_version(uri: str, destination: str | Path, workers: int = 8) -> Path:
    """Copy the committed version at ``uri`` into ``destination`` and check every CRC32C.

    Refuses an uncommitted (half-published) version: it has no manifest.
    """
    target = Path(destination)
    if not is_gcs(uri):
        source = local_path(uri)
        manifest = parse_manifest((source / MANIFEST).read_text() if (source / MANIFEST).is_file()
                                  else None, uri)
        target.mkdir(parents=True, exist_ok=True)
        for name in manifest["files"]:  # only what the manifest names, each inside the target
            path = inside(target, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(inside(source, name), path)
    else:
        manifest = _fetch_gcs(uri, target, workers)
    for name, info in manifest["files"].items():
        path = inside(target, name)
        if not path.is_file() or crc32c_of(path) != info["crc32c"]:
            raise InfrastructureError(f"{uri}/{name} arrived damaged or incomplete; retry")
    (target / MANIFEST).unlink(missing_ok=True)  # the manifest belongs to storage, not the model
    return target


def _fetch_gcs(uri: str, target: Path, workers: int) -> dict:
    from google.api_core import exceptions as gexc
    from google.cloud.storage import transfer_manager

    location = parse_gcs_uri(uri)
    client = storage_client()
    bucket = client.bucket(location.bucket)
    outage = OutageRetry()
    retry = outage.policy
    try:
        marker = bucket.blob(f"{location.prefix}/{MANIFEST}")
        manifest = parse_manifest(marker.download_as_text(timeout=GCS_TIMEOUT_S, retry=retry)
                                  if marker.exists(timeout=GCS_TIMEOUT_S, retry=retry) else None,
                                  uri)
        names = sorted(manifest["files"])
        target.mkdir(parents=True, exist_ok=True)
        paths = {n: inside(target, n) for n in names}
        for path in paths.values():
            path.parent.mkdir(parents=True, exist_ok=True)
        results = transfer_manager.download_many(
            [(bucket.blob(f"{location.prefix}/{n}"), str(paths[n])) for n in names],
            download_kwargs={"timeout": GCS_TIMEOUT_S, "retry": retry}, raise_exception=True,
            worker_type=transfer_manager.THREAD, max_workers=workers,
        )
    except gexc.NotFound as err:
        raise UserError(f"{uri} is missing objects or its bucket: {first_line(err)}") from err
    except (gexc.GoogleAPIError, *outage.transient) as err:
        raise (outage.failure(err, f"{uri} was not read") or
               InfrastructureError(f"reading {uri} failed: {first_line(err)}")) from err
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise InfrastructureError(f"reading {uri} failed: {first_line(failed[0])}")
    return manifest
