"""Reading a published version back: only committed versions, only paths inside the version."""

import json
import re

import pytest

from kfp_serve.components.errors import UserError
from kfp_serve.components.storage.fetch import fetch_version
from kfp_serve.components.storage.manifest import MANIFEST
from kfp_serve.components.storage.publish import publish


def test_a_manifest_naming_a_path_outside_the_version_is_refused(digits_repository, tmp_path):
    published = publish(digits_repository, str(tmp_path / "store"))
    manifest_path = tmp_path / "store" / "v1" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    for evil in ("../escaped.txt", "/etc/passwd-copy", "a/../../b"):
        manifest["files"][evil] = {"size": 1, "crc32c": "AAAAAA=="}
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(UserError, match=f"names '{re.escape(evil)}', which is not a path inside"
                                            " the version; refusing to fetch it"):
            fetch_version(published.uri, tmp_path / "dest" / "copy")
        del manifest["files"][evil]
    assert not (tmp_path / "dest" / "escaped.txt").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "is not JSON"), ("[]", "lists no files"), ('{"files": {}}', "lists no files"),
    ('{"files": {"a": 3}}', "entry 'a' has no crc32c"),
])
def test_a_malformed_manifest_is_a_one_line_error(digits_repository, tmp_path, text, message):
    published = publish(digits_repository, str(tmp_path / "store"))
    (tmp_path / "store" / "v1" / MANIFEST).write_text(text)
    with pytest.raises(UserError, match=message):
        fetch_version(published.uri, tmp_path / "copy")


@pytest.mark.parametrize("where", ["folder", pytest.param("gcs", marks=pytest.mark.server)])
def test_a_version_changed_in_storage_is_not_blamed_on_the_transfer(digits_repository, tmp_path,
                                                                     where, request):
    """A committed version whose stored file no longer matches its manifest cannot be mended by
    a retry (it said "arrived damaged; retry", exit 3): the input's, exit 2, saying what to do."""
    if where == "gcs":
        bucket = request.getfixturevalue("bucket")
        published = publish(digits_repository, f"gs://{bucket}/changed")
        from kfp_serve.components.storage.gcs_store import storage_client

        storage_client().bucket(bucket).blob("changed/v1/digits/config.pbtxt").upload_from_string(
            "max_batch_size: 8\n")
    else:
        published = publish(digits_repository, str(tmp_path / "store"))
        (tmp_path / "store" / "v1" / "digits" / "config.pbtxt").write_text("max_batch_size: 8\n")
    with pytest.raises(UserError, match=f"^{re.escape(published.uri)}/digits/config.pbtxt no longer"
                                        " matches the version's manifest: the committed version was"
                                        " changed in storage, and no retry can mend it; publish"):
        fetch_version(published.uri, tmp_path / "copy")
