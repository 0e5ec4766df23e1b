"""The floors of the code, enforced: what may import what (docs/development.md).

    pipelines/definitions  ->  kfp_serve.components (the component functions)
    pipelines (CLI, runners, compiler)  ->  anything in components
    components/<capability>/[*_]component.py  ->  its folder's core modules, other capabilities'
                                             core modules, the ground floor
    components/<capability>/*.py (core)  ->  other capabilities' core modules (no cycles),
                                            the ground floor
    components/*.py (ground floor)  ->  the ground floor only
"""

from __future__ import annotations

import ast
from pathlib import Path

from support import REPO_ROOT

COMPONENTS = REPO_ROOT / "components"
PIPELINES = REPO_ROOT / "pipelines"
GROUND = {p.stem for p in COMPONENTS.glob("*.py") if p.stem != "__init__"}
CAPABILITIES = {p.name for p in COMPONENTS.iterdir() if (p / "__init__.py").is_file()}


def _module_name(path: Path) -> str:
    if path.is_relative_to(COMPONENTS):
        parts = ("kfp_serve", "components", *path.relative_to(COMPONENTS).with_suffix("").parts)
    else:
        parts = ("kfp_serve", "pipelines", *path.relative_to(PIPELINES).with_suffix("").parts)
    return ".".join(p for p in parts if p != "__init__")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every kfp_serve import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kfp_serve":
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "kfp_serve"]
    return found


def _targets(module: str, names: list[str]) -> list[str]:
    """The modules an import reaches: ``from kfp_serve.components import images`` reaches
    ``kfp_serve.components.images``; ``from kfp_serve.components import export_onnx`` (a
    component function) reaches the package itself."""
    if module in ("kfp_serve.components", "kfp_serve.pipelines"):
        submodules = GROUND | CAPABILITIES if module.endswith("components") else set()
        return [f"{module}.{n}" if n in submodules else module for n in names] or [module]
    return [module]


def _floor(module: str) -> tuple[str, str]:
    """(floor, capability) of a kfp_serve module."""
    parts = module.split(".")
    if parts[1] == "pipelines":
        return ("definitions" if len(parts) > 2 and parts[2] == "definitions" else "pipelines"), ""
    if len(parts) == 2:
        return "package", ""
    if parts[2] in GROUND:
        return "ground", ""
    wrapper = len(parts) > 3 and (parts[3] in ("component", "kfp_types") or parts[3].endswith("_component"))
    kind = "wrapper" if wrapper else "core"
    return kind, parts[2]


def _edges_of(path: Path, source: str) -> list[tuple[str, str, str, list[str]]]:
    """(file, importing module, imported module, imported names) for every kfp_serve import of
    one file, read as the module ``source``."""
    where = str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else path.name
    return [(where, source, t, names) for module, names in _imports(path) for t in _targets(module, names)]


def _edges() -> list[tuple[str, str, str, list[str]]]:
    """Every kfp_serve import of components/ and pipelines/."""
    return [edge for path in sorted([*COMPONENTS.rglob("*.py"), *PIPELINES.rglob("*.py")])
            for edge in _edges_of(path, _module_name(path))]


ALLOWED = {
    "ground": {"ground"},
    "core": {"ground", "core"},
    "wrapper": {"ground", "core", "wrapper"},
    "package": {"ground", "wrapper"},  # components/__init__ re-exports the component functions
    "definitions": {"package", "definitions", "ground"},
    "pipelines": {"package", "ground", "core", "wrapper", "pipelines", "definitions"},
}


def floor_violations(edges) -> list[str]:
    """Imports that go up a floor."""
    wrong = []
    for path, source, target, _ in edges:
        src_floor, _ = _floor(source)
        dst_floor, _ = _floor(target)
        if dst_floor not in ALLOWED[src_floor]:
            wrong.append(f"{path}: a {src_floor} module imports {target} ({dst_floor})")
    return wrong


def capability_cycles(edges) -> list[str]:
    """Capabilities whose core modules reach themselves through other capabilities' cores."""
    graph: dict[str, set[str]] = {c: set() for c in CAPABILITIES}
    for _, source, target, _ in edges:
        (src_floor, src_cap), (dst_floor, dst_cap) = _floor(source), _floor(target)
        if src_floor == "core" and dst_floor == "core" and src_cap != dst_cap:
            graph.setdefault(src_cap, set()).add(dst_cap)
            graph.setdefault(dst_cap, set())

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    return [c for c in sorted(graph) if reaches(c, c, set())]


def private_reaches(edges) -> list[str]:
    """Imports of another module's private (``_``) names."""
    return [f"{path}: {source} imports {', '.join(n for n in names if n.startswith('_'))} from {target}"
            for path, source, target, names in edges
            if target != source and any(n.startswith("_") for n in names)]


def test_every_import_goes_down_a_floor_or_sideways():
    assert floor_violations(_edges()) == []


def test_capability_folders_import_each_other_without_cycles():
    assert capability_cycles(_edges()) == []


def test_nobody_reaches_into_another_modules_private_names():
    assert private_reaches(_edges()) == []


def test_each_rule_fails_on_a_probe_that_breaks_it(tmp_path):
    """The rules themselves can fail: a probe file read as a ground-floor module (errors.py), and
    two read as core modules of capabilities that import each other, break each rule once and
    each rule names what broke it."""
    ground = tmp_path / "probe.py"
    ground.write_text("def f():\n    from kfp_serve.components.export.onnx_export import export_onnx\n"
                      "    from kfp_serve.components.storage.publish import _claimed\n")
    edges = _edges_of(ground, "kfp_serve.components.errors")
    assert floor_violations(edges) == [
        "probe.py: a ground module imports kfp_serve.components.export.onnx_export (core)",
        "probe.py: a ground module imports kfp_serve.components.storage.publish (core)"]
    assert private_reaches(edges) == [
        "probe.py: kfp_serve.components.errors imports _claimed from kfp_serve.components.storage.publish"]
    there = tmp_path / "there.py"
    there.write_text("from kfp_serve.components.triton.config import build_config\n")
    back = tmp_path / "back.py"
    back.write_text("from kfp_serve.components.storage.publish import publish\n")
    cycle = [*_edges_of(there, "kfp_serve.components.storage.probe"),
             *_edges_of(back, "kfp_serve.components.triton.probe")]
    assert floor_violations(cycle) == [] and capability_cycles(cycle) == ["storage", "triton"]
