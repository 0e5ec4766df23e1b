"""Build a TorchServe model archive (.mar) and the folders TorchServe-based servers load.

Output layout (one folder serves both):

    config/config.properties      KServe's TorchServe runtime (storageUri = this folder)
    model-store/<name>.mar
    model.mar                     Vertex AI's prebuilt PyTorch container (artifact_uri = this folder)

The archive is made with torch-model-archiver's Python API and holds the model file,
``signature.json`` and the handler (by default :mod:`kfp_serve.components.torchserve.handler`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kfp_serve.components.errors import UserError, first_line
from kfp_serve.components.formats import FORMATS
from kfp_serve.components.signature import SIGNATURE_FILE, ModelSignature

DEFAULT_HANDLER = Path(__file__).parent / "handler.py"
MODEL_FILES = {f.name: f.file for f in FORMATS.values() if f.torchserve}
ENVELOPES = ("", "kserve", "kservev2")


@dataclass(frozen=True)
class ArchiveOptions:
    """TorchServe serving settings written into ``config.properties``'s model snapshot."""

    batch_size: int = 8
    max_batch_delay_ms: int = 50
    workers: int = 1
    response_timeout_s: int = 120
    service_envelope: str = ""  # "" (the handler speaks v1 and v2 itself), kserve, kservev2


@dataclass(frozen=True)
class ArchiveResult:
    folder: Path
    mar: Path
    model_name: str
    config_properties: str


def config_properties(model_name: str, options: ArchiveOptions, model_store: str,
                      inference_port: int = 8085, management_port: int = 8081,
                      metrics_port: int = 8082, grpc_port: int = 7070,
                      grpc_management_port: int = 7071, address: str = "0.0.0.0") -> str:
    """``config.properties`` with a model snapshot that loads ``<model_name>.mar`` at start.

    Only inference listens on ``address`` (KServe's and Vertex AI's routers call it; TorchServe
    then cannot require its token, which those callers do not send). Management and metrics
    listen on 127.0.0.1: the management API registers models and runs their code, so it must
    not face the pod network. Models load only from the model store (``allowed_urls``), and
    nothing is pip-installed at load time (``install_py_dep_per_model=false``): the serving
    image must already hold the model's runtime (torch for TorchScript, onnxruntime for ONNX).
    """
    snapshot = {"name": "startup.cfg", "modelCount": 1, "models": {model_name: {"1.0": {
        "defaultVersion": True, "marName": f"{model_name}.mar",
        "minWorkers": options.workers, "maxWorkers": options.workers,
        "batchSize": options.batch_size, "maxBatchDelay": options.max_batch_delay_ms,
        "responseTimeout": options.response_timeout_s}}}}
    lines = [
        f"inference_address=http://{address}:{inference_port}",
        f"management_address=http://127.0.0.1:{management_port}",
        f"metrics_address=http://127.0.0.1:{metrics_port}",
        f"grpc_inference_address={address}",
        f"grpc_inference_port={grpc_port}",
        "grpc_management_address=127.0.0.1",
        f"grpc_management_port={grpc_management_port}",
        f"allowed_urls=file://{re.escape(model_store.rstrip('/'))}/.*",
        "enable_metrics_api=true",
        "metrics_mode=prometheus",
        "number_of_netty_threads=4",
        "job_queue_size=100",
        "disable_token_authorization=true",
        "enable_envvars_config=true",
        "install_py_dep_per_model=false",
        f"model_store={model_store}",
        f"model_snapshot={json.dumps(snapshot, separators=(',', ':'))}",
    ]
    if options.service_envelope:
        lines.append(f"service_envelope={options.service_envelope}")
    return "\n".join(lines) + "\n"


def check_handler(handler: Path) -> None:
    """Import the handler in a fresh interpreter, as TorchServe's worker would, now rather than
    at serve time; it must define ``handle(data, context)``."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('handler', {str(handler)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "if not callable(getattr(module, 'handle', None)):\n"
        "    sys.exit('defines no handle(data, context) function')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise UserError(f"handler {handler.name} does not import: {lines[-1] if lines else 'no output'}")


def build_archive(model_dir: str | Path, model_format: str, output_dir: str | Path,
                  model_name: str, options: ArchiveOptions = ArchiveOptions(),
                  handler: str | Path | None = None, vertex_layout: bool = True) -> ArchiveResult:
    """Archive an exported model (ONNX or TorchScript) for TorchServe, KServe and Vertex AI."""
    from model_archiver import ModelArchiver, ModelArchiverConfig
    from model_archiver.model_archiver_error import ModelArchiverError

    from kfp_serve.components.staging import staged_directory
    from kfp_serve.components.triton.config import validate_model_name

    validate_model_name(model_name)
    if model_format not in MODEL_FILES:
        raise UserError(f"TorchServe archives take {sorted(MODEL_FILES)} models, not {model_format!r}")
    if options.service_envelope not in ENVELOPES:
        raise UserError(f"service_envelope {options.service_envelope!r} is not one of {list(ENVELOPES)}")
    if options.batch_size < 1 or options.workers < 1 or options.max_batch_delay_ms < 0:
        raise UserError("batch_size and workers must be >= 1 and max_batch_delay_ms >= 0")
    source = Path(model_dir)
    model_file = source / MODEL_FILES[model_format]
    if not model_file.is_file():
        raise UserError(f"{model_file} is missing; pass the {model_format} export's artifact")
    ModelSignature.load(source)  # present and valid
    handler_path = Path(handler) if handler else DEFAULT_HANDLER
    if not handler_path.is_file():
        raise UserError(f"handler {handler_path} does not exist")
    check_handler(handler_path)
    with staged_directory(output_dir) as staging:
        store = staging / "model-store"
        store.mkdir()
        extra = [str(source / SIGNATURE_FILE)]
        config = ModelArchiverConfig(
            model_name=model_name, handler=str(handler_path), version="1.0",
            serialized_file=str(model_file), extra_files=",".join(extra),
            export_path=str(store), force=True, requirements_file=None,
        )
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.WARNING)  # the archiver logs every file at INFO
        try:
            ModelArchiver.generate_model_archive(config)
        except ModelArchiverError as err:
            raise UserError(f"torch-model-archiver failed: {first_line(err)}") from err
        finally:
            root.setLevel(level)
        (staging / "config").mkdir()
        text = config_properties(model_name, options, "/mnt/models/model-store")
        (staging / "config" / "config.properties").write_text(text)
        if vertex_layout:
            shutil.copy2(store / f"{model_name}.mar", staging / "model.mar")
    folder = Path(output_dir)
    return ArchiveResult(folder, folder / "model-store" / f"{model_name}.mar", model_name, text)
