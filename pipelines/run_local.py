"""Run a pipeline on this machine with ``kfp.local`` (one subprocess per task)."""

from __future__ import annotations

import os
import signal
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp_serve.components.errors import InfrastructureError
from kfp_serve.components.local.triton_server import STATE_DIR_ENV
from kfp_serve.components.staging import writable_folder
from kfp_serve.components.step_failure import ERRORS_FILE_ENV, read_failures
from kfp_serve.components.storage.emulator import EMULATOR_ENV, start_emulator
from kfp_serve.components.storage.uris import is_gcs, parse_gcs_uri
from kfp_serve.pipelines import registry
from kfp_serve.pipelines.interrupt import Interrupted, counted, stop_steps
from kfp_serve.pipelines.params import check_params

STATE = ".kfp-serve-state"  # under the output folder: step errors, the local servers' records


@dataclass(frozen=True)
class LocalRun:
    """Where a local run left its outputs."""

    run_dir: Path | None
    summary_paths: list[Path]
    error: str = ""  # the failed step's own one-line error ("" when the run succeeded)
    exit_code: int = 0  # the failed step's: 2 its input, 3 the infrastructure, 1 a bug

    @property
    def succeeded(self) -> bool:
        return not self.error


def gcs_buckets(pipeline: Any, params: dict[str, Any]) -> list[str]:
    """Buckets named by gs:// values among the run's parameters and the pipeline's defaults."""
    values = {name: spec.default for name, spec in (pipeline.component_spec.inputs or {}).items()}
    values.update(params)
    return sorted({parse_gcs_uri(v).bucket for v in values.values() if isinstance(v, str) and is_gcs(v)})


def run_local(name: str, output_dir: str | Path, params: dict[str, Any],
              gcs_emulator: bool = False, containers: bool = False, memory: str = "") -> LocalRun:
    """Run pipeline ``name`` under ``kfp.local.SubprocessRunner`` with artifacts in output_dir.

    With ``containers`` every task runs in the suite's image under ``kfp.local.DockerRunner``
    (through podman's Docker API where no Docker engine runs), limited to ``memory`` if given.

    With ``gcs_emulator`` a fake-gcs-server on 127.0.0.1 stands in for GCS during the run (its
    objects stay under ``output_dir/gcs-emulator``), with the buckets the parameters name.
    A failed task does not raise: the returned LocalRun carries the error and the run folder,
    whose task folders hold the outputs written before the failure.
    """
    pipeline = registry.load_pipeline(name)
    check_params(pipeline, params, here=True)  # before the first step, as the CLI does
    root = Path(output_dir).resolve()
    writable_folder(root, "preparing --output", STATE, "local")  # before the first step
    if not gcs_emulator:
        return _run(name, pipeline, root, params, containers, memory)
    emulator = start_emulator(root / "gcs-emulator")
    try:
        with _environ(EMULATOR_ENV, emulator.url):  # the task subprocesses inherit it
            for bucket in gcs_buckets(pipeline, params):
                emulator.create_bucket(bucket)
            return _run(name, pipeline, root, params, containers, memory)
    except Interrupted as interrupted:
        interrupted.stopped.append("the GCS emulator")
        raise
    finally:
        emulator.stop()


def _run(name: str, pipeline: Any, root: Path, params: dict[str, Any], containers: bool = False,
         memory: str = "") -> LocalRun:
    from contextlib import ExitStack

    from kfp import local

    entry = registry.PIPELINES[name]
    state = root / STATE
    # the steps' own errors: on the system's temporary disk, so that a full --output disk cannot
    # keep a step from saying so; containers see only the mounted output folder
    handle, errors_path = tempfile.mkstemp(prefix="kfp-serve-step-errors-", suffix=".jsonl",
                                           dir=state if containers else None)
    os.close(handle)
    errors_file = Path(errors_path)
    servers = state / "local"  # the run's local servers are recorded (and logged) here
    before = set(root.iterdir())
    error = ""
    with ExitStack() as stack:
        stack.callback(errors_file.unlink, missing_ok=True)
        for variable, value in ((ERRORS_FILE_ENV, errors_file), (STATE_DIR_ENV, servers)):
            stack.enter_context(_environ(variable, str(value)))  # the task subprocesses inherit it
        if containers:
            from kfp_serve.pipelines.containers import (
                docker_api,
                install_exit_code_fix,
                remove_held,
                runner_args,
            )

            if "DOCKER_HOST" not in os.environ:  # docker-py reads it; ours for this run only
                stack.enter_context(_environ("DOCKER_HOST", stack.enter_context(docker_api())))
            install_exit_code_fix()
            stack.callback(remove_held)
            args = runner_args(str(servers), memory)
            args["environment"][ERRORS_FILE_ENV] = str(errors_file)
            if os.environ.get(EMULATOR_ENV):
                args["environment"][EMULATOR_ENV] = os.environ[EMULATOR_ENV]
            runner = local.DockerRunner(**args)
        else:
            # The components name the suite image; here this venv *is* that image's environment.
            warnings.filterwarnings("ignore", category=RuntimeWarning,
                                    message="You may be attemping to run a task that uses custom")
            runner = local.SubprocessRunner(use_venv=False)
        # a gs:// importer input is copied by the steps (storage.fetch.local_folder)
        warnings.filterwarnings("ignore", category=UserWarning,
                                message="It looks like you're using the remote file")
        local.init(runner=runner, pipeline_root=str(root), raise_on_error=True)
        try:
            pipeline(**params)
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM under `kfp-serve run`
            raise _stop_everything(err, servers) from None
        except RuntimeError as err:  # kfp.local reports a failed task as RuntimeError
            error = str(err).strip().splitlines()[0] if str(err).strip() else "a task failed"
        except Exception as err:
            raise InfrastructureError(f"kfp.local could not run {name}: {err}") from err
        failures = read_failures(errors_file)
    new_dirs = sorted(p for p in set(root.iterdir()) - before if p.is_dir())
    run_dir = new_dirs[-1] if new_dirs else None
    summaries = []
    if run_dir is not None:
        summaries = [run_dir.joinpath(*s) for s in entry.summaries if run_dir.joinpath(*s).is_file()]
    if error and failures:  # the step's own words, not kfp.local's "task failed"
        first = failures[0]
        return LocalRun(run_dir, summaries, f"step {first.step}: {first.message}", first.exit_code)
    return LocalRun(run_dir, summaries, _strip_ansi(error), 1 if error else 0)


@contextmanager
def _environ(variable: str, value: str) -> Iterator[None]:
    """``variable`` set to ``value`` within (the steps inherit it), as it was after."""
    saved = os.environ.get(variable)
    os.environ[variable] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = saved


def _stop_everything(err: KeyboardInterrupt, servers: Path) -> Interrupted:
    """What the pipeline's exit handler would have done, and the steps still running, stopped."""
    from kfp_serve.components.local.triton_server import recorded_deployments, stop_server

    stopped = list(getattr(err, "stopped", []))  # the steps the signal handler stopped
    steps = stop_steps()  # and any still running (Ctrl-C in a library caller: no handler)
    if steps and not stopped:
        stopped.append(counted(steps, "running step"))
    for record in recorded_deployments(servers):
        if stop_server(record):
            stopped.append(f"local Triton {record.deployment!r} (pid {record.pid})")
    return Interrupted(getattr(err, "signum", signal.SIGINT), stopped)


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
