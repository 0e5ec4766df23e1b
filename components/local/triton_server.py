"""Run a real Triton server on this machine for a model repository.

The ``tritonserver`` binary and the Python backend come from PyPI's ``nvidia-pytriton`` wheel.
The onnxruntime backend of the official images is replaced by a Python-based backend
(``backends/runtime_model.py``, also standing in for the pytorch backend), so a production
repository serves unchanged.
The server listens on 127.0.0.1 only and runs detached: it outlives the component that started
it and is stopped by :func:`stop_server` (the ``undeploy_local`` component).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.local.ports import choose_ports
from kfp_serve.components.staging import writable_folder

STATE_DIR_ENV = "KFP_SERVE_STATE_DIR"
RUNTIME_MODEL = Path(__file__).parent / "backends" / "runtime_model.py"
#: Triton backends served here by the Python-based stand-in (platform -> backend folder)
STAND_IN_BACKENDS = {"onnxruntime_onnx": "onnxruntime", "pytorch_libtorch": "pytorch"}
PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")


@dataclass(frozen=True)
class LocalDeployment:
    """A running local server, as recorded in ``<state dir>/<deployment>.json``."""

    deployment: str
    pid: int
    url: str
    grpc_url: str
    model_name: str
    repository: str
    log_path: str
    metrics_url: str = ""  # Triton's Prometheus metrics, on 127.0.0.1
    runtime: str = "triton"  # or "vllm" (components/llm/vllm_server.py)

    def save(self, state_root: Path) -> Path:
        path = state_root / f"{self.deployment}.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def state_root() -> Path:
    """Where deployments are recorded: ``$KFP_SERVE_STATE_DIR`` or ``~/.cache/kfp-serve/local``."""
    root = Path(os.environ.get(STATE_DIR_ENV) or Path.home() / ".cache" / "kfp-serve" / "local")
    return writable_folder(root, f"recording local servers (set ${STATE_DIR_ENV} to a writable"
                           " folder)")


def load_deployment(deployment: str) -> LocalDeployment | None:
    """The recorded deployment, or None if there is none under that name."""
    path = state_root() / f"{_safe(deployment)}.json"
    if not path.is_file():
        return None
    return LocalDeployment(**json.loads(path.read_text()))


def recorded_deployments(root: Path) -> list[LocalDeployment]:
    """Every deployment recorded under ``root`` (a state folder)."""
    records = []
    for path in sorted(root.glob("*.json")):
        try:
            records.append(LocalDeployment(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue  # not a deployment record
    return records


#: how many stopped deployments keep their folder (the server log) in the state folder
KEEP_STOPPED = 20


def prune_stopped(root: Path, keep: int = KEEP_STOPPED) -> list[Path]:
    """Remove the folders of stopped deployments beyond the newest ``keep`` (their logs), so the
    state folder does not grow by one folder per deploy. Running deployments are never touched."""
    running = {record.deployment for record in recorded_deployments(root)}
    stopped = [folder for folder in root.iterdir()
               if folder.is_dir() and folder.name not in running]
    stopped.sort(key=lambda folder: folder.stat().st_mtime, reverse=True)
    for folder in stopped[keep:]:
        shutil.rmtree(folder, ignore_errors=True)
    return stopped[keep:]


def _safe(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    if not cleaned.strip("-."):
        raise UserError(f"deployment name {name!r} needs letters or digits")
    return cleaned


def triton_install() -> Path:
    """The ``pytriton/tritonserver`` folder of the installed nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")  # locate only: its __init__ needs more deps
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the local runtime needs nvidia-pytriton's tritonserver: run"
            " `pip install --no-deps nvidia-pytriton==0.7.0` in this environment"
        )
    base = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (base / "bin" / "tritonserver").is_file():
        raise InfrastructureError(f"{base}/bin/tritonserver is missing; reinstall nvidia-pytriton")
    return base


def prepare_backends(destination: Path) -> Path:
    """Lay out a backend directory: the Python backend plus Python-based stand-ins."""
    install = triton_install()
    stub = install / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = stub / "triton_python_backend_stub"
    if not stub.is_file():
        raise InfrastructureError(
            f"nvidia-pytriton has no Python backend stub for Python"
            f" {sys.version_info[0]}.{sys.version_info[1]}; use Python 3.10-3.13"
        )
    for name in ("python", *STAND_IN_BACKENDS.values()):
        folder = destination / name
        folder.mkdir(parents=True, exist_ok=True)
        for filename in PYTHON_BACKEND_FILES:
            shutil.copy2(install / "backends" / "python" / filename, folder / filename)
        shutil.copy2(stub, folder / "triton_python_backend_stub")
        if name != "python":
            shutil.copy2(RUNTIME_MODEL, folder / "model.py")
    return destination


