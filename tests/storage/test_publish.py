"""Versioned, atomic publishing against a real GCS API server (fake-gcs-server) and folders."""

import os
import signal
import subprocess
import sys
import time

import pytest

from kfp_serve.components.errors import UserError
from kfp_serve.components.storage.fetch import fetch_version
from kfp_serve.components.storage.gcs_store import GcsStore, storage_client
from kfp_serve.components.storage.local_store import LocalStore
from kfp_serve.components.storage.manifest import MANIFEST
from kfp_serve.components.storage.publish import publish
from kfp_serve.components.storage.uris import parse_gcs_uri


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_each_publish_is_a_new_committed_version(digits_repository, bucket, tmp_path):
    first = publish(digits_repository, f"gs://{bucket}/digits")
    second = publish(digits_repository, f"gs://{bucket}/digits")
    assert (first.uri, second.uri) == (f"gs://{bucket}/digits/v1", f"gs://{bucket}/digits/v2")
    assert first.files == 2 and first.bytes > 100_000
    client = storage_client()
    names = sorted(b.name for b in client.list_blobs(bucket, prefix="digits/v1/"))
    assert names == ["digits/v1/_kfp_serve_claim.json", "digits/v1/_kfp_serve_manifest.json",
                     "digits/v1/digits/1/model.onnx", "digits/v1/digits/config.pbtxt"]
    fetched = fetch_version(second.uri, tmp_path / "copy")
    assert _tree(fetched) == _tree(digits_repository)  # byte for byte, manifest removed


def test_an_existing_version_is_never_overwritten(digits_repository, bucket):
    publish(digits_repository, f"gs://{bucket}/m", version=3)
    with pytest.raises(UserError, match=f"version v3 already exists at gs://{bucket}/m and is never overwritten"):
        publish(digits_repository, f"gs://{bucket}/m", version=3)
    assert publish(digits_repository, f"gs://{bucket}/m").version == 4


def test_missing_bucket_and_bad_destinations(digits_repository, gcs, tmp_path):
    with pytest.raises(UserError, match="bucket 'no-such-bucket-x' does not exist; create it"):
        publish(digits_repository, "gs://no-such-bucket-x/models")
    with pytest.raises(UserError, match="'s3://b/x' is neither gs:// nor a local path"):
        publish(digits_repository, "s3://b/x")
    with pytest.raises(UserError, match="'B_UPPER' in 'gs://B_UPPER/x' is not a valid bucket name"):
        publish(digits_repository, "gs://B_UPPER/x")
    with pytest.raises(UserError, match="holds no files"):
        (tmp_path / "empty").mkdir()
        publish(tmp_path / "empty", str(tmp_path / "out"))


def test_local_folders_are_versioned_and_atomic_too(digits_repository, tmp_path):
    first = publish(digits_repository, str(tmp_path / "store"))
    second = publish(digits_repository, f"file://{tmp_path / 'store'}")
    assert [first.version, second.version] == [1, 2]
    assert (tmp_path / "store" / "v2" / MANIFEST).is_file()
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".")]
    assert _tree(fetch_version(first.uri, tmp_path / "copy")) == _tree(digits_repository)


def test_a_killed_publish_is_invisible_and_a_rerun_succeeds(bucket, tmp_path):
    source = tmp_path / "big"
    source.mkdir()
    for i in range(24):
        (source / f"part-{i:02d}.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    code = (f"from kfp_serve.components.storage.publish import publish\n"
            f"publish({str(source)!r}, 'gs://{bucket}/big', workers=1)\n")
    worker = subprocess.Popen([sys.executable, "-c", code])
    client = storage_client()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(client.list_blobs(bucket, prefix="big/v1/")):
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)  # midway: some objects written, no manifest
    worker.wait()
    uploaded = [b.name for b in client.list_blobs(bucket, prefix="big/v1/")]
    assert uploaded and f"big/v1/{MANIFEST}" not in uploaded and len(uploaded) < 24
    assert GcsStore(parse_gcs_uri(f"gs://{bucket}/big")).versions() == {1: False}
    with pytest.raises(UserError, match=f"gs://{bucket}/big/v1 is not a committed kfp-serve version"):
        fetch_version(f"gs://{bucket}/big/v1", tmp_path / "reader")
    rerun = publish(source, f"gs://{bucket}/big")
    assert rerun.version == 2 and rerun.files == 24
    # the killed publish still holds its claim on v1: asked for explicitly, it is refused
    with pytest.raises(UserError, match=r"version v1 at gs://.*/big is claimed by another publish"
                                        r" that has not committed"):
        publish(source, f"gs://{bucket}/big", version=1)


