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
        ("atol=tiny", "--param atol='tiny': expected float"),
    ],
)
def test_bad_params(param, message, capsys):
    assert main(["run", "train_to_serve_local", "--local", "--param", param]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}")
    assert err.count("\n") == 1


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
