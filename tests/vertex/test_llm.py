"""LLMs on Vertex AI: vLLM's OpenAI server uploaded with invoke routes, deployed to a dedicated
endpoint, validated through the deployed model's own invoke route (a canary alone), promoted.
The fake Vertex AI runs the container's vLLM command with the local vLLM (VERTEX_BEHAVIOUR.md
rows 33-34)."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request

import pytest
from support.kserve import artifact

from kfp_serve.components import artifacts
from kfp_serve.components.errors import KfpServeError, UserError
from kfp_serve.components.kserve.llm_runtime import VllmSettings
from kfp_serve.components.llm.vertex_deploy import llm_spec
from kfp_serve.components.vertex.container import VLLM_GPU_IMAGE, LargeModel

CPU_IMAGE = "us-docker.pkg.dev/my-project/serving/vllm-cpu:0.32.0"
PLACE = dict(project="my-project", location="us-central1", display_name="demo-llm")


def _published(packaged_llm, **card) -> artifacts.PublishedVersion:
    record = packaged_llm[1]
    if card:
        record = dataclasses.replace(record, card={**record.card, **card})
    return artifacts.PublishedVersion(uri="gs://my-bucket/demo-llm/v1", published_version=1, content=record)


def test_the_llm_container_is_invoke_enabled_with_vllm_s_settings(packaged_llm):
    settings = VllmSettings(max_model_len=512, enable_prefix_caching=True)
    spec, notes = llm_spec(_published(packaged_llm), settings, machine_type="a2-highgpu-2g",
                           accelerator_type="NVIDIA_TESLA_A100", accelerator_count=2,
                           large_model=LargeModel(3600, 1800), **PLACE)
    container = spec.model_body()["containerSpec"]
    assert container["imageUri"] == VLLM_GPU_IMAGE and container["invokeRoutePrefix"] == "/*"
    assert "predictRoute" not in container and container["healthRoute"] == "/health"
    assert container["args"][:6] == ["python3", "-m", "vllm.entrypoints.openai.api_server",
                                     "--host=0.0.0.0", "--port=8080", "--model=$(AIP_STORAGE_URI)"]
    assert {"--served-model-name=demo-llm", "--max-model-len=512", "--tensor-parallel-size=2",
            "--enable-prefix-caching"} <= set(container["args"])
    assert container["ports"] == [{"containerPort": 8080}]
    assert container["sharedMemorySizeMb"] == "16384" and container["deploymentTimeout"] == "3600s"
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": 8080}
    assert spec.dedicated_endpoint and spec.endpoint_settings() == {"dedicatedEndpointEnabled": True}
    assert notes[0].startswith("memory: 2 x NVIDIA_TESLA_A100: weights")
    assert "shared memory: 16384 MB" in notes[1]


@pytest.mark.parametrize("fields, settings, message", [
    (dict(machine_type="n1-standard-8"), VllmSettings(),
     "Vertex AI's vLLM image needs a GPU: set accelerator_type"),
    (dict(machine_type="g2-standard-12", accelerator_type="NVIDIA_L4", accelerator_count=1),
     VllmSettings(max_model_len=4096), "max_model_len 4096 is beyond the model's maximum context"),
    (dict(machine_type="g2-standard-24", accelerator_type="NVIDIA_L4", accelerator_count=1),
     VllmSettings(), "g2-standard-24 takes 2 x NVIDIA_L4, not 1"),
    (dict(machine_type="g2-standard-12", accelerator_type="NVIDIA_L4", accelerator_count=1,
          psc_address="10.0.0.5"), VllmSettings(), "only dedicated public endpoints take"),
    (dict(machine_type="n1-standard-8", serving_image="docker.io/vllm/vllm-openai:latest"),
     VllmSettings(), "Vertex AI pulls serving images only from Artifact Registry"),
])
def test_bad_llm_deploys_are_one_line_before_any_call(packaged_llm, fields, settings, message):
    with pytest.raises(UserError, match=message) as caught:
        llm_spec(_published(packaged_llm), settings, **PLACE, **fields)
    assert "\n" not in str(caught.value)


def test_a_7b_model_does_not_fit_one_t4_and_fits_an_l4_at_4k(packaged_llm):
    seven_b = dict(parameters=7_000_000_000, max_context=8192, kv_cache_bytes_per_token=524288,
                   dtype="bfloat16")
    published = _published(packaged_llm, **seven_b)
    with pytest.raises(UserError, match=r"does not fit 1 x NVIDIA_TESLA_T4: weights 13.0 GiB"):
        llm_spec(published, VllmSettings(), machine_type="n1-standard-8",
                 accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1, **PLACE)
    _, notes = llm_spec(published, VllmSettings(max_model_len=4096), machine_type="g2-standard-12",
                        accelerator_type="NVIDIA_L4", accelerator_count=1, **PLACE)
    assert notes[0].startswith("memory: 1 x NVIDIA_L4: weights 13.0 GiB, KV cache room for")


def _call(api, method: str, path: str, body: dict | None = None, host: str = "") -> tuple[int, dict]:
    request = urllib.request.Request(f"{api.url}/v1/{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Host": host} if host else {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _done(api, started: dict) -> dict:
    name = started["name"]
    for _ in range(600):
        _, op = _call(api, "GET", name)
        if op.get("done"):
            return op
        time.sleep(0.1)
    raise AssertionError(f"operation {name} never finished")


def _upload(api, uri: str, **container) -> str:
    spec = {"imageUri": CPU_IMAGE, "healthRoute": "/health", "ports": [{"containerPort": 8080}],
            "args": ["python3", "-m", "vllm.entrypoints.openai.api_server", "--port=8080",
                     "--model=$(AIP_STORAGE_URI)", "--served-model-name=m"], **container}
    status, started = _call(api, "POST", "projects/my-project/locations/us-central1/models:upload",
                            {"model": {"displayName": "m", "artifactUri": uri, "containerSpec": spec}})
    if status != 200:
        return started["error"]["message"]
    response = _done(api, started)["response"]
    return f"{response['model']}@{response['modelVersionId']}"


def _endpoint(api, dedicated: bool) -> dict:
    _, started = _call(api, "POST", "projects/my-project/locations/us-central1/endpoints",
                       {"displayName": "e", "dedicatedEndpointEnabled": dedicated})
    return _done(api, started)["response"]


def _deploy(api, endpoint: dict, model: str) -> tuple[int, dict]:
    return _call(api, "POST", f"{endpoint['name']}:deployModel", {
        "deployedModel": {"model": model, "dedicatedResources": {
            "machineSpec": {"machineType": "n1-standard-8"}, "minReplicaCount": 1}},
        "trafficSplit": {"0": 100}})


def test_what_vertex_ai_refuses_of_invoke_enabled_models_the_fake_refuses(fake_vertex):
    uri = "gs://my-bucket/demo-llm/v1"
    both = _upload(fake_vertex, uri, invokeRoutePrefix="/*", predictRoute="/v1/completions")
    assert both == "Only one of predict_route or invoke_route_prefix can be set"
    assert "is the only supported value" in _upload(fake_vertex, uri, invokeRoutePrefix="/v1/*")
    model = _upload(fake_vertex, uri, invokeRoutePrefix="/*")
    status, answer = _deploy(fake_vertex, _endpoint(fake_vertex, dedicated=False), model)
    assert status == 400
    assert answer["error"]["message"] == ("A model with invoke_route_prefix can only be deployed to"
                                          " a dedicated endpoint")


def test_a_vllm_server_on_another_port_never_becomes_ready(fake_vertex, published_llm):
    uri = published_llm().uri
    model = _upload(fake_vertex, uri, invokeRoutePrefix="/*", args=[
        "python3", "-m", "vllm.entrypoints.openai.api_server", "--port=8000",
        "--model=$(AIP_STORAGE_URI)"])
    status, started = _deploy(fake_vertex, _endpoint(fake_vertex, dedicated=True), model)
    assert status == 200
    error = _done(fake_vertex, started)["error"]
    assert error["code"] == 9 and "listens on port 8000" in error["message"]


@pytest.mark.usefixtures("vllm_environment")
def test_an_llm_canary_on_a_dedicated_endpoint_is_validated_alone_then_promoted(
        fake_vertex, published_llm, packaged_llm, tmp_path):
    from kfp import dsl

    from kfp_serve.components import deploy_vertex_llm, promote_vertex, validate_llm_endpoint
    from kfp_serve.components.llm.openai_http import OpenAIClient
    from kfp_serve.components.llm.vertex_deploy import invoke_base

    def deploy(step: str, traffic: int):
        endpoint = artifact("vertex_endpoint", str(tmp_path / step / "endpoint"))
        outputs = deploy_vertex_llm.python_func(
            model=published_llm(), vertex_model=artifact("m", str(tmp_path / step / "model")),
            vertex_endpoint=endpoint, report=artifact("r", str(tmp_path / f"{step}.md")),
            gcp_resources=str(tmp_path / f"{step}.json"), serving_image=CPU_IMAGE,
            machine_type="n1-standard-8", accelerator_type="", accelerator_count=0,
            max_model_len=512, traffic_percentage=traffic, api_endpoint=fake_vertex.url,
            operation_timeout_s=300, **PLACE)
        return endpoint, outputs

    checkpoint = artifact("packaged", str(packaged_llm[0]), packaged_llm[1])

    def validate(endpoint, where, reference="golden"):
        where.mkdir()
        passed = validate_llm_endpoint.python_func(
            endpoint=endpoint, model=checkpoint, metrics=dsl.Metrics(name="m", uri=str(where / "m")),
            report=dsl.Markdown(name="r", uri=str(where / "r.md")),
            html_report=dsl.HTML(name="h", uri=str(where / "h.html")), concurrency=[2],
            num_prompts=4, input_len=32, output_len=8, parity_reference=reference)
        return passed, (where / "r.md").read_text()

    first, outputs = deploy("v1", 100)
    record = artifacts.read(first, artifacts.VertexEndpoint)
    assert record.protocol == "openai" and record.model_name == "demo-llm"
    assert record.predict_base.startswith(f"http://localhost:{fake_vertex.url.rsplit(':', 1)[1]}/v1/")
    summary = (tmp_path / "v1.md").read_text()
    assert "no GPU: serving_image runs vLLM on the CPU" in summary and "/invoke`" in summary
    (endpoint,) = fake_vertex.endpoints.values()
    assert endpoint["dedicatedEndpointEnabled"] and endpoint["trafficSplit"] == {outputs.deployed_model_id: 100}

    # the endpoint's own invoke route follows the split and streams; rawPredict is off
    client = OpenAIClient(invoke_base(record, deployed_model_only=False))
    stream = client.stream("/v1/completions", {"model": "demo-llm", "prompt": "Hello",
                                               "max_tokens": 8, "ignore_eos": True})
    assert stream.ok and stream.output_tokens == 8, stream.error
    client.close()
    status, answer = _call(fake_vertex, "POST", f"{endpoint['name']}:rawPredict", {"prompt": "Hello"},
                           host=endpoint["dedicatedEndpointDns"])
    assert status == 400 and "only invoke requests are served" in answer["error"]["message"]

    passed, text = validate(first, tmp_path / "check-v1")
    assert passed, text
    assert text.count("token ids equal") == 6 and "served model name" in text
    assert "forwards POST requests only" in text

    second, outputs2 = deploy("v2", 30)
    assert endpoint["trafficSplit"] == {outputs.deployed_model_id: 70, outputs2.deployed_model_id: 30}
    # the canary alone, through its route, against the stable deployed model's greedy answers
    passed, text = validate(second, tmp_path / "check-v2", reference="stable")
    assert passed, text
    assert f"deployedModels/{outputs2.deployed_model_id}/invoke" in text
    assert f"parity reference: {record.predict_base}/deployedModels/{outputs.deployed_model_id}/invoke" in text
    assert text.count("token ids equal, log-probs within") == 6

    split = json.loads(promote_vertex.python_func(vertex_endpoint=second))
    assert split == {outputs2.deployed_model_id: 100}
    assert [d["id"] for d in endpoint["deployedModels"]] == [outputs2.deployed_model_id]
    assert not any(kind == "vllm" and key == outputs.deployed_model_id
                   for key, (_, kind, _) in fake_vertex.runtimes.items())


def test_validation_refuses_an_endpoint_that_is_not_an_llm(tmp_path, packaged_llm):
    from kfp_serve.components.llm.package import run_validation

    served = artifacts.VertexEndpoint(resource_name="projects/1/locations/us-central1/endpoints/2",
                                      deployed_model_id="3", project="my-project",
                                      location="us-central1", model_name="digits",
                                      predict_base="https://x/v1/projects/1/locations/us-central1/endpoints/2")
    with pytest.raises(KfpServeError, match=r"endpoints/2 speaks 'vertex-raw'; validate_llm_endpoint"):
        run_validation(served, packaged_llm[1], str(packaged_llm[0]), [1], [], 0, 8, 8, "",
                       (0, 0, 0), (0, 0, 0, 0, 0, 0), 0.05, "", "", 0.0, 30.0)


def test_a_stable_parity_reference_needs_a_model_that_served_before():
    from kfp_serve.components.llm.targets import openai_target, parity_reference_target

    def parity_reference(served, reference):
        return parity_reference_target(served, openai_target(served), reference)

    endpoint = artifacts.VertexEndpoint(
        resource_name="projects/1/locations/us-central1/endpoints/2", deployed_model_id="30",
        project="my-project", location="us-central1", model_name="demo-llm", protocol="openai",
        predict_base="http://127.0.0.1:1/v1/projects/1/locations/us-central1/endpoints/2",
        previous_traffic={"10": 75, "20": 25})
    stable = parity_reference(endpoint, "stable")
    assert stable.base_url.endswith("/endpoints/2/deployedModels/10/invoke") and stable.model == "demo-llm"
    assert parity_reference(endpoint, "golden") is None
    with pytest.raises(UserError, match="nothing served on .* before this deploy"):
        parity_reference(dataclasses.replace(endpoint, previous_traffic={}), "stable")
    local = artifacts.ServingEndpoint(url="http://127.0.0.1:1", model_name="m", protocol="openai")
    with pytest.raises(UserError, match="give the stable server's OpenAI base URL"):
        parity_reference(local, "stable")
    assert parity_reference(local, "http://127.0.0.1:2/").base_url == "http://127.0.0.1:2"
    with pytest.raises(UserError, match="parity_reference 'canary': use 'golden', 'stable'"):
        parity_reference(local, "canary")
