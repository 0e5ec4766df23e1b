"""A storage outage mid-publish: a line when the retrying starts, one error line within about
half a minute (it was 759 s of silence and a 500-character RetryError), exit code 3, nothing
committed."""

import os
import signal
import threading
import time

import pytest

from kfp_serve.components.errors import InfrastructureError
from kfp_serve.components.storage.emulator import EMULATOR_ENV, start_emulator
from kfp_serve.components.storage.publish import publish
from kfp_serve.components.storage.retries import GCS_RETRY_S, reason

pytestmark = pytest.mark.server


def test_gcs_going_away_mid_publish_ends_in_one_line_within_the_retry_window(tmp_path, monkeypatch,
                                                                             capfd):
    source = tmp_path / "model"
    source.mkdir()
    for i in range(16):
        (source / f"shard-{i:02d}.bin").write_bytes(os.urandom(8 * 2**20))
    emulator = start_emulator(tmp_path / "gcs")
    try:
        monkeypatch.setenv(EMULATOR_ENV, emulator.url)
        emulator.create_bucket("outage-bucket")
        objects = tmp_path / "gcs" / "data" / "outage-bucket"

        def kill_once_uploading() -> None:
            deadline = time.monotonic() + 60
            # once a model file has landed (not the claim: killed mid-claim, no upload has begun)
            while time.monotonic() < deadline and not any(
                    "shard-" in p.name and p.is_file() for p in objects.rglob("*")):
                time.sleep(0.02)
            os.kill(emulator.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_once_uploading, daemon=True)
        killer.start()
        started = time.monotonic()
        with pytest.raises(InfrastructureError) as failed:
            publish(source, "gs://outage-bucket/models/m")
        took = time.monotonic() - started
        killer.join()
    finally:
        emulator.stop()
    message = str(failed.value)
    assert failed.value.exit_code == 3
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(f"GCS at {emulator.url} did not answer for ")
    assert "(connection refused); nothing was committed under gs://outage-bucket/models/m;" in message
    assert " MiB had been uploaded; rerun when it answers" in message
    assert took < GCS_RETRY_S + 30, f"gave up after {took:.0f} s"
    err = capfd.readouterr().err
    assert f"GCS at {emulator.url} is not answering (" in err
    assert f"retrying for up to {GCS_RETRY_S:.0f} s" in err
    manifests = [p for p in objects.rglob("*") if p.name == "_kfp_serve_manifest.json"]
    assert manifests == []


@pytest.mark.parametrize(("text", "words"), [
    ("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /o (Caused by"
     " NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=1): Failed to establish a new"
     " connection: [Errno 111] Connection refused\"))", "connection refused"),
    ("('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))",
     "remote end closed connection without response"),
    ("503 GET http://x/b: backend unavailable", "503 GET http://x/b: backend unavailable"),
])
def test_transport_errors_are_said_in_a_few_words(text, words):
    assert reason(ConnectionError(text)) == words
