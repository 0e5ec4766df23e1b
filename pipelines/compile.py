"""Compile every component and pipeline to YAML (``compiled/``), deterministically."""

from __future__ import annotations

import difflib
import filecmp
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kfp_serve.pipelines import registry


@dataclass(frozen=True)
class CheckResult:
    stale: list[str]
    missing: list[str]
    extra: list[str]
    diffs: dict[str, str]

    @property
    def ok(self) -> bool:
        return not (self.stale or self.missing or self.extra)


def compile_all(output_dir: str | Path) -> list[Path]:
    """Write ``components/<name>.yaml`` and ``pipelines/<name>.yaml`` under ``output_dir``."""
    from kfp import compiler

    out = Path(output_dir)
    written = []
    for kind, names, load in (
        ("components", registry.component_names(), registry.load_component),
        ("pipelines", registry.pipeline_names(), registry.load_pipeline),
    ):
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            path = folder / f"{name}.yaml"
            compiler.Compiler().compile(load(name), str(path))
            written.append(path)
    return written


def _yaml_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.glob("*/*.yaml")}


def check(compiled_dir: str | Path) -> CheckResult:
    """Recompile into a temporary folder and compare with ``compiled_dir``."""
    compiled = Path(compiled_dir)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        compile_all(fresh)
        want, have = _yaml_files(fresh), _yaml_files(compiled)
        stale = sorted(
            name for name in want & have
            if not filecmp.cmp(fresh / name, compiled / name, shallow=False)
        )
        diffs = {name: _diff(compiled / name, fresh / name) for name in stale}
        return CheckResult(stale, sorted(want - have), sorted(have - want), diffs)


def _diff(old: Path, new: Path, limit: int = 20) -> str:
    lines = difflib.unified_diff(old.read_text().splitlines(), new.read_text().splitlines(),
                                 f"compiled/{old.parent.name}/{old.name}", "fresh", lineterm="")
    return "\n".join(list(lines)[:limit])
