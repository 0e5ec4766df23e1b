"""Shared fixtures: one trained digits model and its ONNX export per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def catches_sigterm(pid: int) -> bool:
    """Whether a process has a handler for SIGTERM (its SigCgt mask in /proc): tests signal only
    then, never on a timer that races interpreter start-up on a busy machine."""
    import signal

    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


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


@pytest.fixture
def cluster_dns(monkeypatch):
    """This process and the step subprocesses it starts play pods inside the fake cluster:
    ``*.svc.cluster.local`` resolves to the fake controller's gateway (fakes/cluster_gateway.py)."""
    from fakes.cluster_gateway import install_cluster_dns

    folder = Path(__file__).parent / "fakes" / "cluster_dns"
    monkeypatch.setenv("KFP_SERVE_FAKE_CLUSTER_DNS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    undo = install_cluster_dns()
    yield
    undo()
