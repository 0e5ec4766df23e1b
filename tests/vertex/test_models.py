"""Model versions in the registry: one per deploy, found again by label only when they hold this deploy."""


import pytest
from support.vertex import vertex_spec

from kfp_serve.components.errors import UserError
from kfp_serve.components.vertex import rollout as vertex


def test_a_version_found_by_label_must_hold_this_deploys_artifact(fake_vertex, published_repository):
    vertex.deploy(vertex_spec(published_repository), fake_vertex.url, timeout_s=120, poll_s=0.2)
    for versions in fake_vertex.models.values():  # another version carries the same label
        for version in versions:
            version["artifactUri"] = "gs://elsewhere/other/v3"
    with pytest.raises(UserError, match="carries this deploy's label but another artifact"):
        vertex.deploy(vertex_spec(published_repository), fake_vertex.url, timeout_s=120, poll_s=0.2)
