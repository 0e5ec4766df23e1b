"""Core modules must import with kfp unavailable: every decision is testable without KFP."""

import subprocess
import sys

from support import REPO_ROOT

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "kfp" or name.startswith("kfp."):
            raise ImportError(f"kfp is blocked in core modules (imported {name})")
sys.meta_path.insert(0, Block())
import importlib
for module in MODULES:
    importlib.import_module(module)
assert not any(m == "kfp" or m.startswith("kfp.") for m in sys.modules)
print("ok", len(MODULES))
"""


def core_modules() -> list[str]:
    modules = []
    for path in sorted((REPO_ROOT / "components").rglob("*.py")):
        relative = path.relative_to(REPO_ROOT / "components")
        if path.name.endswith("component.py") or path.name == "kfp_types.py" or "backends" in relative.parts:
            continue
        parts = ["kfp_serve", "components", *relative.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules.append(".".join(parts))
    return modules


def test_every_core_module_imports_without_kfp():
    modules = core_modules()
    assert "kfp_serve.components.signature" in modules
    assert "kfp_serve.components.triton.config" in modules
    code = f"MODULES = {modules!r}\n{BLOCKER}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {len(modules)}"


def test_component_wrappers_import_core_inside_their_body():
    """KFP embeds only the function source, so wrappers must import core modules in the body."""
    for path in (REPO_ROOT / "components").rglob("*component.py"):
        top_level = [
            line for line in path.read_text().splitlines()
            if line.startswith(("import ", "from "))
        ]
        allowed = ("from kfp", "import kfp", "from typing", "from kfp_serve.components import images")
        assert all(line.startswith(allowed) for line in top_level), (path, top_level)
