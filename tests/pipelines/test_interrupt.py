"""Ctrl-C and SIGTERM on ``kfp-serve run`` while a local Triton serves: everything the run
started is stopped (by PID), one line says so, and the exit code is the shell's (130, 143)."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import processes_mentioning

from kfp_serve.components.local.triton_server import _process_alive

pytestmark = [pytest.mark.e2e, pytest.mark.server]

CLI = str(Path(sys.executable).parent / "kfp-serve")


def _serving(state: Path) -> dict | None:
    """The recorded local server once it answers ready, else None."""
    for path in state.glob("*.json"):
        record = json.loads(path.read_text())
        try:
            with urllib.request.urlopen(f"{record['url']}/v2/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    return record
        except OSError:
            pass
    return None


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_an_interrupted_run_stops_every_process_it_started(how, tmp_path):
    from model_zoo import build_text_encoder, text_encoder_inputs, text_encoder_signature

    from kfp_serve.components.model_artifact import save_torch_model

    saved = tmp_path / "encoder"
    save_torch_model(build_text_encoder(), text_encoder_signature(3, 64), text_encoder_inputs(6, 12),
                     saved)
    out = tmp_path / "runs"
    command = [CLI, "run", "deploy_existing_model", "--output", str(out),
               "--param", f"model_uri={saved}", "--param", "model_name=encoder"]
    if how == "SIGTERM":  # publish to the emulator: one more process to stop
        command += ["--gcs-emulator", "--param", "publish_destination=gs://kfp-serve-local/models"]
    else:
        command += ["--param", f"publish_destination={tmp_path / 'serving'}"]
    with open(tmp_path / "stdout", "wb") as stdout, open(tmp_path / "stderr", "wb") as stderr:
        # a session of its own: Ctrl-C on a terminal signals the whole foreground process group
        cli = subprocess.Popen(command, stdout=stdout, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        record = None
        while record is None and cli.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            record = _serving(out / ".kfp-serve-state" / "local")
        assert record is not None, (tmp_path / "stderr").read_text()[-2000:]
        time.sleep(1)  # the deploy step ends and validation starts (about 10 s)
        sent = time.monotonic()
        if how == "SIGTERM":
            cli.send_signal(signal.SIGTERM)
        else:
            os.killpg(cli.pid, signal.SIGINT)
        code = cli.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    last = (tmp_path / "stderr").read_text().strip().splitlines()[-1]
    assert code == (143 if how == "SIGTERM" else 130), last
    assert last.startswith(f"error: interrupted ({how}); stopped: ")
    assert f"local Triton {record['deployment']!r} (pid {record['pid']})" in last
    if how == "SIGTERM":
        assert last.endswith("the GCS emulator")
    assert took < 30, f"stopping took {took:.0f} s"
    assert not _process_alive(int(record["pid"]))
    assert processes_mentioning(str(tmp_path)) == []  # steps, Triton's stubs, the emulator
    assert not list((out / ".kfp-serve-state" / "local").glob("*.json"))
