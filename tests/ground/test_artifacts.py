"""Artifact records: wiring the wrong artifact into a step, or one whose metadata lacks a field,
is a one-line error at the step that reads it, naming both kinds or the field."""

import json

import pytest
from kfp import dsl

from kfp_serve.components import artifacts
from kfp_serve.components.errors import UserError
from kfp_serve.components.signature import ModelSignature, TensorSpec

SIGNATURE = ModelSignature((TensorSpec("image", "float32", ("batch", 1, 8, 8)),),
                           (TensorSpec("logits", "float32", ("batch", 10)),))


REPOSITORY = artifacts.TritonRepository(model_name="digits", tensor_names={"image": "image"},
                                        signature=SIGNATURE, model_format="onnx", onnx_ir_version=10)


def _artifact(record: artifacts.Record | None = None, **metadata) -> dsl.Artifact:
    artifact = dsl.Artifact(name="given", uri="/tmp/given", metadata=dict(metadata))
    if record is not None:
        artifacts.mark(artifact, record)
    return artifact


def test_a_record_survives_the_trip_through_kfp_metadata_as_json():
    published = artifacts.PublishedVersion(uri="gs://b/m/v3", published_version=3, content=REPOSITORY,
                                           files=4, bytes=1234)
    artifact = _artifact(published)
    artifact.metadata = json.loads(json.dumps(artifact.metadata))  # what KFP stores and hands on
    assert artifacts.read(artifact, artifacts.PublishedVersion) == published
    assert artifact.metadata["kfp_serve_kind"] == "PublishedVersion"
    assert artifact.metadata["content"]["kfp_serve_kind"] == "TritonRepository"


def test_numbers_that_kfp_turned_into_floats_come_back_as_ints():
    artifact = _artifact(REPOSITORY)
    artifact.metadata["version"] = 1.0
    assert artifacts.read(artifact, artifacts.TritonRepository).version == 1


def test_the_right_kind_is_returned_among_several():
    record = artifacts.read(_artifact(artifacts.OnnxModel(signature=SIGNATURE)), artifacts.TorchModel,
                            artifacts.OnnxModel)
    assert isinstance(record, artifacts.OnnxModel) and record.signature == SIGNATURE


def test_a_wrong_kind_names_what_was_given_what_is_needed_and_who_makes_it():
    with pytest.raises(UserError) as err:
        artifacts.read(_artifact(REPOSITORY), artifacts.OnnxModel, artifacts.TorchScriptModel)
    assert str(err.value) == (
        "input artifact 'given' is a TritonRepository; this step needs an OnnxModel or"
        " TorchScriptModel (a folder: model.onnx (+ model.onnx.data when > 2 GiB),"
        " signature.json, golden.npz; made by export_onnx or export_model)")


def test_an_artifact_from_outside_the_suite_says_so():
    with pytest.raises(UserError, match="is an artifact without a kfp_serve kind; this step needs a"
                                        " PublishedVersion"):
        artifacts.read(_artifact(), artifacts.PublishedVersion)


def test_a_missing_field_fails_at_the_step_that_reads_it_naming_the_field_and_the_maker():
    artifact = _artifact(REPOSITORY)
    del artifact.metadata["model_name"]
    with pytest.raises(UserError, match=r"^input artifact 'given' is a TritonRepository without"
                                        r" 'model_name' in its metadata; make it again with"
                                        r" build_triton_repository"):
        artifacts.read(artifact, artifacts.TritonRepository)


def test_a_field_of_the_wrong_type_is_named_with_its_value_even_inside_a_published_version():
    artifact = _artifact(artifacts.PublishedVersion(uri="gs://b/v1", published_version=1, content=REPOSITORY))
    artifact.metadata["content"]["tensor_names"] = ["image"]
    with pytest.raises(UserError, match=r"^input artifact 'given' \(its content\) is a TritonRepository"
                                        r" whose 'tensor_names' is \"\['image'\]\": expected a mapping"):
        artifacts.read(artifact, artifacts.PublishedVersion)


def test_a_published_version_of_the_wrong_content_is_refused():
    archive = artifacts.TorchServeArchive(model_name="m", model_format="onnx", signature=SIGNATURE)
    published = _artifact(artifacts.PublishedVersion(uri="gs://b/models/v3", published_version=3,
                                                     content=archive))
    with pytest.raises(UserError, match=r"^gs://b/models/v3 holds a TorchServeArchive; this step needs a"
                                        r" published TritonRepository: publish one with publish_model$"):
        artifacts.read_published(published, artifacts.TritonRepository)
    assert artifacts.read_published(published, artifacts.TritonRepository,
                                    artifacts.TorchServeArchive).content == archive


def test_google_artifacts_carry_resource_name_where_google_components_read_it():
    model = artifacts.VertexModel(resource_name="projects/p/locations/l/models/1@2")
    artifact = _artifact(model)
    assert artifact.metadata["resourceName"] == "projects/p/locations/l/models/1@2"
    assert artifacts.read(artifact, artifacts.VertexModel) == model


def test_a_model_imported_with_dsl_importer_reads_without_a_signature():
    imported = _artifact(kfp_serve_kind="TorchModel")  # pipelines/definitions/existing.py
    assert artifacts.read(imported, artifacts.TorchModel).signature is None
