"""Publish a built model folder as a new, immutable version under a destination.

Layout: ``<destination>/v<N>/<files>`` and, written last, ``<destination>/v<N>/_kfp_serve_manifest.json``
(file names, sizes, CRC32C). A version is *committed* — visible to readers — only once its
manifest exists, the way Hadoop/Spark jobs mark output with ``_SUCCESS``.

One protocol, written once here, behind two stores (:class:`~.local_store.LocalStore`,
:class:`~.gcs_store.GcsStore`): **claim** a number (a create-only ``v<N>/_kfp_serve_claim.json``
on GCS, ``os.mkdir`` of ``v<N>`` locally), **upload** every file create-only, **verify** every
copy's size and CRC32C, **commit** by writing the manifest. Only the claimer writes under
``v<N>/``; a publisher that loses the claim moves on to the next number (or, asked for that
number explicitly, is refused), so a committed version can never gain or lose an object. A
publish killed midway leaves a claimed, uncommitted version that readers ignore; the next
publish takes the next number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.storage.manifest import build_manifest
from kfp_serve.components.storage.uris import is_gcs, local_path, parse_gcs_uri

MAX_CLAIM_TRIES = 50


class VersionStore(Protocol):
    """Where versions live: the steps of the publish protocol, each create-only."""

    where: str  # the destination, as messages name it

    def uri(self, number: int) -> str: ...

    def versions(self) -> dict[int, bool]:
        """version -> committed."""
        ...

    def claim(self, number: int) -> bool:
        """Take ``v<N>``; False when another publish holds it."""
        ...

    def committed(self, number: int) -> bool: ...

    def upload(self, number: int, source: Path, manifest: dict) -> None: ...

    def verify(self, number: int, manifest: dict) -> None:
        """Every stored file matches the manifest (InfrastructureError otherwise)."""
        ...

    def commit(self, number: int, manifest: dict) -> None:
        """Write the manifest: from then on readers see the version."""
        ...


@dataclass(frozen=True)
class PublishResult:
    """The committed version and what it holds."""

    uri: str
    version: int
    files: int
    bytes: int
    seconds: float


def open_store(destination: str, workers: int = 8, progress: bool | None = None) -> VersionStore:
    """The store a destination names: ``gs://BUCKET/PATH`` or a local folder."""
    if is_gcs(destination):
        from kfp_serve.components.storage.gcs_store import GcsStore

        return GcsStore(parse_gcs_uri(destination), workers, progress)
    from kfp_serve.components.storage.local_store import LocalStore

    return LocalStore(local_path(destination))


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
    store = open_store(destination, workers, progress)
    number = claim_version(store, version)
    store.upload(number, source, manifest)
    store.verify(number, manifest)
    store.commit(number, manifest)
    return PublishResult(store.uri(number), number, len(manifest["files"]), total,
                         time.perf_counter() - started)


def claim_version(store: VersionStore, version: int) -> int:
    """Claim ``version``, or (0) the next free number: a number another publish takes between
    the listing and the claim is skipped."""
    existing = store.versions()
    for _ in range(MAX_CLAIM_TRIES):
        number = version or max(existing, default=0) + 1
        if store.claim(number):
            return number
        if version:
            raise _claimed(version, store.where, store.committed(version))
        # someone claimed it since the listing (its objects may not be listed yet)
        existing = {**store.versions(), number: False}
    raise InfrastructureError(f"could not claim a version under {store.where} in {MAX_CLAIM_TRIES}"
                              " tries (many concurrent publishes?); rerun")


def _claimed(version: int, where: str, committed: bool) -> UserError:
    if committed:
        return UserError(f"version v{version} already exists at {where} and is never overwritten;"
                         " pass version=0 to publish the next free version")
    return UserError(f"version v{version} at {where} is claimed by another publish that has not"
                     " committed (running, or killed); pass version=0 for the next free version,"
                     f" or delete {where}/v{version} if that publish is dead")
