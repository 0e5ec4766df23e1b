"""What a serving platform copies from a ``gs://`` URI: every object under the prefix, unchecked.

After KServe's storage initializer, ``Storage._download_gcs`` in
python/storage/kserve_storage/kserve_storage.py (kserve/kserve at aaac4e29): it lists the blobs
under ``<path>/``, downloads each to the same relative path (objects ending in ``/`` skipped), a
URI naming one object downloads that object, and no object at all is
``RuntimeError("Failed to fetch model. No model found in <uri>.")``. Nothing is verified: a
half-published version, its claim and its manifest are copied as they are, and a model server
meets whatever arrived. (Its allow/ignore patterns and the unpacking of a lone .tar/.zip are not
modelled: the suite publishes folders.) Vertex AI's Triton and TorchServe containers read the
artifact folder the same way.
"""

from __future__ import annotations

from pathlib import Path


class NoModelFound(RuntimeError):
    pass


def copy_prefix(uri: str, out_dir: Path) -> Path:
    """Download every object under ``uri`` into ``out_dir``, as the storage initializer does."""
    from google.cloud import storage

    from kfp_serve.components.storage.gcs_store import storage_client

    if not uri.startswith("gs://"):
        raise NoModelFound(f"Cannot recognize storage type for {uri}")
    client: storage.Client = storage_client()
    bucket_name, _, path = uri[len("gs://"):].partition("/")
    bucket = client.bucket(bucket_name)
    prefix = path if path.endswith("/") else path + "/"
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    blobs = list(bucket.list_blobs(prefix=prefix))
    if not blobs and path and bucket.blob(path).exists():
        bucket.blob(path).download_to_filename(str(out_dir / Path(path).name))
        count = 1
    for blob in blobs:
        relative = blob.name.replace(path, "", 1).lstrip("/")
        if not relative.strip() or relative.endswith("/"):
            continue
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target))
        count += 1
    if count == 0:
        raise NoModelFound(f"Failed to fetch model. No model found in {uri}.")
    return out_dir
