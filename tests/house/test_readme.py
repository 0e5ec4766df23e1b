"""The README runs as written: every command it shows that needs no cloud is run, every other one
is parsed (by the CLI's own parser, by make), every Python block compiles, every link resolves,
and its sections are a user's (quick start, install, pipelines, components, troubleshooting,
limits), with the internals in docs/."""

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
SECTIONS = ["Quick start", "Install", "Pipelines and what they need", "The command line",
            "Bring your own model", "The model contract: what a training step hands to the suite",
            "Components", "Running on Kubeflow Pipelines and Vertex AI Pipelines", "KServe",
            "Vertex AI", "LLMs", "Troubleshooting", "Limits", "Development"]
#: commands that need a cloud, a registry or a Docker engine: parsed, not run
NEEDS_A_CLOUD = ("docker", "gcloud", "kfp-serve submit")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def _commands() -> list[str]:
    """Every shell command of the README's bash blocks, continuation lines joined, comments cut."""
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _argv(command: str) -> list[str]:
    """The words of ``command`` after leading VAR=value assignments."""
    words = shlex.split(command)
    while words and re.match(r"^[A-Z_]+=", words[0]):
        words.pop(0)
    return words


def test_the_sections_are_a_user_s():
    assert re.findall(r"^## (.+)$", README, flags=re.M) == SECTIONS
    assert len(README.splitlines()) < 400  # the internals live in docs/


def test_every_link_resolves():
    for target in re.findall(r"\]\(([^)\s]+)\)", README):
        path, _, anchor = target.partition("#")
        if target.startswith("http"):
            continue
        document = REPO_ROOT / path if path else REPO_ROOT / "README.md"
        assert document.exists(), target
        if anchor:
            headings = re.findall(r"^#+ (.+)$", document.read_text(), flags=re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
            assert anchor in slugs, target


def test_every_python_block_compiles_and_the_example_is_the_file_that_runs():
    blocks = _blocks("python")
    for block in blocks:
        ast.parse(block)
    example = (REPO_ROOT / "examples" / "bring_your_own_model.py").read_text()
    assert example in blocks


def test_every_command_parses():
    from kfp_serve.pipelines.cli import _parser

    targets = set(re.findall(r"^([\w-]+):", (REPO_ROOT / "Makefile").read_text(), flags=re.M))
    seen = set()
    for command in _commands():
        argv = _argv(command)
        program = argv[0]
        seen.add(program)
        if program == "kfp-serve":
            _parser().parse_args(argv[1:])  # exits 2 (SystemExit) on a flag that does not exist
        elif program == "make":
            assert set(argv[1:]) <= targets, command
        elif program == "python":
            assert (REPO_ROOT / argv[1]).is_file(), command
        elif program == "pip":
            assert argv[1] == "install", command
        elif program == ".":
            assert argv[1] == ".venv/bin/activate", command
        else:
            assert program in ("docker", "DIGEST=$(docker"), command
    assert {"kfp-serve", "make", "python", "pip"} <= seen


def test_the_commands_that_need_no_cloud_run(tmp_path):
    """`kfp-serve list` and the checks of compiled/ and docs/, as the README shows them."""
    for command in _commands():
        argv = _argv(command)
        if argv[:2] == ["kfp-serve", "list"] or argv[-1:] == ["--check"]:
            done = subprocess.run([str(Path(sys.executable).parent / argv[0]), *argv[1:]],
                                  cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, (command, done.stderr[-500:])


@pytest.mark.e2e
def test_bring_your_own_model_runs_as_written(tmp_path):
    """The README's example and its command, in a fresh folder, in bash, as a user types them."""
    block = next(b for b in _blocks("bash") if "examples/bring_your_own_model.py" in b)
    script = block.replace("examples/", f"{REPO_ROOT}/examples/")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-ec", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "# Endpoint validation: PASSED" in done.stdout
    assert (tmp_path / "serving" / "v1" / "_kfp_serve_manifest.json").is_file()
    assert not [p for p in NEEDS_A_CLOUD if p in block]
