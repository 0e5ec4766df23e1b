"""What the KServe tests share besides fixtures: a spec with defaults, a cluster client for the
fake API server, and artifacts as the components receive them."""

from kfp_serve.components import artifacts
from kfp_serve.components.kserve.manifest import InferenceServiceSpec
from kfp_serve.components.signature import ModelSignature


def make_spec(**kwargs):
    return InferenceServiceSpec(**{"name": "digits", "namespace": "models",
                                   "storage_uri": "gs://models/digits/v1", **kwargs})


def cluster_for(url, namespace="models"):
    from kfp_serve.components.kserve.api import KServeCluster, api_client

    return KServeCluster(api_client(host=url), namespace)


def split_of(result):
    return [(t["revisionName"], t["percent"]) for t in result.traffic]


def validates(url, digits_onnx):
    from kfp_serve.components.golden import GoldenSet
    from kfp_serve.components.validate.targets import OipRestTarget
    from kfp_serve.components.validate.validation import validate

    result = validate(OipRestTarget(url, "digits", ModelSignature.load(digits_onnx)), GoldenSet.load(digits_onnx))
    assert result.passed, result.failure_line()


def artifact(name, location="", record=None):
    from kfp import dsl

    made = dsl.Artifact(name=name, uri=location)
    if record is not None:
        artifacts.mark(made, record)
    return made


def published_artifact(uri, digits_onnx, ir):
    signature = ModelSignature.load(digits_onnx) if digits_onnx else None
    repository = artifacts.TritonRepository(model_name="digits", signature=signature,
                                            model_format="onnx", onnx_ir_version=ir)
    return artifact("published", uri, artifacts.PublishedVersion(uri=uri, published_version=1, content=repository))
