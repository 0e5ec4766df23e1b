"""Fixtures of the storage tests: a fresh bucket on the session's fake-gcs-server."""

import uuid

import pytest


@pytest.fixture
def bucket(gcs):
    name = f"models-{uuid.uuid4().hex[:8]}"
    gcs.create_bucket(name)
    return name
