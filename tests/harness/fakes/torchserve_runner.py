"""Run a real TorchServe (Java 17 + the torchserve package) on 127.0.0.1 for tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from kfp_serve.components.local.ports import free_ports


def java_missing_reason() -> str:
    from shutil import which

    if which("java") is None:
        return "TorchServe needs Java 17+ (`java` is not on PATH)"
    if which("torchserve", path=str(Path(sys.executable).parent)) is None and which("torchserve") is None:
        return "the torchserve package is not installed (dev extra)"
    return ""


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


@contextmanager
def torchserve(archive_folder: Path, model_name: str, workdir: Path, timeout_s: float = 180,
               with_metrics: bool = False):
    """Serve ``archive_folder`` (config/ + model-store/) the way KServe's runtime does, on
    127.0.0.1 with free ports; yields the inference base URL (with ``with_metrics``, also the
    metrics API's ``/metrics`` URL); stops the server by PID."""
    from kfp_serve.components.torchserve.archive import ArchiveOptions, config_properties

    ports = free_ports(5)
    shipped = (archive_folder / "config" / "config.properties").read_text()
    snapshot = json.loads(shipped.split("model_snapshot=", 1)[1].splitlines()[0])
    model = snapshot["models"][model_name]["1.0"]
    options = ArchiveOptions(batch_size=model["batchSize"], max_batch_delay_ms=model["maxBatchDelay"],
                             workers=model["minWorkers"])
    config = config_properties(model_name, options, str(archive_folder / "model-store"), *ports,
                               address="127.0.0.1")
    with _serve(config, archive_folder / "model-store", [model_name], ports, workdir, timeout_s) as url:
        yield (url, f"http://127.0.0.1:{ports[2]}/metrics") if with_metrics else url


@contextmanager
def torchserve_store(model_store: Path, model_names: list[str], workdir: Path, timeout_s: float = 240,
                     envelope: str = ""):
    """Serve every ``<name>.mar`` of ``model_store`` from one TorchServe on 127.0.0.1 (one
    worker each, no batching, no per-model pip installs; ``envelope``: TorchServe's
    ``service_envelope``); yields the inference base URL."""
    ports = free_ports(5)
    config = "\n".join([
        f"inference_address=http://127.0.0.1:{ports[0]}", f"management_address=http://127.0.0.1:{ports[1]}",
        f"metrics_address=http://127.0.0.1:{ports[2]}", f"grpc_inference_port={ports[3]}",
        f"grpc_management_port={ports[4]}", "disable_token_authorization=true",
        "install_py_dep_per_model=false", "default_workers_per_model=1", f"model_store={model_store}",
        f"load_models={','.join(f'{n}={n}.mar' for n in model_names)}",
        *([f"service_envelope={envelope}"] if envelope else []), ""])
    with _serve(config, model_store, model_names, ports, workdir, timeout_s) as url:
        yield url


@contextmanager
def _serve(config_text: str, model_store: Path, model_names: list[str], ports: list[int],
           workdir: Path, timeout_s: float):
    config = workdir / "config.properties"
    config.write_text(config_text)
    bin_dir = Path(sys.executable).parent
    # TMPDIR: torchserve keeps its "already running" PID file there; one per instance
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               LOG_LOCATION=str(workdir / "logs"), METRICS_LOCATION=str(workdir / "logs"),
               TMPDIR=str(workdir))
    log = open(workdir / "torchserve.out", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(bin_dir / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
         "--ts-config", str(config), "--model-store", str(model_store)],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    inference, management = f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
    try:
        deadline = time.monotonic() + timeout_s
        for name in model_names:
            while True:
                status, body = _get(f"{management}/models/{name}")
                if status == 200 and '"status": "READY"' in body.replace("'", '"'):
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (workdir / "torchserve.out").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"TorchServe did not get {name} ready: {tail}")
                time.sleep(0.5)
        yield inference
    finally:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
            try:
                os.killpg(process.pid, sig)  # the launcher, Java and the Python workers
                process.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
