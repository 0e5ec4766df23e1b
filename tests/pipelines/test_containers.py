"""The component image as a product: built with podman from a debootstrap base, and
train_to_serve_local run inside it under kfp.local.DockerRunner (through podman's Docker API).

Slow (the image build takes minutes): marked ``containers``; skipped with the reason where
podman cannot run containers here.
"""

import io
import json
import subprocess
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from support import REPO_ROOT, requires

from kfp_serve.components import images
from kfp_serve.components.errors import UserError
from kfp_serve.pipelines import image_build as image

pytestmark = [pytest.mark.containers, requires("podman")]


@pytest.fixture(scope="session")
def base_image():
    if not image.image_exists(image.BASE_TAG):
        try:
            image.make_base_image()
        except UserError as err:
            pytest.skip(f"no base image: {err}")
    return image.BASE_TAG


@pytest.fixture(scope="session")
def suite_image(base_image):
    built = image.build_image(images.SUITE_IMAGE, base_image, REPO_ROOT)
    print(f"\nimage {built.tag}: {built.size_bytes / 2**30:.2f} GiB, user {built.user},"
          f" built in {built.seconds:.0f} s")
    assert built.user == "1000"
    return built.tag


@pytest.fixture
def docker_client():
    import docker

    from kfp_serve.pipelines.containers import docker_api

    with docker_api() as host:
        client = docker.DockerClient(base_url=host)
        yield client
        client.close()


def test_the_image_has_what_every_component_imports(suite_image):
    """Each component's third-party imports happen inside its function: import them all here,
    so a dependency missing from the image fails now, not in a user's cluster."""
    code = ("import kfp_serve.components as c; [getattr(c, n) for n in c.__all__];"
            " import kfp_serve.components.validate.vertex_grpc;"
            " import google.cloud.aiplatform_v1, google.cloud.aiplatform_v1beta1, google.cloud.storage,"
            " kubernetes, onnx, onnxruntime, tritonclient.grpc, tritonclient.http, model_archiver,"
            " torch, sklearn, transformers, tokenizers, safetensors, aiohttp; print('ok')")
    done = image.podman("run", "--rm", "--network", "host", suite_image, "python3", "-c", code,
                        check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-800:]


def test_train_to_serve_local_runs_inside_the_image(suite_image, tmp_path):
    from kfp_serve.pipelines.run_local import run_local

    params = {"epochs": 4, "min_accuracy": 0.8, "profile_seconds": 0.2}
    result = run_local("train_to_serve_local", tmp_path / "runs", params, gcs_emulator=True,
                       containers=True)
    assert result.succeeded, result.error
    report = next(p for p in result.summary_paths if p.parent.name == "validate-endpoint")
    assert "Endpoint validation: PASSED" in report.read_text()
    undeploy = json.loads((result.run_dir / "undeploy-local" / "executor_output.json").read_text())
    assert undeploy["parameterValues"]["Output"] is True  # the server was stopped by PID


def test_a_failing_component_fails_the_run(suite_image, tmp_path):
    from kfp_serve.pipelines.run_local import run_local

    result = run_local("train_to_serve_local", tmp_path / "runs", {"epochs": 1, "min_accuracy": 1.01},
                       gcs_emulator=True, containers=True)
    assert not result.succeeded
    # the step's own one-line error, from inside its container, with the user-error exit code
    assert result.error.startswith("step train_digits_classifier: test accuracy 0.")
    assert result.error.endswith("is below min_accuracy=1.01; train longer (epochs) or lower"
                                 " the gate")
    assert result.exit_code == 2


def test_an_image_that_is_not_local_is_an_error_not_a_pull(docker_client, tmp_path, monkeypatch):
    """Said as the step's own error, so it is the run's last line (it was mid-log, and the last
    line KFP's generic failure, exit 1)."""
    from kfp_serve.components.step_failure import ERRORS_FILE_ENV, StepFailure, read_failures
    from kfp_serve.pipelines.containers import run_container

    monkeypatch.setenv(ERRORS_FILE_ENV, str(tmp_path / "errors.jsonl"))
    out = io.StringIO()
    with redirect_stdout(out):
        code = run_container(docker_client, "registry.invalid/kfp-serve:nope",
                             ["true", "--function_to_execute", "export_onnx"], {})
    assert code == 125
    message = ("image 'registry.invalid/kfp-serve:nope' is not in local storage; build it with"
               " `kfp-serve image build --tag registry.invalid/kfp-serve:nope` (nothing is pulled"
               " from a registry)")
    assert out.getvalue().strip().endswith(f"kfp-serve: error: {message}")
    assert read_failures(tmp_path / "errors.jsonl") == [StepFailure("export_onnx", message, 2)]


def test_running_out_of_the_memory_limit_is_named(suite_image, docker_client):
    from kfp_serve.pipelines.containers import run_container

    out = io.StringIO()
    hog = "x = bytearray(512 * 2**20); x[::4096] = b'1' * len(x[::4096])"
    with redirect_stdout(out):
        code = run_container(docker_client, suite_image, ["python3", "-c", hog], {},
                             mem_limit="64m", network_mode="host")
    assert code == 137
    assert ("the step's container ran out of its memory limit (64m) and was killed; raise it with"
            " --memory") in out.getvalue()
    # conmon's "oom" marker stays in the service's private folder, not in the caller's cwd
    assert not (Path.cwd() / "oom").exists()


def test_a_base_image_without_python_is_a_one_line_error(base_image, tmp_path):
    (tmp_path / "Containerfile").write_text(
        f"FROM {base_image}\nRUN rm -f /usr/bin/python3*\n")
    done = subprocess.run(["podman", "build", "--isolation", "chroot", "-t", "localhost/no-python:test",
                           str(tmp_path)], env=image.podman_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]
    with pytest.raises(UserError) as info:
        image.build_image("localhost/kfp-serve:no-python", "localhost/no-python:test", REPO_ROOT)
    assert "BASE_IMAGE has no usable python3 with venv/ensurepip" in str(info.value)
    assert "\n" not in str(info.value)


def test_the_image_builds_only_on_a_base_pinned_by_digest(base_image, tmp_path):
    """A tag can move and change what ships: the Dockerfile refuses an unpinned BASE_IMAGE in
    one line, and `kfp-serve image build` pins the local base by its digest itself."""
    assert image.pinned(base_image).startswith(base_image.rsplit(":", 1)[0] + "@sha256:")
    done = subprocess.run(["podman", "build", "--isolation", "chroot", "--network", "host",
                           "--build-arg", f"BASE_IMAGE={base_image}", "-f", "Dockerfile",
                           "-t", "localhost/kfp-serve:unpinned", str(REPO_ROOT)],
                          env=image.podman_env(), capture_output=True, text=True)
    assert done.returncode != 0
    assert f"BASE_IMAGE {base_image} is not pinned by digest: pass --build-arg" in done.stdout + done.stderr
