"""Destinations: ``gs://bucket/prefix`` or a local folder (the embedded default)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kfp_serve.components.errors import UserError

# bucket names: 3-63 chars of lowercase letters, digits, - _ . ; start and end alphanumeric
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class GcsUri:
    bucket: str
    prefix: str  # no leading or trailing slash; may be empty

    def child(self, *parts: str) -> GcsUri:
        joined = "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))
        return GcsUri(self.bucket, joined)

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}" if self.prefix else f"gs://{self.bucket}"


def parse_gcs_uri(uri: str) -> GcsUri:
    """``gs://bucket/a/b/`` -> GcsUri("bucket", "a/b"); UserError for anything else."""
    if not uri.startswith("gs://"):
        raise UserError(f"{uri!r} is not a gs:// URI; write gs://BUCKET/PATH")
    bucket, _, prefix = uri[len("gs://"):].partition("/")
    if not _BUCKET.match(bucket):
        raise UserError(f"{bucket!r} in {uri!r} is not a valid bucket name")
    if "//" in prefix.strip("/") or any(part in (".", "..") for part in prefix.split("/")):
        raise UserError(f"{uri!r} has an empty, '.' or '..' path segment")
    return GcsUri(bucket, prefix.strip("/"))


def is_gcs(uri: str) -> bool:
    return uri.startswith("gs://")


def local_path(uri: str) -> Path:
    """A local destination: a plain path or ``file://`` URI."""
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" in uri:
        raise UserError(f"{uri!r} is neither gs:// nor a local path; use gs://BUCKET/PATH or a folder")
    return Path(uri).expanduser()
