"""Run pipelines under kfp.local.DockerRunner in the suite's image, through podman's
Docker-compatible API where no Docker engine runs.

KFP 2.17.3's DockerRunner starts containers with ``auto_remove=True``; podman removes them
before KFP reads the exit code, so a failing component is reported as SUCCESS (KFP assumes 0
when the container is gone) or the run dies with a 500 "no such container".
``run_container`` replaces KFP's ``run_docker_container``: no auto-remove, logs streamed, the
real exit code waited for (and an OOM kill named), then the container removed. It also never
pulls: an image missing from local storage is a one-line error, not a hang on a registry that
cannot be reached.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.polling import poll

OOM_EXIT = 137


HELD: list[Any] = []  # containers that hold a local server after their step finished


def _output_file(command: list[str]) -> Path | None:
    """The executor output path in a component's ``--executor_input`` argument."""
    import json

    for i, arg in enumerate(command[:-1]):
        if arg == "--executor_input":
            try:
                return Path(json.loads(command[i + 1])["outputs"]["outputFile"])
            except (ValueError, KeyError, TypeError):
                return None
    return None


def run_container(client: Any, image: str, command: list[str], volumes: dict[str, Any],
                  **run_args: Any) -> int:
    """kfp.local's container step, done so the exit code is the container's own."""
    import threading

    import docker

    if ":" not in image.rsplit("/", 1)[-1]:
        image = f"{image}:latest"
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return _failed(command, f"image {image!r} is not in local storage; build it with"
                       f" `kfp-serve image build --tag {image}` (nothing is pulled from a"
                       " registry)", 2, 125)
    output = _output_file(command)
    container = client.containers.create(image=image, command=command, volumes=volumes,
                                         detach=True, **run_args)
    held = False
    try:
        container.start()

        def stream() -> None:
            with suppress(docker.errors.APIError):
                for chunk in container.logs(stream=True, follow=True):
                    print(chunk.decode(errors="replace"), end="", flush=True)

        logs = threading.Thread(target=stream, daemon=True)
        logs.start()
        written_at = None
        while True:
            container.reload()
            if container.status in ("exited", "dead", "stopped"):
                break
            if output is not None and output.exists():
                written_at = written_at or time.monotonic()
                if time.monotonic() - written_at > 3:  # done, and still running: it holds a server
                    held = True
                    HELD.append(container)
                    return 0
            time.sleep(0.2)
        logs.join(timeout=10)
        code = int(container.wait().get("StatusCode", 1))
        state = container.attrs.get("State", {})
        if state.get("OOMKilled") or (code == OOM_EXIT and run_args.get("mem_limit")):
            return _failed(command, f"the step's container ran out of its memory limit"
                           f" ({run_args.get('mem_limit')}) and was killed; raise it with --memory",
                           2, code)
        return code
    finally:
        if not held:
            with suppress(docker.errors.APIError):
                container.remove(force=True)


def _failed(command: list[str], message: str, exit_code: int, container_code: int) -> int:
    """A step that failed outside its own code: the line in its log, and recorded where the
    runner reads the step's own error (so it is the run's last line, not KFP's "task failed")."""
    from kfp_serve.components.step_failure import PREFIX, StepFailure, record, step_name

    print(f"\n{PREFIX} {message}", flush=True)
    record(StepFailure(step_name(command), message, exit_code))
    return container_code


def remove_held() -> None:
    """Remove the containers that held servers (their servers were stopped by PID)."""
    import docker

    while HELD:
        with suppress(docker.errors.APIError):
            HELD.pop().remove(force=True)


def install_exit_code_fix() -> None:
    """Point kfp.local's DockerRunner at ``run_container``."""
    from kfp.local import docker_task_handler

    docker_task_handler.run_docker_container = run_container


def _socket_ready(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
            return True
        except OSError:
            return False


@contextmanager
def docker_api(timeout_s: float = 30.0) -> Iterator[str]:
    """A Docker API for docker-py: $DOCKER_HOST when set, else ``podman system service`` on a
    private socket for the duration (stopped by PID)."""
    if os.environ.get("DOCKER_HOST"):
        yield os.environ["DOCKER_HOST"]
        return
    from kfp_serve.pipelines.image_build import podman_env, podman_missing_reason

    reason = podman_missing_reason()
    if reason:
        raise UserError(f"--containers needs a Docker API: no $DOCKER_HOST and {reason}")
    folder = Path(tempfile.mkdtemp(prefix="kfp-serve-podman-"))
    sock = folder / "podman.sock"
    log = open(folder / "service.log", "wb")  # noqa: SIM115 (closed below)
    # cwd: conmon leaves an "oom" marker in its working directory when a container is OOM-killed;
    # in the private folder it goes away with the folder, not into the user's checkout
    process = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                               env=podman_env(), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, cwd=folder)
    try:
        def service_log() -> str:
            return (folder / "service.log").read_text(errors="replace").strip()[-300:]

        def check() -> tuple[bool | None, str]:
            if process.poll() is not None:
                raise InfrastructureError(f"podman system service exited with {process.returncode}:"
                                          f" {service_log()}")
            return (True if _socket_ready(sock) else None), f"no socket at {sock}"

        poll(check, timeout_s, "podman system service did not start", interval_s=0.2,
             detail=lambda: f"log: {service_log()}")
        yield f"unix://{sock}"
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)  # the socket and the service log


def runner_args(state_dir: str, memory: str = "") -> dict[str, Any]:
    """How component containers run locally: the host network and PID namespace (the local
    Triton a deploy step starts is reached and stopped by later steps), the invoking user (so
    outputs in the pipeline root stay writable), ``state_dir`` (inside the mounted pipeline
    root) where deployments are recorded for the steps that follow."""
    from kfp_serve.components.local.triton_server import HOLD_ENV

    args: dict[str, Any] = {"network_mode": "host", "pid_mode": "host",
                            "user": f"{os.getuid()}:{os.getgid()}",
                            "environment": {"HOME": "/tmp", "KFP_SERVE_STATE_DIR": state_dir,
                                            HOLD_ENV: "1"}}
    if memory:
        args["mem_limit"] = memory
    return args
