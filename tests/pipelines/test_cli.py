"""The kfp-serve command line: fast start-up, listing, and one-line errors for bad input."""

import subprocess
import sys

import pytest

from kfp_serve.components.errors import UserError
from kfp_serve.pipelines import registry
from kfp_serve.pipelines.cli import main
from kfp_serve.pipelines.params import parse_params


def test_help_imports_neither_kfp_nor_torch():
    code = (
        "import sys\n"
        "from kfp_serve.pipelines.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('kfp', 'torch', 'numpy'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "compile" in result.stdout and "submit" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_list_prints_every_component_and_pipeline(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in registry.component_names() + registry.pipeline_names():
        assert name in out
    assert "Checks a live endpoint against the exported model" in out


def test_unknown_pipeline_is_a_one_line_error(capsys):
    assert main(["run", "train_to_serve_nowhere", "--local"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: unknown pipeline 'train_to_serve_nowhere'; known: deploy_existing_model,"
                   " llm_to_serve_kserve, llm_to_serve_local, llm_to_serve_vertex,"
                   " train_to_serve_kserve,"
                   " train_to_serve_local, train_to_serve_local_tuned, train_to_serve_torchserve,"
                   " train_to_serve_vertex (see `kfp-serve list`)\n")


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("epochs", "--param 'epochs' is malformed; write NAME=VALUE"),
        ("=3", "--param '=3' is malformed"),
        ("epoch=3", "--param epoch: train-to-serve-local has no such parameter; it has atol,"),
        ("epochs=three", "--param epochs='three': expected integer (e.g. epochs=8)"),
        ("atol=tiny", "--param atol='tiny': expected a finite float"),
        # checked against every component input the value reaches, before the first step, in
        # the words of the pipeline parameter (not seconds_per_batch, transport, ...)
        ("atol=nan", "--param atol='nan': expected a finite float (e.g. atol=0.5)"),
        ("endpoint_rtol=inf", "--param endpoint_rtol='inf': expected a finite float"),
        ("validation_transport=http2", "--param validation_transport=http2: must be one of auto,"
                                       " rest, rest-binary, grpc"),
        ("profile_seconds=-1", "--param profile_seconds=-1: must be more than 0"),
        ("max_batch_size=-3", "--param max_batch_size=-3: must be at least 0"),
        ("http_port=70000", "--param http_port=70000: must be 0 (any free port) or a free TCP"
                            " port of 127.0.0.1 (1-65535)"),
        ("opset=9", "--param opset=9: must be between 18 and 20"),
        ("epochs=0", "--param epochs=0: must be at least 1"),
    ],
)
def test_bad_params(param, message, capsys):
    assert main(["run", "train_to_serve_local", "--local", "--param", param]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}")
    assert err.count("\n") == 1


def test_a_parameter_given_twice_is_refused(capsys):
    assert main(["run", "train_to_serve_local", "--param", "epochs=3", "--param", "epochs=5"]) == 2
    assert capsys.readouterr().err == ("error: --param epochs is given twice (epochs='3' and"
                                       " epochs='5'); give it once\n")


