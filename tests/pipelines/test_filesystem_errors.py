"""A folder the user chose that is a file, read-only or full: one line that names it, exit code 2
for the input (choose another folder), 3 for the machine (a full disk), and no truncated version
left where a reader looks. These were raw ``OSError`` text or a traceback, exit 1."""

import os

import pytest
from support import requires, tmpfs

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.local import triton_server
from kfp_serve.components.step_failure import StepFailure
from kfp_serve.components.storage.publish import publish
from kfp_serve.pipelines.cli import main

#: folders for the pipeline's gs:// defaults: the output folder is what these tests are about
FOLDERS = ["--param", "model_uri=/nonexistent/model", "--param", "publish_destination=/nonexistent/v"]


def _last_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_an_output_that_is_a_file_is_refused_before_any_step(tmp_path, capsys):
    (tmp_path / "results").write_text("not a folder")
    code = main(["run", "deploy_existing_model", "--output", str(tmp_path / "results"), *FOLDERS])
    assert code == 2
    assert _last_line(capsys) == (f"error: {tmp_path}/results is a file, not a folder (preparing"
                                  " --output); choose a folder")
    code = main(["run", "deploy_existing_model", "--output", str(tmp_path / "results" / "runs"),
                 *FOLDERS])
    assert code == 2
    assert _last_line(capsys) == (f"error: {tmp_path}/results is a file, not a folder, so"
                                  f" {tmp_path}/results/runs cannot be a folder (preparing"
                                  " --output); choose a folder")


def test_a_publish_destination_that_is_a_file_is_refused(digits_repository, tmp_path):
    (tmp_path / "serving").write_text("")
    with pytest.raises(UserError, match=f"^{tmp_path}/serving is a file, not a folder"
                                        r" \(publishing\); choose a folder$"):
        publish(digits_repository, str(tmp_path / "serving"))


@requires("tmpfs")
def test_read_only_folders_are_the_input_s_to_fix(digits_repository, tmp_path, capsys,
                                                  monkeypatch):
    with tmpfs(tmp_path / "ro", 64, read_only=True) as read_only:
        code = main(["run", "deploy_existing_model", "--output", str(read_only), *FOLDERS])
        assert code == 2
        assert _last_line(capsys) == (f"error: {read_only} is not writable (read-only file"
                                      " system) while preparing --output; choose a folder this"
                                      " user can write to")
        with pytest.raises(UserError, match=f"^{read_only} is not writable .* while publishing"):
            publish(digits_repository, str(read_only))
        monkeypatch.setenv(triton_server.STATE_DIR_ENV, str(read_only))
        with pytest.raises(UserError, match=f"^{read_only} is not writable .* while recording"
                                            r" local servers \(set \$KFP_SERVE_STATE_DIR"):
            triton_server.load_deployment("any")


@requires("tmpfs")
def test_a_full_disk_is_the_machine_s_and_leaves_no_truncated_version(tmp_path):
    source = tmp_path / "model"
    source.mkdir()
    for name in ("a.bin", "b.bin", "c.bin"):
        (source / name).write_bytes(os.urandom(300 * 1024))
    with tmpfs(tmp_path / "small", 512) as small:
        with pytest.raises(InfrastructureError) as full:
            publish(source, str(small / "serving"))
        assert str(full.value) == (f"no space left on the device of {small}/serving while"
                                   " publishing; free space there or choose a folder on another"
                                   " disk")
        assert full.value.exit_code == 3
        # v1 stays claimed (readers ignore it: no manifest) and holds no half-copied file
        assert [p.name for p in (small / "serving").iterdir()] == ["v1"]
        assert list((small / "serving" / "v1").iterdir()) == []
        # a step that meets a full disk anywhere ends the same way, not as "OSError ... exit 1"
        try:
            (small / "big.bin").write_bytes(os.urandom(1024 * 1024))
        except OSError as err:
            failure = StepFailure.of(err, "export_onnx")
        assert failure.exit_code == 3
        assert failure.message == ("no space left on a disk it writes to while writing the step's"
                                   " files; free space there or choose a folder on another disk")
        # a copy names the destination that filled up, not the source it read
        copy = OSError(28, "No space left on device", "/venv/stub", None, f"{small}/backends/stub")
        assert StepFailure.of(copy, "deploy_local").message.startswith(
            f"no space left on the device of {small}/backends/stub while writing the step's files")
