"""Helpers every export shares: stage-then-commit output folders, and a quiet exporter."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

_NOISY_LOGGERS = ("torch.onnx", "onnxscript", "torch._dynamo", "torch.export", "torch._export",
                  "torch.jit", "onnx_ir", "torch.fx", "torch._guards", "torch._subclasses")


@contextlib.contextmanager
def staged_directory(output_dir: str | Path) -> Iterator[Path]:
    """Yield a staging folder beside ``output_dir``; it becomes ``output_dir`` only on success.

    Readers never see a half-written export, and a failed one leaves nothing behind.
    """
    output = Path(output_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-staging-", dir=output.parent))
    staging.chmod(0o755)
    try:
        yield staging
        if output.is_dir():
            shutil.rmtree(output)
        elif output.exists():
            output.unlink()
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence exporter chatter: deprecation warnings (TorchScript is deprecated in torch 2.x,
    and we know) and INFO/WARNING logs of every pass. Errors still raise."""
    saved = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
