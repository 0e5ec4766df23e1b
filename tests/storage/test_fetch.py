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
