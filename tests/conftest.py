"""Shared fixtures (one trained digits model and its exports per test session, the GCS emulator,
a local Triton serving them), the ``server`` marker, and the summary of what was not run.

Tests are laid out by room: ``tests/<room>/test_<module>.py`` tests ``components/<room>/<module>.py``
(``ground`` the modules at the top of components/, ``house`` the rules of the whole code base,
``pipelines`` the CLI, compiler and end-to-end runs); the fakes, the
model zoo and the shared helpers live apart in ``tests/harness`` (the one folder on sys.path:
the rooms are not, so ``tests/triton`` never shadows a module named ``triton``).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_state_dir(tmp_path_factory, monkeypatch):
    """Local deployments of a test run are recorded in a temporary folder, not ~/.cache."""
    monkeypatch.setenv("KFP_SERVE_STATE_DIR", str(tmp_path_factory.getbasetemp() / "state"))


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory) -> Path:
    """A trained digits model artifact (model.pt2 + signature.json + golden.npz)."""
    from kfp_serve.components.train.digits import train_digits

    path = tmp_path_factory.mktemp("digits") / "model"
    train_digits(path, epochs=15)
    return path


@pytest.fixture(scope="session")
def digits_onnx(digits_model, tmp_path_factory) -> Path:
    """The digits model exported to ONNX and verified."""
    from kfp_serve.components.export.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "onnx"
    export_onnx(digits_model, path)
    return path


@pytest.fixture(scope="session")
def digits_torchscript(digits_model, tmp_path_factory) -> Path:
    """The digits model traced to TorchScript and verified."""
    from kfp_serve.components.export.torchscript_export import export_torchscript

    path = tmp_path_factory.mktemp("ts") / "ts"
    export_torchscript(digits_model, path)
    return path


@pytest.fixture(scope="session")
def digits_repository(digits_onnx, tmp_path_factory) -> Path:
    """A Triton repository holding the digits ONNX model as ``digits``."""
    from kfp_serve.components.triton.config import TritonModelOptions
    from kfp_serve.components.triton.repository import build_repository

    path = tmp_path_factory.mktemp("repo") / "repository"
    build_repository(digits_onnx, "onnx", path, "digits", TritonModelOptions())
    return path


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """fake-gcs-server (a real GCS JSON API server) on 127.0.0.1 for the session, stopped by PID.

    Sets STORAGE_EMULATOR_HOST for this process and the subprocesses it starts.
    """
    import os

    from kfp_serve.components.storage.emulator import EMULATOR_ENV, start_emulator

    emulator = start_emulator(tmp_path_factory.mktemp("gcs"))
    saved = os.environ.get(EMULATOR_ENV)
    os.environ[EMULATOR_ENV] = emulator.url
    yield emulator
    emulator.stop()
    if saved is None:
        os.environ.pop(EMULATOR_ENV, None)
    else:
        os.environ[EMULATOR_ENV] = saved


@pytest.fixture(scope="module")
def server(digits_repository, tmp_path_factory):
    """A real Triton server (nvidia-pytriton's) on 127.0.0.1 serving the digits repository."""
    from kfp_serve.components.local import triton_server

    os.environ["KFP_SERVE_STATE_DIR"] = str(tmp_path_factory.mktemp("server-state"))
    record = triton_server.start_server(digits_repository, "digits", "test-server")
    yield record
    triton_server.stop_server(record)


@pytest.fixture(scope="session")
def packaged_llm(tmp_path_factory) -> tuple[Path, object]:
    """``(folder, LlmCheckpoint record)`` of the demo Llama (random weights, a tokenizer trained
    on Python's own docs) packaged with its card and golden set, once per session."""
    from kfp_serve.components.llm.package import package_checkpoint

    root = tmp_path_factory.mktemp("llm")
    record, _ = package_checkpoint("demo", root / "packaged", root / "scratch")
    return root / "packaged", record


@pytest.fixture
def published_llm(gcs, packaged_llm):
    """A function that publishes the demo checkpoint as the next version in a fresh bucket of the
    session's fake-gcs-server and gives its PublishedVersion artifact."""
    import uuid

    from support.kserve import artifact

    from kfp_serve.components import artifacts
    from kfp_serve.components.storage.publish import publish

    folder, record = packaged_llm
    bucket = f"llm-{uuid.uuid4().hex[:8]}"
    gcs.create_bucket(bucket)

    def version():
        result = publish(folder, f"gs://{bucket}/demo-llm")
        return artifact("published", result.uri, artifacts.PublishedVersion(
            uri=result.uri, published_version=result.version, content=record))

    return version


@pytest.fixture(scope="session")
def vllm_environment():
    """vLLM's own environment (``make llm-env``, which ``make test`` runs first)."""
    from kfp_serve.components.errors import UserError
    from kfp_serve.components.llm.vllm_server import vllm_python

    try:
        return vllm_python()
    except UserError:
        pytest.skip("vLLM's environment (.venv-llm) is missing: run `make llm-env`")


@pytest.fixture
def fake_vertex(tmp_path):
    """The fake Vertex AI REST API (fakes/vertex_api.py), serving deployed models for real."""
    from fakes.http_fake import FakeServer
    from fakes.vertex_api import FakeVertexApi

    api = FakeVertexApi(tmp_path)
    with FakeServer(api) as served:
        api.url = served.url
        yield api
    api.stop()


@pytest.fixture
def published_repository(gcs, digits_repository):
    """The digits repository published to a fresh bucket of the session's fake-gcs-server."""
    import uuid

    from kfp_serve.components.storage.publish import publish

    bucket = f"vertex-{uuid.uuid4().hex[:8]}"
    gcs.create_bucket(bucket)
    return publish(digits_repository, f"gs://{bucket}/digits").uri


@pytest.fixture
def cluster_dns(monkeypatch):
    """This process and the step subprocesses it starts play pods inside the fake cluster:
    ``*.svc.cluster.local`` resolves to the fake controller's gateway (fakes/cluster_gateway.py)."""
    from fakes.cluster_gateway import install_cluster_dns

    folder = Path(__file__).parent / "harness" / "fakes" / "cluster_dns"
    monkeypatch.setenv("KFP_SERVE_FAKE_CLUSTER_DNS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    undo = install_cluster_dns()
    yield
    undo()


# -- markers, the server guard and the summary of what was skipped ---------------------------

#: fixtures that start a server (fake-gcs-server, a local Triton, the fake cluster or Vertex AI):
#: a test that uses one, directly or through another fixture, is marked ``server``
SERVER_FIXTURES = {"gcs", "server", "kube", "fake_vertex", "cluster_dns", "served",
                   "vllm_environment"}
#: programs only a server test may start
SERVER_PROGRAMS = ("tritonserver", "fake-gcs-server", "torchserve", "java")


def pytest_collection_modifyitems(config, items):
    """``server`` on every test that starts servers: pipelines (e2e), containers, or a server
    fixture; ``pytest -m "not server"`` is then the quick loop."""
    for item in items:
        if (item.get_closest_marker("e2e") or item.get_closest_marker("containers")
                or SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.server)


@pytest.fixture(autouse=True)
def _servers_only_in_server_tests(request, monkeypatch):
    """A test that is not marked ``server`` may not start one (the quick loop stays quick): the
    start of a server program fails it at once."""
    if request.node.get_closest_marker("server"):
        return
    import subprocess

    real = subprocess.Popen.__init__

    def guarded(self, args, *rest, **kwargs):
        program = os.path.basename(str(args[0] if isinstance(args, (list, tuple)) else args).split()[0])
        if "vllm.entrypoints" in str(args):
            program = "vllm"
        if program.startswith(SERVER_PROGRAMS) or program == "vllm":
            pytest.fail(f"this test starts {program} but is not marked server: mark it"
                        " @pytest.mark.server (or use a server fixture)", pytrace=False)
        real(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Name each group of skipped tests with the one command that enables it."""
    groups: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        groups[reason.removeprefix("Skipped: ")] += 1
    deselected = len(terminalreporter.stats.get("deselected", []))
    if not groups and not deselected:
        return
    terminalreporter.section("not run, and what runs it")
    for reason, count in groups.most_common():
        terminalreporter.line(f"{count:4d} skipped: {reason}")
    if deselected:
        terminalreporter.line(f"{deselected:4d} deselected by -m/-k: `make test` runs the whole suite")
