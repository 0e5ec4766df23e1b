"""Build a Triton model repository from an exported model artifact."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from kfp_serve.components.errors import UserError
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.triton.config import (
    PLATFORMS,
    TritonModelOptions,
    build_config,
    to_pbtxt,
)

CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True)
class RepositoryResult:
    """Where the model landed inside the repository."""

    repository: Path
    model_name: str
    version: int
    config_text: str


def build_repository(model_dir: str | Path, model_format: str, repository_dir: str | Path,
                     model_name: str, options: TritonModelOptions,
                     version: int = 1) -> RepositoryResult:
    """Write ``<repository>/<model_name>/config.pbtxt`` and ``<version>/<model file>``.

    The config is checked against the model file before anything is written; the repository
    appears at ``repository_dir`` only once complete.
    """
    from kfp_serve.components.export.onnx_export import (
        EXTERNAL_DATA_FILE,
        check_graph_against_signature,
    )
    from kfp_serve.components.export.staging import staged_directory

    if version < 1:
        raise UserError(f"version {version} must be >= 1 (Triton version folders are 1, 2, ...)")
    source = Path(model_dir)
    signature = ModelSignature.load(source)
    config = build_config(model_name, model_format, signature, options)
    filename = PLATFORMS[model_format][2]
    model_file = source / filename
    if not model_file.is_file():
        raise UserError(f"{model_file} is missing; pass the {model_format} export's artifact")
    if model_format == "onnx":
        check_graph_against_signature(model_file, signature)
    text = to_pbtxt(config)
    with staged_directory(repository_dir) as staging:
        version_dir = staging / model_name / str(version)
        version_dir.mkdir(parents=True)
        shutil.copy2(model_file, version_dir / filename)
        external = source / EXTERNAL_DATA_FILE
        if model_format == "onnx" and external.is_file():  # weights of models over 2 GiB
            shutil.copy2(external, version_dir / EXTERNAL_DATA_FILE)
        (staging / model_name / CONFIG_FILE).write_text(text)
    return RepositoryResult(Path(repository_dir), model_name, version, text)
