"""Models as users keep them: a Hugging Face Hub repository (hf://) and an OCI image (oci://,
KServe's modelcars), served where the cluster's KServe reads them and refused in one line,
before anything is applied, where it does not (rows 40-41 of KSERVE_BEHAVIOUR.md)."""

import json

import pytest
from support.kserve import cluster_for, make_spec, validates

from kfp_serve.components.errors import UserError
from kfp_serve.components.kserve.manifest import build_inference_service


def _kserve_config(api, **storage_initializer):
    """KServe's inferenceservice-config as installed (config/configmap/inferenceservice.yaml)."""
    config = {"image": "kserve/storage-initializer:v0.20.0", **storage_initializer}
    api.config_maps[("kserve", "inferenceservice-config")] = {
        "kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
        "data": {"storageInitializer": json.dumps(config)}}


def test_an_oci_image_is_served_through_a_modelcar_and_refused_where_modelcars_are_off(
        kube, digits_repository, digits_onnx, published):
    from kfp_serve.components.kserve.rollout import deploy

    api, url = kube
    cluster = cluster_for(url)
    image = "us-docker.pkg.dev/my-project/models/digits:v1"
    api.images[image] = digits_repository
    manifest = build_inference_service(make_spec(storage_uri=f"oci://{image}"))
    _kserve_config(api, enableModelcar=False)
    with pytest.raises(UserError, match=r"is an OCI image, and this KServe does not read them: set"
                                        r" \"enableModelcar\": true in the storageInitializer entry of"
                                        r" ConfigMap kserve/inferenceservice-config"):
        deploy(cluster, manifest, timeout_s=60, poll_s=0.2, onnx_ir_version=published["ir"])
    assert cluster.get("digits") is None  # refused before the apply
    _kserve_config(api, enableModelcar=True)
    served = deploy(cluster, build_inference_service(make_spec(storage_uri=f"oci://{image}")),
                    timeout_s=120, poll_s=0.2, onnx_ir_version=published["ir"])
    validates(served.validation_url, digits_onnx)


def test_a_hugging_face_repository_needs_kserve_0_14(kube, digits_repository, digits_onnx, published):
    from kfp_serve.components.kserve.rollout import deploy

    api, url = kube
    cluster = cluster_for(url)
    api.hub["my-org/digits-triton:main"] = digits_repository
    spec = make_spec(storage_uri="hf://my-org/digits-triton:main")
    _kserve_config(api, image="kserve/storage-initializer:v0.13.1")
    with pytest.raises(UserError, match=r"storage initializer \(kserve/storage-initializer:v0.13.1\)"
                                        r" cannot download it: hf:// needs KServe 0.14 or later"):
        deploy(cluster, build_inference_service(spec), timeout_s=60, poll_s=0.2)
    _kserve_config(api, image="kserve/storage-initializer:v0.15.2")
    served = deploy(cluster, build_inference_service(spec), timeout_s=120, poll_s=0.2,
                    onnx_ir_version=published["ir"])
    validates(served.validation_url, digits_onnx)


def test_unreadable_kserve_configuration_is_a_note_and_the_fake_initializer_fails_as_kserve_does(
        kube, digits_repository, published):
    """Without RBAC on KServe's namespace the check is skipped, saying so; then an old storage
    initializer meets hf:// and fails the deploy with KServe's own message."""
    from kfp_serve.components.kserve.rollout import DeployError, deploy

    api, url = kube
    cluster = cluster_for(url)
    api.hub["my-org/digits-triton"] = digits_repository
    _kserve_config(api, image="kserve/storage-initializer:v0.13.0")
    api.forbidden_config_maps.add(("kserve", "inferenceservice-config"))
    from kfp_serve.components.kserve.sources import check_cluster_reads

    [note] = check_cluster_reads(cluster, "hf://my-org/digits-triton", "kserve")
    assert note.startswith("cannot read ConfigMap kserve/inferenceservice-config (403;")
    assert "whether KServe reads hf:// sources was not checked" in note
    with pytest.raises(DeployError) as failed:
        deploy(cluster, build_inference_service(make_spec(storage_uri="hf://my-org/digits-triton")),
               timeout_s=60, poll_s=0.2, onnx_ir_version=published["ir"])
    assert "Cannot recognize storage type for hf://my-org/digits-triton" in failed.value.diagnostics


@pytest.mark.parametrize(("uri", "message"), [
    ("hf://digits", "KServe reads Hugging Face models as hf://OWNER/MODEL or hf://OWNER/MODEL:REVISION"),
    ("hf://org/model/extra", "KServe reads Hugging Face models as hf://OWNER/MODEL"),
    ("oci://Digits", "an OCI model image is oci://REGISTRY/REPOSITORY[:TAG or @sha256:DIGEST]"),
])
def test_source_uris_kserve_cannot_parse_are_one_line(uri, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        build_inference_service(make_spec(storage_uri=uri))
