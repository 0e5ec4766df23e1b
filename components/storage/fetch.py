"""Read a published version back, checked: only a committed version, every file's CRC32C.

Stricter than a serving runtime's reader: KServe's storage initializer copies every object under
the URI prefix and checks nothing (``kserve_storage.Storage._download_gcs``), so a half-published
or damaged version reaches its model server; the local runtime and the packer refuse it here.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
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
            if _changed_at_source(uri, name, info["crc32c"]):
                raise UserError(f"{uri}/{name} no longer matches the version's manifest: the"
                                " committed version was changed in storage, and no retry can"
                                " mend it; publish the model again and deploy the new version")
            raise InfrastructureError(f"{uri}/{name} arrived damaged or incomplete (the stored"
                                      " object is intact); retry")
    (target / MANIFEST).unlink(missing_ok=True)  # the manifest belongs to storage, not the model
    return target


def _changed_at_source(uri: str, name: str, crc32c: str) -> bool:
    """Whether the stored file itself differs from the manifest (not only our copy of it)."""
    if not is_gcs(uri):
        stored = inside(local_path(uri), name)
        return not stored.is_file() or crc32c_of(stored) != crc32c
    location = parse_gcs_uri(uri)
    blob = storage_client().bucket(location.bucket).get_blob(f"{location.prefix}/{name}",
                                                             timeout=GCS_TIMEOUT_S)
    return blob is None or blob.crc32c != crc32c


def _fetch_gcs(uri: str, target: Path, workers: int) -> dict:
    location = parse_gcs_uri(uri)
    bucket = storage_client().bucket(location.bucket)
    outage = OutageRetry()
    with _reading(uri, outage, "is missing objects or its bucket"):
        marker = bucket.blob(f"{location.prefix}/{MANIFEST}")
        manifest = parse_manifest(
            marker.download_as_text(timeout=GCS_TIMEOUT_S, retry=outage.policy)
            if marker.exists(timeout=GCS_TIMEOUT_S, retry=outage.policy) else None, uri)
        blobs = [bucket.blob(f"{location.prefix}/{name}") for name in sorted(manifest["files"])]
        _download(uri, blobs, f"{location.prefix}/", target, workers, outage)
    return manifest


@contextmanager
def _reading(uri: str, outage: OutageRetry, missing: str) -> Iterator[None]:
    """GCS errors while reading ``uri``, in one line: a missing object or bucket is the input's."""
    from google.api_core import exceptions as gexc

    try:
        yield
    except gexc.NotFound as err:
        raise UserError(f"{uri} {missing}: {first_line(err)}") from err
    except (gexc.GoogleAPIError, *outage.transient) as err:
        raise (outage.failure(err, f"{uri} was not read") or
               InfrastructureError(f"reading {uri} failed: {first_line(err)}")) from err


def _download(uri: str, blobs: list, prefix: str, target: Path, workers: int,
              outage: OutageRetry) -> None:
    """Every blob into ``target`` at its name below ``prefix``, in parallel."""
    from google.cloud.storage import transfer_manager

    pairs = []
    for blob in blobs:
        path = inside(target, blob.name[len(prefix):])
        path.parent.mkdir(parents=True, exist_ok=True)
        pairs.append((blob, str(path)))
    results = transfer_manager.download_many(
        pairs, download_kwargs={"timeout": GCS_TIMEOUT_S, "retry": outage.policy},
        raise_exception=True, worker_type=transfer_manager.THREAD, max_workers=workers)
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise InfrastructureError(f"reading {uri} failed: {first_line(failed[0])}")


def local_folder(artifact) -> str:
    """The folder an input artifact's files are in: its ``path``, or, for a ``gs://`` artifact
    where KFP's ``/gcs/`` mount does not exist (``kfp-serve run``, with ``--gcs-emulator`` or
    credentials), a copy of every object under its URI (as KServe's storage initializer copies
    them: what the user saved with ``save_torch_model`` has no manifest to check)."""
    path = Path(artifact.path)
    if path.exists() or not is_gcs(getattr(artifact, "uri", "") or ""):
        return str(path)
    import atexit
    import tempfile

    target = Path(tempfile.mkdtemp(prefix="kfp-serve-input-"))
    atexit.register(shutil.rmtree, target, True)  # the step's copy goes when the step does
    copy_prefix(artifact.uri, target)
    return str(target)


def copy_prefix(uri: str, target: Path, workers: int = 8) -> Path:
    """Copy every object under ``uri`` (a folder's worth) into ``target``."""
    location = parse_gcs_uri(uri)
    outage = OutageRetry()
    prefix = f"{location.prefix}/" if location.prefix else ""
    with _reading(uri, outage, "cannot be read: the bucket does not exist"):
        blobs = [b for b in storage_client().list_blobs(
            location.bucket, prefix=prefix, timeout=GCS_TIMEOUT_S, retry=outage.policy)
            if not b.name.endswith("/")]
        if not blobs:
            raise UserError(f"{uri} holds no objects; pass the gs:// folder the model was saved to")
        _download(uri, blobs, prefix, target, workers, outage)
    return target
