"""Artifact kinds: wiring the wrong artifact into a step is a one-line error naming both kinds."""

import pytest
from kfp import dsl

from kfp_serve.components.artifacts import expect, expect_published, mark
from kfp_serve.components.errors import UserError


def _artifact(kind: str | None, **metadata) -> dsl.Artifact:
    artifact = dsl.Artifact(name="given", uri="/tmp/given")
    if kind:
        mark(artifact, kind, **metadata)
    return artifact


def test_the_right_kind_is_returned():
    assert expect(_artifact("OnnxModel"), "TorchModel", "OnnxModel") == "OnnxModel"


def test_a_wrong_kind_names_what_was_given_and_what_is_needed():
    with pytest.raises(UserError) as err:
        expect(_artifact("TritonRepository"), "OnnxModel", "TorchScriptModel")
    assert str(err.value) == (
        "input artifact 'given' is a TritonRepository; this step needs a OnnxModel or"
        " TorchScriptModel (a folder: model.onnx (+ model.onnx.data when > 2 GiB),"
        " signature.json, golden.npz)")


def test_an_artifact_from_outside_the_suite_says_so():
    with pytest.raises(UserError, match="is an artifact without a kfp_serve kind; this step needs a"
                                        " PublishedVersion"):
        expect(_artifact(None), "PublishedVersion")


def test_a_published_version_of_the_wrong_content_is_refused():
    published = _artifact("PublishedVersion", uri="gs://b/models/v3", content_kind="OnnxModel")
    with pytest.raises(UserError, match=r"^gs://b/models/v3 holds a OnnxModel; this step needs a"
                                        r" published TritonRepository: publish one with publish_model$"):
        expect_published(published, "TritonRepository")
    assert expect_published(published, "TritonRepository", "OnnxModel") == "OnnxModel"


def test_unknown_kinds_cannot_be_marked():
    with pytest.raises(ValueError, match="unknown artifact kind 'Nope'"):
        mark(dsl.Artifact(name="x", uri="/tmp/x"), "Nope")
