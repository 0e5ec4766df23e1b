"""kfp-serve submit against a fake KFP API server on 127.0.0.1 (the real client, real HTTP)."""

import pytest
from fakes.http_fake import FakeServer
from fakes.kfp_api import FakeKfpApi

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.pipelines.cli import main
from kfp_serve.pipelines.submit import submit_kfp


def test_submit_creates_the_experiment_and_a_run(capsys):
    api = FakeKfpApi()
    with FakeServer(api) as server:
        code = main(["submit", "train_to_serve_local", "--host", server.url, "--experiment", "nightly",
                     "--namespace", "team-a", "--param", "epochs=3", "--param", "model_name=mnist"])
    assert code == 0, capsys.readouterr().err
    [experiment] = api.experiments.values()
    assert experiment["display_name"] == "nightly"
    assert experiment["namespace"] == "team-a"
    [run] = api.runs
    assert run["experiment_id"] == experiment["experiment_id"]
    assert run["display_name"].startswith("train_to_serve_local ")
    assert run["pipeline_spec"]["pipelineInfo"]["name"] == "train-to-serve-local"
    assert run["runtime_config"]["parameters"] == {"epochs": 3, "model_name": "mnist"}
    assert set(run["pipeline_spec"]["root"]["dag"]["tasks"]) == {"exit-handler-1", "undeploy-local"}
    out = capsys.readouterr().out
    assert f"run {run['run_id']}" in out
    assert f"{server.url}/#/runs/details/{run['run_id']}" in out


def test_existing_experiment_is_reused():
    api = FakeKfpApi()
    with FakeServer(api) as server:
        first = submit_kfp("train_to_serve_local", server.url, {})
        second = submit_kfp("train_to_serve_local", server.url, {})
    assert len(api.experiments) == 1
    assert first.run_id != second.run_id
    assert [r["experiment_id"] for r in api.runs] == [next(iter(api.experiments))] * 2


def test_api_errors_become_one_line_errors():
    denied = FakeKfpApi(fail_runs_with=(403, "user cannot create runs in namespace team-a"))
    with FakeServer(denied) as server, pytest.raises(
        UserError, match="answered 403: .*user cannot create runs in namespace team-a"
    ):
        submit_kfp("train_to_serve_local", server.url, {})
    down = FakeKfpApi(fail_runs_with=(503, "backend unavailable"))
    with FakeServer(down) as server, pytest.raises(InfrastructureError, match="answered 503"):
        submit_kfp("train_to_serve_local", server.url, {})


def test_unreachable_host():
    from kfp_serve.components.local.ports import free_port

    with pytest.raises(InfrastructureError, match="cannot reach the KFP API at http://127.0.0.1:"):
        submit_kfp("train_to_serve_local", f"http://127.0.0.1:{free_port()}", {})


def test_a_url_that_is_not_a_kfp_api_is_one_line_at_once(capsys):
    """It printed 226 lines and five tracebacks over 25 s (kfp.Client's health retries), and
    the last line said the server could not be reached."""
    import time

    def not_kfp(method, path, query, body):
        return 404, "404 page not found"

    with FakeServer(not_kfp) as server:
        started = time.monotonic()
        code = main(["submit", "train_to_serve_local", "--host", server.url])
        took = time.monotonic() - started
    captured = capsys.readouterr()
    assert code == 2 and took < 5
    assert captured.err == (f"error: {server.url} answers, but not as a KFP API (GET"
                            " /apis/v2beta1/healthz: 404); pass the Kubeflow Pipelines URL, e.g."
                            " http://localhost:8080 after `kubectl port-forward -n kubeflow"
                            " svc/ml-pipeline-ui 8080:80`\n")
    assert captured.out == ""


def test_vertex_without_credentials_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    code = main(["submit", "train_to_serve_local", "--vertex", "--project", "p",
                 "--pipeline-root", "gs://b/root"])
    assert code == 2
    assert capsys.readouterr().err == (
        "error: no Google Cloud credentials to submit to Vertex AI: run `gcloud auth"
        " application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service account"
        " key\n")


def _submit_vertex(api, root="gs://artifacts/root", **kwargs):
    """Each test uses a bucket that does not exist yet: for an existing bucket aiplatform checks
    ownership through Resource Manager, which cannot be reached from here (a 60 s retry)."""
    from google.auth.credentials import AnonymousCredentials

    from kfp_serve.pipelines.submit import submit_vertex

    with FakeServer(api) as server:
        return submit_vertex("train_to_serve_local", "my-project", "europe-west4", root,
                             {"epochs": 3}, service_account="runner@my-project.iam.gserviceaccount.com",
                             api_endpoint=server.url, credentials=AnonymousCredentials(), **kwargs)


def test_vertex_submit_creates_a_pipeline_job(gcs):
    from fakes.vertex_pipelines import FakeVertexPipelines
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    api = FakeVertexPipelines()
    result = _submit_vertex(api)
    [(name, job)] = api.jobs.items()
    assert result.run_id == name
    assert name.startswith("projects/my-project/locations/europe-west4/pipelineJobs/train-to-serve-local-")
    assert job["displayName"] == "train-to-serve-local"
    assert job["pipelineSpec"]["pipelineInfo"]["name"] == "train-to-serve-local"
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://artifacts/root"
    assert job["runtimeConfig"]["parameterValues"] == {"epochs": 3}
    assert job["serviceAccount"] == "runner@my-project.iam.gserviceaccount.com"
    assert result.url.startswith("https://console.cloud.google.com/vertex-ai/locations/europe-west4/")
    # aiplatform made sure the pipeline root's bucket exists (in the GCS emulator)
    client = storage.Client(project="my-project", credentials=AnonymousCredentials())
    assert client.bucket("artifacts").exists()


def test_vertex_permission_denied_is_a_user_error(gcs):
    from fakes.vertex_pipelines import FakeVertexPipelines

    api = FakeVertexPipelines(deny=(403, "PERMISSION_DENIED", "aiplatform.pipelineJobs.create denied"))
    with pytest.raises(UserError, match="Vertex AI answered 403.*aiplatform.pipelineJobs.create denied"):
        _submit_vertex(api, root="gs://artifacts-denied/root")
