"""Versions on Google Cloud Storage: a create-only claim object takes a number, parallel
create-only uploads (google-cloud-storage's ``transfer_manager``), every object's size and
CRC32C checked, and the manifest written last, create-only.

A file of 256 MiB or more is uploaded as up to 32 parts in parallel and composed into one object
server-side (a parallel composite upload, as ``gcloud storage`` does); its parts are deleted
after compose. We compose rather than use the library's XML multipart upload so that the same
code runs against fake-gcs-server, which has no XML API. Every GCS error is translated here.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kfp_serve.components.errors import InfrastructureError, UserError, first_line
from kfp_serve.components.storage.manifest import CLAIM, MANIFEST, VERSION_NAME, manifest_text
from kfp_serve.components.storage.progress import CountingFile, UploadProgress
from kfp_serve.components.storage.retries import OutageRetry
from kfp_serve.components.storage.uris import GcsUri

#: seconds per GCS request (google-cloud-storage retries transient errors of idempotent and
#: create-only requests with backoff on its own: DEFAULT_RETRY / ConditionalRetryPolicy)
GCS_TIMEOUT_S = 120
COMPOSITE_MIN_BYTES = 256 * 1024 * 1024
MAX_COMPOSE_SOURCES = 32  # one compose request takes at most 32 source objects
PARTS_DIR = "_parts"


def storage_client():
    """A client for real GCS (application-default credentials) or ``$STORAGE_EMULATOR_HOST``."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="local", credentials=AnonymousCredentials())
    try:
        return storage.Client()
    except Exception as err:  # google.auth.exceptions.DefaultCredentialsError and friends
        raise UserError(
            f"no Google Cloud credentials for GCS ({first_line(err)}); run `gcloud auth"
            " application-default login`, use a workload identity, or publish to a local folder"
        ) from err


