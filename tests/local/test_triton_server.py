"""A real Triton server (nvidia-pytriton's binary) on 127.0.0.1, started, refused and stopped by PID."""

import os
import shutil
import socket
import urllib.request

import pytest
from support import catches_sigterm, processes_mentioning

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.local import ports, triton_server


def test_ports_are_distinct():
    """Ports picked one at a time could come back the same once their sockets closed (Triton
    then refuses HTTP and gRPC on one port); picked together they cannot."""
    for _ in range(50):
        chosen = ports.free_ports(3)
        assert len(set(chosen)) == 3
    with pytest.raises(UserError, match="each server needs a port of its own"):
        triton_server.start_server("/nonexistent", "digits", "same", http_port=18000, grpc_port=18000)


def test_port_in_use_is_a_one_line_error(digits_repository):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"http_port {port} on 127.0.0.1 is already in use"):
            triton_server.start_server(digits_repository, "digits", "busy", http_port=port)
    assert triton_server.load_deployment("busy") is None


@pytest.mark.server
def test_a_model_that_cannot_load_stops_the_server_and_quotes_its_log(digits_repository, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(digits_repository, broken)
    (broken / "digits" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(InfrastructureError,
                       match="tritonserver exited with code 1 .*log tail: .*INVALID_PROTOBUF.*failed to load .digits."):
        triton_server.start_server(broken, "digits", "broken", timeout_s=60)
    assert triton_server.load_deployment("broken") is None


@pytest.mark.server
def test_stop_is_idempotent_and_never_signals_a_stranger(digits_repository):
    record = triton_server.start_server(digits_repository, "digits", "short-lived")
    assert triton_server.load_deployment("short-lived") == record
    assert triton_server.stop_server(record) is True
    assert not triton_server._process_alive(record.pid)
    assert triton_server.load_deployment("short-lived") is None
    assert triton_server.stop_server(record) is False
    stranger = triton_server.LocalDeployment("x", os.getpid(), "", "", "m", "", "")
    assert triton_server.stop_server(stranger) is False  # our own pid is not a tritonserver


@pytest.mark.server
def test_paths_with_spaces_serve(digits_repository, tmp_path, monkeypatch):
    """Triton's Python backend starts its stub through an unquoted shell line: a space in the
    repository or state path failed every load (reported after the whole ready timeout)."""
    repository = tmp_path / "my models" / "repository"
    shutil.copytree(digits_repository, repository)
    monkeypatch.setenv(triton_server.STATE_DIR_ENV, str(tmp_path / "state dir"))
    record = triton_server.start_server(repository, "digits", "spaced", timeout_s=60)
    try:
        with urllib.request.urlopen(f"{record.url}/v2/models/digits/ready", timeout=5) as answer:
            assert answer.status == 200
    finally:
        triton_server.stop_server(record)
    assert not triton_server._links_folder("spaced").exists()


def test_missing_config_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="has no digits/config.pbtxt"):
        triton_server.start_server(tmp_path, "digits", "none")


@pytest.mark.server
def test_sigterm_while_the_model_loads_stops_the_server_it_started(digits_onnx, tmp_path):
    """A cancelled deploy step (KFP sends SIGTERM) stops the Triton it started at once, instead
    of leaving it running until the pipeline's exit handler."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from kfp_serve.components.triton.config import TritonModelOptions
    from kfp_serve.components.triton.repository import build_repository

    repo = tmp_path / "repo"
    build_repository(digits_onnx, "onnx", repo, "digits", TritonModelOptions(warmup=True))
    config = repo / "digits" / "config.pbtxt"  # a warmup that outlasts the test: loading hangs
    config.write_text(config.read_text().replace("count: 1", "count: 100000000"))
    state = tmp_path / "state"
    code = ("import sys\nfrom kfp_serve.components.local.triton_server import start_server\n"
            "try:\n"
            f"    start_server({str(repo)!r}, 'digits', 'cancelled', timeout_s=300)\n"
            "except Exception as err:\n    print(err)\n    sys.exit(3)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "KFP_SERVE_STATE_DIR": str(state)})
    record_path = state / "cancelled.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None and not (
            record_path.is_file() and catches_sigterm(child.pid)):
        time.sleep(0.05)
    server_pid = json.loads(record_path.read_text())["pid"]
    assert triton_server._process_alive(server_pid)
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=90)
    assert child.returncode == 3
    assert "cancelled (SIGTERM) while 'digits' was loading; the server was stopped" in out
    assert not triton_server._process_alive(server_pid)
    assert not record_path.exists()
    # nor its Python backend stub, busy in the warmup (it outlived the server once)
    time.sleep(0.5)
    assert processes_mentioning(str(state)) == []


def test_stopped_deployments_beyond_the_newest_twenty_lose_their_folders(tmp_path):
    """A log folder per deploy piled up under ~/.cache (79 after a day); each new deploy now
    prunes the folders of stopped deployments beyond the newest 20. A running one is kept."""
    for i in range(25):
        folder = tmp_path / f"run-{i:02d}"
        folder.mkdir()
        (folder / "tritonserver.log").write_text("log")
        os.utime(folder, (1_000_000 + i, 1_000_000 + i))
    running = triton_server.LocalDeployment("run-00", os.getpid(), "http://127.0.0.1:1", "", "m",
                                            "/repo", str(tmp_path / "run-00" / "tritonserver.log"))
    running.save(tmp_path)
    removed = triton_server.prune_stopped(tmp_path, keep=20)
    assert sorted(p.name for p in removed) == [f"run-{i:02d}" for i in range(1, 5)]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == (
        ["run-00"] + [f"run-{i:02d}" for i in range(5, 25)])
