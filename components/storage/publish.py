"""Publish a built model folder as a new, immutable version under a destination.

Layout: ``<destination>/v<N>/<files>`` and, written last, ``<destination>/v<N>/_kfp_serve_manifest.json``
(file names, sizes, CRC32C). A version is *committed* — visible to readers — only once its
manifest exists, the way Hadoop/Spark jobs mark output with ``_SUCCESS``.

A publisher first **claims** its number: a create-only ``v<N>/_kfp_serve_claim.json`` on GCS
(``if_generation_match=0``), ``os.mkdir`` of ``v<N>`` locally. Only the claimer writes under
``v<N>/``; a publisher that loses the claim moves on to the next number (or, asked for that
number explicitly, is refused), so a committed version can never gain or lose an object. Every
object is written create-only too. A publish killed midway leaves a claimed, uncommitted version
that readers ignore; the next publish takes the next number.

GCS uploads use google-cloud-storage's ``transfer_manager`` (threads). A file of 256 MiB or
more is uploaded as up to 32 parts in parallel and composed into one object server-side (a
parallel composite upload, as ``gcloud storage`` does); its parts are deleted after compose.
We compose rather than use the library's XML multipart upload so that the same code runs
against fake-gcs-server, which has no XML API. Local destinations (the embedded default) are
staged in a sibling folder and renamed into place.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c

from kfp_serve.components.errors import InfrastructureError, UserError, first_line
from kfp_serve.components.storage.uris import GcsUri, is_gcs, local_path, parse_gcs_uri

MANIFEST = "_kfp_serve_manifest.json"
CLAIM = "_kfp_serve_claim.json"
MAX_CLAIM_TRIES = 50
#: seconds per GCS request (google-cloud-storage retries transient errors of idempotent and
#: create-only requests with backoff on its own: DEFAULT_RETRY / ConditionalRetryPolicy)
GCS_TIMEOUT_S = 120
_VERSION = re.compile(r"^v(\d+)$")
PROGRESS_MIN_BYTES = 64 * 1024 * 1024
COMPOSITE_MIN_BYTES = 256 * 1024 * 1024
MAX_COMPOSE_SOURCES = 32  # one compose request takes at most 32 source objects
PARTS_DIR = "_parts"


@dataclass(frozen=True)
class PublishResult:
    """The committed version and what it holds."""

    uri: str
    version: int
    files: int
    bytes: int
    seconds: float


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


def publish(source: str | Path, destination: str, version: int = 0, workers: int = 8,
            progress: bool | None = None) -> PublishResult:
    """Publish every file under ``source`` as version ``version`` (0: the next free number).

    Returns the committed version's URI (``gs://.../v<N>`` or a local folder), which deploy
    steps use as ``storageUri`` / ``artifact_uri``.
    """
    source = Path(source)
    if not source.is_dir():
        raise UserError(f"{source} is not a folder; pass a built repository or archive")
    if version < 0:
        raise UserError(f"version {version} must be >= 1, or 0 for the next free version")
    if workers < 1:
        raise UserError("workers must be >= 1")
    started = time.perf_counter()
    manifest = build_manifest(source)
    total = sum(f["size"] for f in manifest["files"].values())
    if is_gcs(destination):
        uri, number = _publish_gcs(source, parse_gcs_uri(destination), version, manifest, workers,
                                   total, progress)
    else:
        uri, number = _publish_local(source, local_path(destination), version, manifest)
    return PublishResult(uri, number, len(manifest["files"]), total, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# local folders


def _local_versions(root: Path) -> dict[int, bool]:
    """version -> committed, for every ``v<N>`` folder under ``root``."""
    found = {}
    if root.is_dir():
        for child in root.iterdir():
            match = _VERSION.match(child.name)
            if match and child.is_dir():
                found[int(match.group(1))] = (child / MANIFEST).is_file()
    return found


def _publish_local(source: Path, root: Path, version: int, manifest: dict) -> tuple[str, int]:
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(".v*-staging-*"):  # staging folders of killed runs (older releases)
        shutil.rmtree(leftover, ignore_errors=True)
    number, target = _claim_local(root, version)
    shutil.copytree(source, target, dirs_exist_ok=True)
    _verify_local(target, manifest)
    target.chmod(0o755)
    # the manifest appears whole (write, then rename): the version is committed at that instant
    staged = target / f".{MANIFEST}.{os.getpid()}"
    staged.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.rename(staged, target / MANIFEST)
    return str(target), number


def _claim_local(root: Path, version: int) -> tuple[int, Path]:
    """Create ``root/v<N>`` atomically (``os.mkdir`` fails if it exists): the claim."""
    for _ in range(MAX_CLAIM_TRIES):
        number = version or max(_local_versions(root), default=0) + 1
        target = root / f"v{number}"
        try:
            target.mkdir()
            return number, target
        except FileExistsError:
            if version:
                raise _claimed(version, str(root), (target / MANIFEST).is_file()) from None
    raise InfrastructureError(f"could not claim a version under {root} in {MAX_CLAIM_TRIES} tries"
                              " (many concurrent publishes?); rerun")


def _claimed(version: int, where: str, committed: bool) -> UserError:
    if committed:
        return UserError(f"version v{version} already exists at {where} and is never overwritten;"
                         " pass version=0 to publish the next free version")
    return UserError(f"version v{version} at {where} is claimed by another publish that has not"
                     " committed (running, or killed); pass version=0 for the next free version,"
                     f" or delete {where}/v{version} if that publish is dead")


def _verify_local(folder: Path, manifest: dict) -> None:
    for name, info in manifest["files"].items():
        copy = folder / name
        if copy.stat().st_size != info["size"] or crc32c_of(copy) != info["crc32c"]:
            raise InfrastructureError(f"{name} changed while it was copied; rerun the publish")


# ---------------------------------------------------------------------------------------------
# Google Cloud Storage


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


def _gcs_versions(client, uri: GcsUri) -> dict[int, bool]:
    """version -> committed, from the ``v<N>/`` prefixes and their manifests."""
    prefix = f"{uri.prefix}/" if uri.prefix else ""
    found: dict[int, bool] = {}
    for blob in client.list_blobs(uri.bucket, prefix=prefix, timeout=GCS_TIMEOUT_S):
        head, _, rest = blob.name[len(prefix):].partition("/")
        match = _VERSION.match(head)
        if match and rest:
            number = int(match.group(1))
            found[number] = found.get(number, False) or rest == MANIFEST
    return found


def _translate(err: Exception, uri: GcsUri) -> Exception:
    from google.api_core import exceptions as gexc

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


def _publish_gcs(source: Path, root: GcsUri, version: int, manifest: dict, workers: int,
                 total: int, progress: bool | None) -> tuple[str, int]:
    from google.api_core import exceptions as gexc
    from google.cloud.storage import transfer_manager

    client = storage_client()
    try:
        bucket = client.lookup_bucket(root.bucket, timeout=GCS_TIMEOUT_S)
    except gexc.Forbidden:
        bucket = client.bucket(root.bucket)  # may write objects without seeing the bucket
    except gexc.GoogleAPICallError as err:
        raise _translate(err, root) from err
    if bucket is None:
        raise UserError(f"bucket {root.bucket!r} does not exist; create it (gcloud storage buckets"
                        f" create gs://{root.bucket}) or fix the destination {root}")
    try:
        number, target = _claim_gcs(client, bucket, root, version)
        meter = _Progress(total, progress)
        pairs, composites = [], {}
        for name, info in sorted(manifest["files"].items()):
            if info["size"] < COMPOSITE_MIN_BYTES:
                pairs.append((meter.wrap(source / name), bucket.blob(f"{target.prefix}/{name}")))
                continue
            parts = []
            for k, (offset, length) in enumerate(split_parts(info["size"])):
                part = bucket.blob(f"{target.prefix}/{PARTS_DIR}/{name}/{k:02d}")
                pairs.append((meter.wrap(source / name, offset, length), part))
                parts.append(part)
            composites[name] = parts
        try:
            results = transfer_manager.upload_many(
                pairs, upload_kwargs={"if_generation_match": 0, "timeout": GCS_TIMEOUT_S},
                raise_exception=False,
                worker_type=transfer_manager.THREAD, max_workers=workers,
            )
        finally:
            meter.close()
            for handle, _ in pairs:
                handle.close()
        for (handle, blob), result in zip(pairs, results):
            if isinstance(result, Exception) and not _ours_already(result, blob, handle):
                raise result
        for name, parts in composites.items():
            bucket.blob(f"{target.prefix}/{name}").compose(parts, if_generation_match=0,
                                                           timeout=GCS_TIMEOUT_S)
            for part in parts:
                part.delete(timeout=GCS_TIMEOUT_S)
        _verify_gcs(client, target, manifest)
        marker = bucket.blob(f"{target.prefix}/{MANIFEST}")
        marker.upload_from_string(json.dumps(manifest, indent=2, sort_keys=True),
                                  content_type="application/json", if_generation_match=0,
                                  timeout=GCS_TIMEOUT_S)
    except gexc.GoogleAPICallError as err:
        raise _translate(err, root) from err
    return str(target), number


def _claim_gcs(client, bucket, root: GcsUri, version: int) -> tuple[int, GcsUri]:
    """Create ``v<N>/_kfp_serve_claim.json`` create-only: the first publisher to create it owns
    ``v<N>``; the others take the next number (or, with an explicit version, are refused)."""
    import socket
    import uuid

    from google.api_core import exceptions as gexc

    claim = json.dumps({"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    existing = _gcs_versions(client, root)
    for _ in range(MAX_CLAIM_TRIES):
        number = version or max(existing, default=0) + 1
        target = root.child(f"v{number}")
        try:
            bucket.blob(f"{target.prefix}/{CLAIM}").upload_from_string(
                claim, content_type="application/json", if_generation_match=0, timeout=GCS_TIMEOUT_S)
            return number, target
        except gexc.PreconditionFailed:
            if version:
                committed = bucket.blob(f"{target.prefix}/{MANIFEST}").exists(timeout=GCS_TIMEOUT_S)
                raise _claimed(version, str(root), committed) from None
            # someone claimed it since the listing (its objects may not be listed yet)
            existing = {**_gcs_versions(client, root), number: False}
    raise InfrastructureError(f"could not claim a version under {root} in {MAX_CLAIM_TRIES} tries"
                              " (many concurrent publishes?); rerun")


def _ours_already(error: Exception, blob, handle) -> bool:
    """A create-only upload retried after a lost response answers 412 although the first try
    wrote the object: that object is ours when it holds exactly our bytes (same CRC32C)."""
    from google.api_core import exceptions as gexc

    if not isinstance(error, gexc.PreconditionFailed):
        return False
    try:
        blob.reload(timeout=GCS_TIMEOUT_S)
    except gexc.GoogleAPICallError:
        return False
    return blob.crc32c == handle.crc32c()


def split_parts(size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of the parts of a composite upload: at most 32, at least 32 MiB
    each (the last may be shorter), aligned to 256 KiB."""
    align = 256 * 1024
    part = max(32 * 1024 * 1024, -(-size // MAX_COMPOSE_SOURCES))
    part = -(-part // align) * align
    return [(offset, min(part, size - offset)) for offset in range(0, size, part)]


def _verify_gcs(client, target: GcsUri, manifest: dict) -> None:
    """Every object is there with the local file's size and CRC32C (before committing)."""
    seen = {b.name[len(target.prefix) + 1:]: b for b in
            client.list_blobs(target.bucket, prefix=f"{target.prefix}/", timeout=GCS_TIMEOUT_S)}
    for name, info in manifest["files"].items():
        blob = seen.get(name)
        if blob is None or blob.size != info["size"] or blob.crc32c != info["crc32c"]:
            got = "missing" if blob is None else f"size {blob.size}, crc32c {blob.crc32c}"
            raise InfrastructureError(
                f"{target}/{name} does not match the local file ({got}); nothing was committed,"
                " rerun the publish"
            )


class _Progress:
    """Counts bytes read by the uploads; prints a progress line on a terminal for big uploads."""

    def __init__(self, total: int, enabled: bool | None):
        self.total = total
        self.done = 0
        self.lock = threading.Lock()
        self.enabled = (total >= PROGRESS_MIN_BYTES and sys.stderr.isatty()) if enabled is None else enabled
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._report, daemon=True) if self.enabled else None
        if self.thread:
            self.thread.start()

    def wrap(self, path: Path, offset: int = 0, length: int | None = None) -> _CountingFile:
        return _CountingFile(path, self, offset, length)

    def add(self, count: int) -> None:
        with self.lock:
            self.done += count

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = min(self.done, self.total)
        return (f"uploaded {done / 2**20:,.0f} / {self.total / 2**20:,.0f} MiB"
                f" ({100 * done / max(self.total, 1):.0f}%, {done / 2**20 / elapsed:,.0f} MiB/s)")

    def _report(self) -> None:
        while not self.stop.wait(1.0):
            print(f"\r{self._line()}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.thread:
            self.stop.set()
            self.thread.join()
            print(f"\r{self._line()}", file=sys.stderr, flush=True)


class _CountingFile:
    """A read-only view of ``length`` bytes of a file from ``offset`` (the whole file by default)
    that reports bytes read past its high-water mark to the progress meter (re-reads after a
    retry's seek are not counted twice)."""

    def __init__(self, path: Path, meter: _Progress, offset: int = 0, length: int | None = None):
        self.handle = open(path, "rb")  # noqa: SIM115 (closed by the caller)
        self.meter = meter
        self.name = str(path)
        self.start = offset
        self.length = path.stat().st_size - offset if length is None else length
        self.high = 0
        self.handle.seek(offset)

    def read(self, size: int = -1) -> bytes:
        left = self.length - self.tell()
        data = self.handle.read(left if size is None or size < 0 else min(size, left))
        position = self.tell()
        if position > self.high:
            self.meter.add(position - self.high)
            self.high = position
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.tell(), 2: self.length}[whence]
        self.handle.seek(self.start + min(max(base + offset, 0), self.length))
        return self.tell()

    def tell(self) -> int:
        return self.handle.tell() - self.start

    def crc32c(self) -> str:
        """Base64 CRC32C of this view's bytes (read afresh: works after close)."""
        checksum = google_crc32c.Checksum()
        with open(self.name, "rb") as handle:
            handle.seek(self.start)
            left = self.length
            while left > 0:
                block = handle.read(min(4 * 1024 * 1024, left))
                if not block:
                    break
                checksum.update(block)
                left -= len(block)
        return base64.b64encode(checksum.digest()).decode()

    def close(self) -> None:
        self.handle.close()