def split_parts(size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of the parts of a composite upload: at most 32, at least 32 MiB
    each (the last may be shorter), aligned to 256 KiB."""
    align = 256 * 1024
    part = max(32 * 1024 * 1024, -(-size // MAX_COMPOSE_SOURCES))
    part = -(-part // align) * align
    return [(offset, min(part, size - offset)) for offset in range(0, size, part)]


class GcsStore:
    """The ``v<N>/`` prefixes under ``root`` in one bucket."""

    def __init__(self, root: GcsUri, workers: int = 8, progress: bool | None = None):
        from google.api_core import exceptions as gexc

        self.root, self.where, self.workers, self.progress = root, str(root), workers, progress
        self.outage = OutageRetry()
        self.retry = self.outage.policy  # every request below rides out an outage the same way
        self.meter: UploadProgress | None = None
        self.client = storage_client()
        try:
            bucket = self.client.lookup_bucket(root.bucket, timeout=GCS_TIMEOUT_S, retry=self.retry)
        except gexc.Forbidden:
            bucket = self.client.bucket(root.bucket)  # may write objects without seeing the bucket
        except (gexc.GoogleAPIError, *self.outage.transient) as err:
            raise self._translate(err) from err
        if bucket is None:
            raise UserError(f"bucket {root.bucket!r} does not exist; create it (gcloud storage buckets"
                            f" create gs://{root.bucket}) or fix the destination {root}")
        self.bucket = bucket

    def uri(self, number: int) -> str:
        return str(self.root.child(f"v{number}"))

    def _prefix(self, number: int) -> str:
        return self.root.child(f"v{number}").prefix

    @contextmanager
    def _boundary(self) -> Iterator[None]:
        """Every GCS error of a step of the publish, translated here."""
        from google.api_core import exceptions as gexc

        try:
            yield
        except (gexc.GoogleAPIError, *self.outage.transient) as err:
            raise self._translate(err) from err

    def _translate(self, err: Exception) -> Exception:
        from google.api_core import exceptions as gexc

        uri = self.root
        done = f"; {self.meter.summary()}" if self.meter is not None else ""
        outage = self.outage.failure(err, f"nothing was committed under {uri}{done}")
        if outage is not None:
            return outage
        if isinstance(err, gexc.NotFound):
            return UserError(f"bucket {uri.bucket!r} does not exist or is not visible to these"
                             f" credentials; create it or fix the destination {uri}")
        if isinstance(err, gexc.Forbidden):
            return UserError(f"permission denied on {uri}: the pipeline's service account needs"
                             f" roles/storage.objectCreator and objectViewer ({first_line(err)})")
        if isinstance(err, gexc.PreconditionFailed):
            return UserError(f"an object under {uri} already exists (a concurrent publish took this"
                             " version?); rerun to take the next version")
        return InfrastructureError(f"GCS request for {uri} failed: {first_line(err)}")

    def versions(self) -> dict[int, bool]:
        """version -> committed, from the ``v<N>/`` prefixes and their manifests."""
        prefix = f"{self.root.prefix}/" if self.root.prefix else ""
        found: dict[int, bool] = {}
        with self._boundary():
            for blob in self.client.list_blobs(self.root.bucket, prefix=prefix,
                                               timeout=GCS_TIMEOUT_S, retry=self.retry):
                head, _, rest = blob.name[len(prefix):].partition("/")
                match = VERSION_NAME.match(head)
                if match and rest:
                    number = int(match.group(1))
                    found[number] = found.get(number, False) or rest == MANIFEST
        return found

    def claim(self, number: int) -> bool:
        """Create ``v<N>/_kfp_serve_claim.json`` create-only: True when this call made it (the
        first publisher to create it owns ``v<N>``)."""
        from google.api_core import exceptions as gexc

        claim = json.dumps({"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
                            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        with self._boundary():
            try:
                self.bucket.blob(f"{self._prefix(number)}/{CLAIM}").upload_from_string(
                    claim, content_type="application/json", if_generation_match=0,
                    timeout=GCS_TIMEOUT_S, retry=self.retry)
                return True
            except gexc.PreconditionFailed:
                return False

    def committed(self, number: int) -> bool:
        with self._boundary():
            return self.bucket.blob(f"{self._prefix(number)}/{MANIFEST}").exists(
                timeout=GCS_TIMEOUT_S, retry=self.retry)

    def upload(self, number: int, source: Path, manifest: dict) -> None:
        """Every file create-only, in parallel; big ones as composed parts."""
        from google.cloud.storage import transfer_manager

        prefix = self._prefix(number)
        total = sum(f["size"] for f in manifest["files"].values())
        with self._boundary():
            meter = self.meter = UploadProgress(total, self.progress)
            pairs, composites = [], {}
            for name, info in sorted(manifest["files"].items()):
                if info["size"] < COMPOSITE_MIN_BYTES:
                    pairs.append((meter.wrap(source / name), self.bucket.blob(f"{prefix}/{name}")))
                    continue
                parts = []
                for k, (offset, length) in enumerate(split_parts(info["size"])):
                    part = self.bucket.blob(f"{prefix}/{PARTS_DIR}/{name}/{k:02d}")
                    pairs.append((meter.wrap(source / name, offset, length), part))
                    parts.append(part)
                composites[name] = parts
            try:
                results = transfer_manager.upload_many(
                    pairs, upload_kwargs={"if_generation_match": 0, "timeout": GCS_TIMEOUT_S,
                                          "retry": self.retry},
                    raise_exception=False,
                    worker_type=transfer_manager.THREAD, max_workers=self.workers,
                )
            finally:
                meter.close()
                for handle, _ in pairs:
                    handle.close()
            for (handle, blob), result in zip(pairs, results):
                if isinstance(result, Exception) and not _ours_already(result, blob, handle,
                                                                       self.retry):
                    raise result
            for name, parts in composites.items():
                self.bucket.blob(f"{prefix}/{name}").compose(parts, if_generation_match=0,
                                                             timeout=GCS_TIMEOUT_S, retry=self.retry)
                for part in parts:
                    part.delete(timeout=GCS_TIMEOUT_S, retry=self.retry)

    def verify(self, number: int, manifest: dict) -> None:
        """Every object is there with the local file's size and CRC32C (before committing)."""
        target = self.root.child(f"v{number}")
        with self._boundary():
            seen = {b.name[len(target.prefix) + 1:]: b for b in self.client.list_blobs(
                target.bucket, prefix=f"{target.prefix}/", timeout=GCS_TIMEOUT_S, retry=self.retry)}
        for name, info in manifest["files"].items():
            blob = seen.get(name)
            if blob is None or blob.size != info["size"] or blob.crc32c != info["crc32c"]:
                got = "missing" if blob is None else f"size {blob.size}, crc32c {blob.crc32c}"
                raise InfrastructureError(
                    f"{target}/{name} does not match the local file ({got}); nothing was committed,"
                    " rerun the publish"
                )

    def commit(self, number: int, manifest: dict) -> None:
        with self._boundary():
            self.bucket.blob(f"{self._prefix(number)}/{MANIFEST}").upload_from_string(
                manifest_text(manifest), content_type="application/json", if_generation_match=0,
                timeout=GCS_TIMEOUT_S, retry=self.retry)


def _ours_already(error: Exception, blob, handle: CountingFile, retry) -> bool:
    """A create-only upload retried after a lost response answers 412 although the first try
    wrote the object: that object is ours when it holds exactly our bytes (same CRC32C)."""
    from google.api_core import exceptions as gexc

    if not isinstance(error, gexc.PreconditionFailed):
        return False
    try:
        blob.reload(timeout=GCS_TIMEOUT_S, retry=retry)
    except gexc.GoogleAPICallError:
        return False
    return blob.crc32c == handle.crc32c()