def test_a_port_in_use_is_refused_before_the_first_step(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        assert main(["run", "train_to_serve_local", "--param", f"http_port={port}"]) == 2
    assert capsys.readouterr().err.startswith(f"error: --param http_port={port}: must be 0 (any")
    # submitted, the step runs on a cluster node: a port busy here says nothing of it
    assert parse_params([f"http_port={port}"], registry.load_pipeline("train_to_serve_local")) == {
        "http_port": port}


@pytest.mark.parametrize("pipeline", registry.pipeline_names())
def test_every_pipeline_default_and_component_default_obeys_the_rules(pipeline):
    """The rules are never stricter than the defaults the suite ships."""
    from kfp_serve.pipelines.params import check_params, component_inputs
    from kfp_serve.pipelines.rules import broken_rule

    loaded = registry.load_pipeline(pipeline)
    defaults = {name: spec.default for name, spec in loaded.component_spec.inputs.items()
                if spec.default is not None}
    check_params(loaded, defaults)
    reached = {component for pairs in component_inputs(loaded).values() for component, _ in pairs}
    assert reached - set(registry.component_names()) <= {"importer"}  # KFP's own, no rules
    for component in registry.component_names():
        for name, spec in (registry.load_component(component).component_spec.inputs or {}).items():
            if spec.default is not None:
                assert broken_rule(component, name, spec.default) is None, (component, name)


def test_gs_without_the_emulator_or_credentials_is_said_before_training(capsys, monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
    monkeypatch.setenv("CLOUDSDK_CONFIG", "/nonexistent")  # no gcloud application-default file
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # no metadata server either
    assert main(["run", "train_to_serve_local"]) == 2
    assert capsys.readouterr().err == (
        "error: train_to_serve_local uses gs://kfp-serve-local and this machine has no Google Cloud"
        " credentials: add --gcs-emulator (a local fake-gcs-server serves gs:// for the run), point"
        " the gs:// parameters at folders, or run `gcloud auth application-default login`\n")


def test_params_are_typed_by_the_pipeline():
    pipeline = registry.load_pipeline("train_to_serve_local")
    assert parse_params(["epochs=3", "atol=1e-3", "model_name=a=b"], pipeline) == {
        "epochs": 3, "atol": 1e-3, "model_name": "a=b"}


def test_vertex_submit_needs_a_gcs_pipeline_root(capsys):
    assert main(["submit", "train_to_serve_local", "--vertex", "--project", "p"]) == 2
    assert "--pipeline-root gs://BUCKET/PATH is required" in capsys.readouterr().err
    with pytest.raises(UserError, match="must be a gs:// URI"):
        from kfp_serve.pipelines.submit import submit_vertex

        submit_vertex("train_to_serve_local", "p", "us-central1", "/tmp/root", {})
    with pytest.raises(UserError, match="is not a Google Cloud region"):
        submit_vertex("train_to_serve_local", "p", "mars", "gs://b/root", {})


def test_submit_host_needs_a_scheme(capsys):
    assert main(["submit", "train_to_serve_local", "--host", "localhost:8080"]) == 2
    assert "needs a scheme" in capsys.readouterr().err


def test_container_options_without_containers_are_a_one_line_error(capsys):
    assert main(["run", "train_to_serve_local", "--local", "--memory", "4g"]) == 2
    assert capsys.readouterr().err == "error: --image and --memory go with --containers\n"


@pytest.mark.parametrize("pipeline", ["train_to_serve_kserve", "train_to_serve_torchserve"])
def test_kserve_without_a_cluster_is_said_before_training(pipeline, capsys, monkeypatch, tmp_path):
    """It crashed with kfp.local's "Unknown value type:" (api_host was Optional = None), then,
    mended, failed after training."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    assert main(["run", pipeline, "--gcs-emulator"]) == 2
    assert capsys.readouterr().err == (
        f"error: {pipeline} deploys to KServe and this machine has no Kubernetes credentials (not in"
        " a cluster, no kubeconfig): pass --param api_host=URL of a Kubernetes API (e.g. `kubectl"
        " proxy`'s http://127.0.0.1:8001), or set KUBECONFIG\n")


def test_run_help_lists_the_pipeline_s_parameters(capsys):
    """Only a wrong --param used to reveal them."""
    assert main(["run", "train_to_serve_local", "--help"]) == 0
    out = capsys.readouterr().out
    assert "parameters of train_to_serve_local (--param NAME=VALUE):" in out
    assert "  validation_transport  string = 'auto'\n" in out
    assert "rest-binary or grpc: how the golden set reaches the server." in out
    assert main(["run"]) == 2
    assert capsys.readouterr().err.startswith("error: name the pipeline to run: kfp-serve run"
                                              " PIPELINE (one of deploy_existing_model,")
