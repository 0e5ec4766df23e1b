"""Versioned, atomic publishing against a real GCS API server (fake-gcs-server) and folders."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from kfp_serve.components.errors import UserError
from kfp_serve.components.storage.fetch import fetch_version
from kfp_serve.components.storage.publish import MANIFEST, _gcs_versions, publish, storage_client
from kfp_serve.components.storage.uris import parse_gcs_uri


@pytest.fixture
def bucket(gcs):
    name = f"models-{uuid.uuid4().hex[:8]}"
    gcs.create_bucket(name)
    return name


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_each_publish_is_a_new_committed_version(digits_repository, bucket, tmp_path):
    first = publish(digits_repository, f"gs://{bucket}/digits")
    second = publish(digits_repository, f"gs://{bucket}/digits")
    assert (first.uri, second.uri) == (f"gs://{bucket}/digits/v1", f"gs://{bucket}/digits/v2")
    assert first.files == 2 and first.bytes > 100_000
    client = storage_client()
    names = sorted(b.name for b in client.list_blobs(bucket, prefix="digits/v1/"))
    assert names == ["digits/v1/_kfp_serve_manifest.json", "digits/v1/digits/1/model.onnx",
                     "digits/v1/digits/config.pbtxt"]
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
    assert _gcs_versions(client, parse_gcs_uri(f"gs://{bucket}/big")) == {1: False}
    with pytest.raises(UserError, match=f"gs://{bucket}/big/v1 is not a committed kfp-serve version"):
        fetch_version(f"gs://{bucket}/big/v1", tmp_path / "reader")
    rerun = publish(source, f"gs://{bucket}/big")
    assert rerun.version == 2 and rerun.files == 24
    again = publish(source, f"gs://{bucket}/big", version=1)  # the partial v1 is cleared, then written
    assert again.version == 1
    assert len(list(client.list_blobs(bucket, prefix="big/v1/"))) == 25


def test_parts_of_a_composite_upload():
    from kfp_serve.components.storage.publish import split_parts

    mib = 1024 * 1024
    parts = split_parts(1024 * mib)
    assert len(parts) == 32 and parts[0] == (0, 32 * mib) and parts[-1][0] + parts[-1][1] == 1024 * mib
    assert split_parts(40 * mib) == [(0, 32 * mib), (32 * mib, 8 * mib)]
    big = split_parts(10 * 1024 * mib)
    assert len(big) <= 32 and sum(length for _, length in big) == 10 * 1024 * mib


def test_a_large_file_is_composed_from_parallel_parts(bucket, tmp_path, monkeypatch):
    from kfp_serve.components.storage import publish as publishing

    monkeypatch.setattr(publishing, "COMPOSITE_MIN_BYTES", 1024 * 1024)
    source = tmp_path / "model"
    source.mkdir()
    (source / "weights.bin").write_bytes(os.urandom(40 * 1024 * 1024 + 12345))
    (source / "config.pbtxt").write_text("name: 'm'")
    result = publish(source, f"gs://{bucket}/big", progress=True)
    names = sorted(b.name for b in storage_client().list_blobs(bucket, prefix="big/v1/"))
    assert names == ["big/v1/_kfp_serve_manifest.json", "big/v1/config.pbtxt", "big/v1/weights.bin"]
    assert result.bytes == 40 * 1024 * 1024 + 12345 + 9
    assert _tree(fetch_version(result.uri, tmp_path / "back")) == _tree(source)
