"""Output folders: stage-then-commit folders every export shares, folders checked writable before
use, and a quiet exporter."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from kfp_serve.components.errors import filesystem_error

_NOISY_LOGGERS = ("torch.onnx", "onnxscript", "torch._dynamo", "torch.export", "torch._export",
                  "torch.jit", "onnx_ir", "torch.fx", "torch._guards", "torch._subclasses")


def writable_folder(folder: Path, doing: str, *inside: str) -> Path:
    """``folder`` (and its subfolders ``inside``), made and written to once, so that a file in
    the way or a read-only or full disk fails here, in one line naming ``folder``, rather than
    at the first real write."""
    try:
        (folder.joinpath(*inside) if inside else folder).mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise filesystem_error(err, folder, doing) from err
    return folder


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


@contextlib.contextmanager
def native_output_kept_out() -> Iterator[None]:
    """Keep what native code writes to stdout and stderr (the TorchScript ONNX exporter prints
    the whole graph there when it fails) out of the user's terminal: file descriptors 1 and 2
    point at a discarded temporary file while the block runs."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)
