"""Inside a step an uncaught error ends the log in one line with the exit code of who must act."""

import json
import subprocess
import sys

import pytest

RAISE = {
    "user": ("from kfp_serve.components.errors import UserError\n"
             "raise UserError('model.pt2 is missing; save the model with save_torch_model')"),
    "infrastructure": ("from kfp_serve.components.errors import InfrastructureError\n"
                       "raise InfrastructureError('tritonserver exited with code 1:\\n  log tail')"),
    "bug": "raise KeyError('uri')",
}


def _step(kind: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = f"import kfp_serve.components\n{RAISE[kind]}\n"
    return subprocess.run([sys.executable, "-c", code, "--function_to_execute", "export_onnx"],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("kind", "exit_code", "line"), [
    ("user", 2, "kfp-serve: error: model.pt2 is missing; save the model with save_torch_model"),
    ("infrastructure", 3, "kfp-serve: error: tritonserver exited with code 1: log tail"),
    ("bug", 1, "kfp-serve: error: KeyError: 'uri'"),
])
def test_inside_a_step_the_error_is_the_last_line_and_the_exit_code_names_who_acts(
        kind, exit_code, line, tmp_path):
    errors = tmp_path / "errors.jsonl"
    env = {"PATH": "/usr/bin:/bin", "_KFP_RUNTIME": "true", "KFP_SERVE_STEP_ERRORS": str(errors)}
    done = _step(kind, env)
    assert done.returncode == exit_code
    assert "Traceback (most recent call last)" in done.stderr  # still there for the curious
    assert done.stderr.strip().splitlines()[-1] == line
    recorded = json.loads(errors.read_text())
    assert recorded == {"step": "export_onnx", "message": line.removeprefix("kfp-serve: error: "),
                        "exit_code": exit_code}


def test_outside_a_step_nothing_changes():
    done = _step("user", {"PATH": "/usr/bin:/bin"})
    assert done.returncode == 1 and "kfp-serve: error" not in done.stderr