def test_parts_of_a_composite_upload():
    from kfp_serve.components.storage.gcs_store import split_parts

    mib = 1024 * 1024
    parts = split_parts(1024 * mib)
    assert len(parts) == 32 and parts[0] == (0, 32 * mib) and parts[-1][0] + parts[-1][1] == 1024 * mib
    assert split_parts(40 * mib) == [(0, 32 * mib), (32 * mib, 8 * mib)]
    big = split_parts(10 * 1024 * mib)
    assert len(big) <= 32 and sum(length for _, length in big) == 10 * 1024 * mib


def test_a_large_file_is_composed_from_parallel_parts(bucket, tmp_path, monkeypatch):
    from kfp_serve.components.storage import gcs_store

    monkeypatch.setattr(gcs_store, "COMPOSITE_MIN_BYTES", 1024 * 1024)
    source = tmp_path / "model"
    source.mkdir()
    (source / "weights.bin").write_bytes(os.urandom(40 * 1024 * 1024 + 12345))
    (source / "config.pbtxt").write_text("name: 'm'")
    result = publish(source, f"gs://{bucket}/big", progress=True)
    names = sorted(b.name for b in storage_client().list_blobs(bucket, prefix="big/v1/"))
    assert names == ["big/v1/_kfp_serve_claim.json", "big/v1/_kfp_serve_manifest.json",
                     "big/v1/config.pbtxt", "big/v1/weights.bin"]
    assert result.bytes == 40 * 1024 * 1024 + 12345 + 9
    assert _tree(fetch_version(result.uri, tmp_path / "back")) == _tree(source)


def _stale_listing_once(monkeypatch, store=GcsStore):
    """The next listing of versions sees none, as a publisher that listed before another one
    claimed would (the race of two publishers with version=0)."""
    real = store.versions
    calls = {"n": 0}

    def listing(self):
        calls["n"] += 1
        return {} if calls["n"] == 1 else real(self)

    monkeypatch.setattr(store, "versions", listing)


def test_a_racing_publisher_cannot_add_objects_to_a_committed_version(digits_repository, bucket,
                                                                       tmp_path, monkeypatch):
    """Two publishers both pick v1: the first claims and commits it; the second loses the claim
    and takes v2, so none of its objects enter v1 (KServe and Vertex copy the whole prefix)."""
    first = publish(digits_repository, f"gs://{bucket}/race")
    before = sorted(b.name for b in storage_client().list_blobs(bucket, prefix="race/v1/"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "extra_model.bin").write_bytes(b"x" * 1000)
    _stale_listing_once(monkeypatch)
    second = publish(other, f"gs://{bucket}/race")
    assert (first.version, second.version) == (1, 2)
    assert sorted(b.name for b in storage_client().list_blobs(bucket, prefix="race/v1/")) == before
    with pytest.raises(UserError, match="version v1 already exists at .* and is never overwritten"):
        publish(other, f"gs://{bucket}/race", version=1)


def test_a_create_only_retry_of_our_own_object_is_not_a_conflict(bucket, tmp_path):
    from google.api_core.exceptions import PreconditionFailed

    from kfp_serve.components.storage.gcs_store import _ours_already
    from kfp_serve.components.storage.progress import CountingFile, UploadProgress
    from kfp_serve.components.storage.retries import OutageRetry

    path = tmp_path / "weights.bin"
    path.write_bytes(b"abc" * 1000)
    blob = storage_client().bucket(bucket).blob("retry/weights.bin")
    blob.upload_from_filename(str(path), if_generation_match=0)  # the try whose answer was lost
    view = CountingFile(path, UploadProgress(path.stat().st_size, False))
    view.close()
    retry = OutageRetry().policy
    assert _ours_already(PreconditionFailed("412"), blob, view, retry)
    path.write_bytes(b"xyz" * 1000)  # a different object under that name is a real conflict
    assert not _ours_already(PreconditionFailed("412"), blob,
                             CountingFile(path, UploadProgress(1, False)), retry)


def test_a_racing_local_publisher_never_replaces_a_committed_version(digits_repository, tmp_path,
                                                                     monkeypatch):
    first = publish(digits_repository, str(tmp_path / "store"))
    committed = _tree(tmp_path / "store" / "v1")
    (tmp_path / "store" / ".v7-staging-abc").mkdir()  # left by a killed run of an older release
    _stale_listing_once(monkeypatch, LocalStore)
    second = publish(digits_repository, str(tmp_path / "store"))
    assert (first.version, second.version) == (1, 2)
    assert _tree(tmp_path / "store" / "v1") == committed
    assert not (tmp_path / "store" / ".v7-staging-abc").exists()