def check_servable(repository: Path, model_name: str) -> None:
    """The model's platform is one the local runtime serves (else a one-line error)."""
    from kfp_serve.components.triton.config import parse_pbtxt

    config = parse_pbtxt((repository / model_name / "config.pbtxt").read_text())
    platform = config.platform or config.backend
    if platform not in STAND_IN_BACKENDS and config.backend not in STAND_IN_BACKENDS.values():
        raise UserError(
            f"the local runtime serves {sorted(STAND_IN_BACKENDS)} models; {model_name!r} is"
            f" {platform!r} — serve it with a Triton GPU image (KServe) instead"
        )


def server_environment() -> dict[str, str]:
    """Environment for tritonserver and its stubs: this interpreter's libpython and packages."""
    env = dict(os.environ)
    libs = triton_install().parent.parent / "nvidia_pytriton.libs"
    lib_dirs = [sysconfig.get_config_var("LIBDIR") or "", str(libs), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(d for d in lib_dirs if d)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    python_path = [p for p in sys.path if p and Path(p).is_dir()]
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    return env


def start_server(repository: str | Path, model_name: str, deployment: str,
                 http_port: int = 0, grpc_port: int = 0, metrics_port: int = 0,
                 timeout_s: float = 120.0, explicit: bool = False) -> LocalDeployment:
    """Start tritonserver detached on 127.0.0.1 and wait until ``model_name`` is ready.

    ``repository`` is a folder, or the URI of a published version (``gs://.../v<N>`` or a
    folder with a manifest), which is fetched and checked first. On failure the server is
    stopped and the error carries the tail of its log. Prometheus metrics are served on
    ``metrics_port`` (0: a free one). ``explicit`` starts Triton in explicit model-control mode
    (only ``model_name`` loaded; the repository API reloads it with another config).
    """
    name = _safe(deployment)
    root = state_root()
    existing = load_deployment(name)
    if existing and _process_alive(existing.pid):
        raise UserError(
            f"deployment {name!r} is already running (pid {existing.pid}, {existing.url});"
            " undeploy it first or choose another name"
        )
    http, grpc, metrics = choose_ports(
        {"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port})
    prune_stopped(root)
    workdir = root / name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    if str(repository).startswith("gs://"):
        from kfp_serve.components.storage.fetch import fetch_version

        repository = fetch_version(str(repository), workdir / "repository")
    repository = Path(repository).resolve()
    if not (repository / model_name / "config.pbtxt").is_file():
        raise UserError(f"{repository} has no {model_name}/config.pbtxt; pass a Triton repository")
    check_servable(repository, model_name)
    backends = prepare_backends(workdir / "backends")
    repository, backends = _without_spaces(name, repository, backends)
    log_path = workdir / "tritonserver.log"
    command = [
        str(triton_install() / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1", f"--http-port={http}",
        "--grpc-address=127.0.0.1", f"--grpc-port={grpc}",
        "--allow-metrics=true", "--allow-gpu-metrics=false", "--allow-cpu-metrics=false",
        "--metrics-address=127.0.0.1", f"--metrics-port={metrics}",
        *(["--model-control-mode=explicit", f"--load-model={model_name}"] if explicit else []),
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--log-verbose=0",
        "--exit-timeout-secs=5",
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=server_environment(), start_new_session=True, close_fds=True,
        )
    record = LocalDeployment(
        deployment=name, pid=process.pid, url=f"http://127.0.0.1:{http}",
        grpc_url=f"127.0.0.1:{grpc}", model_name=model_name, repository=str(repository),
        log_path=str(log_path), metrics_url=f"http://127.0.0.1:{metrics}/metrics",
    )
    record.save(root)
    try:  # a cancelled step (SIGTERM) stops the server it started, not the exit handler later
        wait_for_model(record, timeout_s, process, cancellable=True)
    except BaseException:
        stop_server(record)
        raise
    return record


def _links_folder(deployment: str) -> Path:
    return Path(tempfile.gettempdir()) / f"kfp-serve-links-{deployment}"


def _without_spaces(deployment: str, repository: Path, backends: Path) -> tuple[Path, Path]:
    """Paths Triton's Python backend can use: it starts its stub through a shell command line
    with the paths unquoted, so a path with a space fails to load (``bash: /tmp/my: No such file
    or directory``). Such paths are reached through symlinks in a folder without spaces."""
    if not any(char.isspace() for char in f"{repository}{backends}"):
        return repository, backends
    links = _links_folder(deployment)
    if any(char.isspace() for char in str(links)):
        raise UserError(f"the local runtime cannot serve from {repository} (Triton's Python"
                        " backend breaks on spaces in paths) and the temporary folder has spaces"
                        " too; set TMPDIR to a folder without spaces")
    shutil.rmtree(links, ignore_errors=True)
    links.mkdir(parents=True)
    (links / "repository").symlink_to(repository, target_is_directory=True)
    (links / "backends").symlink_to(backends, target_is_directory=True)
    return links / "repository", links / "backends"


def _get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


def wait_for_model(record: LocalDeployment, timeout_s: float,
                   process: subprocess.Popen | None = None, cancellable: bool = False) -> None:
    """Poll server and model readiness; raise with the server's state and log tail on failure,
    or (``cancellable``) at once on SIGTERM."""
    from kfp_serve.components.polling import poll

    model_url = f"{record.url}/v2/models/{record.model_name}/ready"

    def cancelled(_: str) -> InfrastructureError:
        return InfrastructureError(f"cancelled (SIGTERM) while {record.model_name!r} was loading;"
                                   " the server was stopped")

    def check() -> tuple[bool | None, str]:
        if process is not None and process.poll() is not None:
            raise InfrastructureError(
                f"tritonserver exited with code {process.returncode} before the model was ready;"
                f" log tail: {log_tail(record.log_path)}"
            )
        server = _get_status(f"{record.url}/v2/health/live")
        model = _get_status(model_url) if server == 200 else None
        return (True if model == 200 else None), f"server live={server}, model ready={model}"

    poll(check, timeout_s, f"model {record.model_name!r} not ready", interval_s=0.25,
         detail=lambda: f"log tail: {log_tail(record.log_path)}",
         on_cancel=cancelled if cancellable else None)


_GLOG_ERROR = re.compile(r'^E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "?(?P<message>.*?)"?$')
_LOG_NOISE = ("CudaDriverHelper has not been initialized",)


def log_tail(path: str | Path, lines: int = 3) -> str:
    """Triton's error lines (else the last lines) of a log, joined on one line."""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    errors = []
    for line in text:
        match = _GLOG_ERROR.match(line)
        if match and not any(noise in line for noise in _LOG_NOISE):
            message = match.group("message").split("\\n\\nAt:")[0]
            if message not in errors:
                errors.append(message)
    picked = errors[-lines:] if errors else [line.strip() for line in text[-lines:]]
    return " | ".join(picked) or "(empty log)"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie counts as gone
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


#: what a runtime's server process has in its command line (a reused PID is never signalled)
SERVER_COMMANDS = {"triton": b"tritonserver", "vllm": b"vllm.entrypoints.openai.api_server"}


def _is_server(pid: int, runtime: str = "triton") -> bool:
    try:
        return SERVER_COMMANDS[runtime] in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_server(record: LocalDeployment, timeout_s: float = 45.0) -> bool:
    """Stop the server by PID (SIGTERM, then SIGKILL) and remove its record.

    Returns True if a running server was stopped, False if it was already gone. A PID that now
    belongs to another program is never signalled.
    """
    stopped = False
    if _process_alive(record.pid) and _is_server(record.pid, record.runtime):
        os.killpg(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _process_alive(record.pid) and time.monotonic() < deadline:
            _reap(record.pid)
            time.sleep(0.1)
        # what is left of the server's own session (a Python backend stub busy in a model's
        # warmup outlives tritonserver) goes too: the group holds only the server's processes
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGKILL)
        _reap(record.pid)
        stopped = True
    (state_root() / f"{record.deployment}.json").unlink(missing_ok=True)
    workdir = state_root() / record.deployment
    shutil.rmtree(_links_folder(record.deployment), ignore_errors=True)
    for leftover in ("repository", "backends", "model"):  # fetched models can be large; the log stays
        shutil.rmtree(workdir / leftover, ignore_errors=True)
    return stopped


def undeploy(deployment: str) -> bool:
    """Stop the local server recorded under ``deployment`` (the undeploy components); False
    when none runs."""
    record = load_deployment(deployment)
    if record is None:
        print(f"no local deployment named {deployment!r}; nothing to stop")
        return False
    stopped = stop_server(record)
    print(f"stopped {record.url} (pid {record.pid})" if stopped else "server had already exited")
    return stopped


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


HOLD_ENV = "KFP_SERVE_HOLD_SERVER"


def hold_while_serving(record: LocalDeployment) -> None:
    """With ``$KFP_SERVE_HOLD_SERVER=1`` (set by ``kfp-serve run --containers``), keep this
    process alive until the server exits, in a non-daemon thread.

    A container ends when its main process does, and takes the server with it; the step's
    outputs are written when the component returns, and the runner sees a container still
    running after that as one that holds a server, stopped later by undeploy_local's PID.
    """
    import threading

    if os.environ.get(HOLD_ENV) != "1":
        return

    def wait() -> None:
        while _process_alive(record.pid):
            time.sleep(0.5)

    threading.Thread(target=wait, name="hold-server", daemon=False).start()
