"""Run a pipeline on this machine with ``kfp.local`` (one subprocess per task)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp_serve.components.errors import InfrastructureError
from kfp_serve.pipelines import registry


@dataclass(frozen=True)
class LocalRun:
    """Where a local run left its outputs."""

    run_dir: Path | None
    summary_paths: list[Path]
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return not self.error


def run_local(name: str, output_dir: str | Path, params: dict[str, Any]) -> LocalRun:
    """Run pipeline ``name`` under ``kfp.local.SubprocessRunner`` with artifacts in output_dir.

    A failed task does not raise: the returned LocalRun carries the error and the run folder,
    whose task folders hold the outputs written before the failure.
    """
    from kfp import local

    entry = registry.PIPELINES[name]
    pipeline = registry.load_pipeline(name)
    root = Path(output_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    # The components name the suite image; here this venv *is* that image's environment.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom",
                            category=RuntimeWarning)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    error = ""
    try:
        pipeline(**params)
    except RuntimeError as err:  # kfp.local reports a failed task as RuntimeError
        error = str(err).strip().splitlines()[0] if str(err).strip() else "a task failed"
    except Exception as err:
        raise InfrastructureError(f"kfp.local could not run {name}: {err}") from err
    new_dirs = sorted(p for p in set(root.iterdir()) - before if p.is_dir())
    run_dir = new_dirs[-1] if new_dirs else None
    summaries = []
    if run_dir is not None:
        summaries = [run_dir.joinpath(*s) for s in entry.summaries if run_dir.joinpath(*s).is_file()]
    return LocalRun(run_dir, summaries, _strip_ansi(error))


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
