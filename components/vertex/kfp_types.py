"""Google Cloud Pipeline Components' Vertex AI artifact types, so their ops consume ours.

Same schema titles and metadata key (``resourceName``) as
``google_cloud_pipeline_components.types.artifact_types``, without depending on that package.
"""

from kfp import dsl


class VertexModel(dsl.Artifact):
    """A Vertex AI model version: ``metadata.resourceName`` is ``projects/.../models/ID@VERSION``."""

    schema_title = "google.VertexModel"
    schema_version = "0.0.1"


class VertexEndpoint(dsl.Artifact):
    """A Vertex AI endpoint: ``metadata.resourceName`` is ``projects/.../endpoints/ID``."""

    schema_title = "google.VertexEndpoint"
    schema_version = "0.0.1"
