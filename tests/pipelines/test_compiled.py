"""compiled/ matches the code (golden files), and the compiled YAML is usable on its own."""

import subprocess
import sys
from pathlib import Path

import yaml
from kfp import compiler, dsl
from kfp.components import load_component_from_file
from support import REPO_ROOT

from kfp_serve.pipelines import compile as compiling
from kfp_serve.pipelines import registry
from kfp_serve.pipelines.cli import main

COMPILED = REPO_ROOT / "compiled"


def test_compiled_folder_matches_the_code():
    result = compiling.check(COMPILED)
    assert result.ok, (
        f"compiled/ is out of date (stale {result.stale}, missing {result.missing}, extra"
        f" {result.extra}); run `kfp-serve compile` and commit the result"
    )


def test_compile_is_deterministic(tmp_path):
    compiling.compile_all(tmp_path / "a")
    compiling.compile_all(tmp_path / "b")
    for path in (tmp_path / "a").rglob("*.yaml"):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()


def test_check_lists_stale_missing_and_extra(tmp_path, capsys):
    compiling.compile_all(tmp_path)
    (tmp_path / "components" / "export_onnx.yaml").unlink()
    stale = tmp_path / "components" / "deploy_local.yaml"
    stale.write_text(stale.read_text().replace("120.0", "60.0"))
    (tmp_path / "pipelines" / "old_pipeline.yaml").write_text("{}")
    assert main(["compile", "--check", "--output", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"stale: {tmp_path}/components/deploy_local.yaml" in err
    assert f"missing: {tmp_path}/components/export_onnx.yaml" in err
    assert f"extra: {tmp_path}/pipelines/old_pipeline.yaml" in err
    assert f"run `kfp-serve compile --output {tmp_path}`" in err
    # the diff of the stale file shows the changed default, both sides
    assert "-          defaultValue: 60.0" in err and "+          defaultValue: 120.0" in err


def _images(path: Path) -> set[str]:
    spec = yaml.safe_load(path.read_text())
    # every executor but dsl.importer's (which runs no container) names an image
    return {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()
            if "importer" not in e}


def test_every_component_uses_the_suite_image():
    from kfp_serve.components import images

    for path in COMPILED.rglob("*.yaml"):
        assert _images(path) == {images.default_image()}, path


def test_compile_against_a_users_image(tmp_path):
    image = "registry.example.com/team/kfp-serve:custom"
    result = subprocess.run(
        [sys.executable, "-m", "kfp_serve.pipelines.cli", "compile", "--output", str(tmp_path),
         "--image", image], capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    files = list(tmp_path.rglob("*.yaml"))
    assert len(files) == len(registry.component_names()) + len(registry.pipeline_names())
    assert all(_images(path) == {image} for path in files)


def test_compiled_components_compose_into_a_new_pipeline(tmp_path):
    loaded = {p.stem: load_component_from_file(str(p)) for p in (COMPILED / "components").glob("*.yaml")}
    assert sorted(loaded) == registry.component_names()

    @dsl.pipeline(name="from-yaml")
    def from_yaml(model_name: str = "digits"):
        train = loaded["train_digits_classifier"](epochs=3)
        export = loaded["export_onnx"](model=train.outputs["model"])
        loaded["build_triton_repository"](model=export.outputs["onnx_model"], model_name=model_name)

    out = tmp_path / "from_yaml.yaml"
    compiler.Compiler().compile(from_yaml, str(out))
    spec = yaml.safe_load(out.read_text())
    assert set(spec["root"]["dag"]["tasks"]) == {"train-digits-classifier", "export-onnx",
                                                 "build-triton-repository"}


def test_component_reference_matches_the_code():
    from kfp_serve.pipelines import component_docs

    text = component_docs.render()
    assert (REPO_ROOT / "docs" / "components.md").read_text() == text, (
        "docs/components.md is out of date; run `kfp-serve docs` and commit it")
    assert "## `deploy_kserve`" in text and "| `canary_traffic_percent` | Integer | `100` |" in text


def test_every_input_and_output_is_documented():
    """The Kubeflow UI shows these descriptions: a parameter or output without one is a blank."""
    from kfp_serve.pipelines import registry

    missing = []
    for name in registry.component_names():
        spec = registry.load_component(name).component_spec
        for kind, items in (("input", spec.inputs), ("output", spec.outputs)):
            missing += [f"{name}: {kind} {key}" for key, value in (items or {}).items()
                        if not (value.description or "").strip()]
    assert missing == []
