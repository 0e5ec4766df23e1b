"""Fixtures of the KServe tests: the fake Kubernetes API with its KServe controller, and published
versions of the digits repository on fake-gcs-server."""

import shutil

import pytest


@pytest.fixture
def kube(tmp_path):
    from fakes.cluster_gateway import install_cluster_dns
    from fakes.crd_schema import load_crd_schema
    from fakes.http_fake import FakeServer
    from fakes.kube_api import FakeKServeController, FakeKubeApi, kserve_runtimes

    api = FakeKubeApi(namespaces=("models",), runtimes=kserve_runtimes(),
                      crd_schema=load_crd_schema())
    controller = FakeKServeController(api, tmp_path)
    undo = install_cluster_dns()  # this process plays a pod inside the cluster
    try:
        with FakeServer(api) as server:
            yield api, server.url
    finally:
        undo()
        controller.stop()


@pytest.fixture(scope="module")
def published(gcs, digits_repository, tmp_path_factory):
    """Two committed versions of the digits repository, and one whose model is corrupt."""
    from kfp_serve.components.storage.publish import publish

    gcs.create_bucket("kserve-models")
    first = publish(digits_repository, "gs://kserve-models/digits").uri
    second = publish(digits_repository, "gs://kserve-models/digits").uri
    broken = tmp_path_factory.mktemp("broken") / "repo"
    shutil.copytree(digits_repository, broken)
    (broken / "digits" / "1" / "model.onnx").write_bytes(b"corrupt")
    import onnx

    # torch.onnx writes IR 10 at opset 18, which KServe's default Triton (23.05) cannot load:
    # deploy sets runtimeVersion from it, as deploy_kserve does from the artifact's metadata
    ir = onnx.load(str(digits_repository / "digits" / "1" / "model.onnx"), load_external_data=False).ir_version
    return {"v1": first, "v2": second, "broken": publish(broken, "gs://kserve-models/broken").uri, "ir": ir}
