"""Bring your own model: every architecture of the zoo goes through the documented contract with
default parameters, and is served by real servers.

Each model is saved from its eager module with torch tensors as the example inputs, exported to
ONNX and TorchScript with defaults (each verified at two batch sizes and, where a dim besides
the batch is dynamic, at a second size of it), packed into one Triton repository, served by the
real local Triton and validated at two batch sizes and two sequence lengths; the TorchScript
exports are also packed as .mar archives and served by a real TorchServe.
"""

from __future__ import annotations

import json
import time

import pytest
from fakes.torchserve_runner import torchserve_store
from model_zoo import ZOO
from support import requires

from kfp_serve.components.errors import KfpServeError, UserError, VerificationError
from kfp_serve.components.export.onnx_export import export_onnx
from kfp_serve.components.export.serving import export_for_serving
from kfp_serve.components.export.torchscript_export import export_torchscript
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.local import triton_server
from kfp_serve.components.model_artifact import ARTIFACT_INFO_FILE, save_torch_model
from kfp_serve.components.signature import ModelSignature, TensorSpec
from kfp_serve.components.triton.config import TritonModelOptions, triton_tensor_names
from kfp_serve.components.triton.repository import ModelEntry, build_multi_model_repository
from kfp_serve.components.validate.targets import (
    HttpTarget,
    OipBinaryRestTarget,
    OipRestTarget,
    resolve_transport,
)
from kfp_serve.components.validate.tensors import Instances
from kfp_serve.components.validate.validation import validate

pytestmark = pytest.mark.e2e
FORMATS = ("onnx", "torchscript")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """name -> {"model": dir, "onnx": dir, "torchscript": dir, "seconds": {...}}: every zoo
    model saved and exported with default parameters."""
    root = tmp_path_factory.mktemp("zoo")
    saved = {}
    for entry in ZOO:
        folder = root / entry.name
        began = time.perf_counter()
        save_torch_model(entry.build(), entry.signature, entry.example(4), folder / "model")
        seconds = {"save": time.perf_counter() - began}
        saved[entry.name] = {"model": folder / "model", "seconds": seconds}
        for fmt, export in (("onnx", export_onnx), ("torchscript", export_torchscript)):
            began = time.perf_counter()
            if fmt == "onnx" and entry.no_onnx:
                with pytest.raises(UserError) as refused:
                    export(folder / "model", folder / fmt)
                saved[entry.name]["refused"] = str(refused.value)
                continue
            saved[entry.name][f"{fmt} details"] = export(folder / "model", folder / fmt).details
            seconds[fmt] = time.perf_counter() - began
            saved[entry.name][fmt] = folder / fmt
    return saved


def _exports(entry):
    return [fmt for fmt in FORMATS if not (fmt == "onnx" and entry.no_onnx)]


def test_every_zoo_model_exports_to_both_formats_with_defaults(zoo):
    for entry in ZOO:
        info = json.loads((zoo[entry.name]["model"] / ARTIFACT_INFO_FILE).read_text())
        # a model torch.export cannot keep dynamic (the GRU's sequence, data-dependent flow)
        # still has a way in: its TorchScript module, named in artifact.json with the reason
        assert "program" in info or ("program_problem" in info and "torchscript" in info), info
        golden = GoldenSet.load(zoo[entry.name][_exports(entry)[0]])
        dynamic_beyond_batch = any(isinstance(d, str) for s in entry.signature.inputs for d in s.dims[1:])
        assert (golden.resized is not None) == dynamic_beyond_batch, entry.name


def test_the_gru_names_the_dim_torch_export_cannot_keep(zoo):
    info = json.loads((zoo["gru"]["model"] / ARTIFACT_INFO_FILE).read_text())
    assert info["program_problem"].startswith(
        "torch.export cannot keep input 'tokens' dim 1 ('seq') dynamic: You marked")
    assert "specialized it to be a constant (12)" in info["program_problem"]
    assert info["torchscript"] in ("trace", "script")


def test_when_dynamo_fails_the_legacy_exporter_makes_the_file_and_the_report_says_why(zoo):
    details = zoo["t5_encoder"]["onnx details"]
    assert details["exporter"] == "legacy"
    # plain text (no terminal colours), ending with the cause torch kept in its traceback
    assert details["fallback"].startswith(
        "dynamo failed: Failed to decompose the FX graph for ONNX compatibility: ValueError: Cannot"
        " view a tensor with shape torch.Size([")
    assert "\x1b" not in details["fallback"] and "Next steps" not in details["fallback"]
    assert zoo["vit"]["onnx details"]["exporter"] == "dynamo" and "fallback" not in zoo["vit"]["onnx details"]


def test_a_model_with_no_onnx_route_says_so_quietly_and_is_served_as_torchscript(zoo, tmp_path, capfd):
    assert zoo["packed_lstm"]["refused"] == (
        "this model cannot be exported to ONNX: legacy: packed sequences"
        " (torch.nn.utils.rnn.pack_padded_sequence) have no ONNX export; serve the TorchScript"
        " export (serving_format=torchscript)")
    capfd.readouterr()
    with pytest.raises(UserError):
        export_onnx(zoo["packed_lstm"]["model"], tmp_path / "onnx")
    # torch's page of graph dump (written by C++ to the process's stdout) stays out of the terminal
    assert capfd.readouterr() == ("", "")
    result = export_for_serving(zoo["packed_lstm"]["model"], tmp_path / "served")
    assert result.model_format == "TorchScript"
    assert result.details["served_as"] == (
        "TorchScript, as no ONNX export serves it (this model cannot be exported to ONNX: legacy:"
        " packed sequences (torch.nn.utils.rnn.pack_padded_sequence) have no ONNX export)")
    assert not (tmp_path / "onnx").exists()


def test_padding_positions_are_skipped_only_where_the_signature_says_so(zoo, tmp_path):
    """The left-padded LM: 3 hidden positions of row 0 differ in every export (no caller reads
    them); compared like real ones, the export was refused."""
    assert "(900 masked values skipped)" in export_onnx(zoo["gpt2_lm"]["model"], tmp_path / "o").markdown()
    entry = next(e for e in ZOO if e.name == "gpt2_lm")
    unmasked = ModelSignature(entry.signature.inputs, (TensorSpec("logits", "float32", ("batch", "seq", 300)),))
    save_torch_model(entry.build(), unmasked, entry.example(4), tmp_path / "unmasked")
    with pytest.raises(VerificationError, match=r"logits: \d+/12000 values exceed"):
        export_onnx(tmp_path / "unmasked", tmp_path / "refused", exporter="dynamo")


def test_dict_outputs_are_matched_by_name_not_position(zoo):
    golden = GoldenSet.load(zoo["multi_head"]["torchscript"])
    # the signature lists probabilities first; the model's dict has embedding first
    assert golden.outputs["probabilities"].shape == (4, 5)
    assert abs(golden.outputs["probabilities"].sum(axis=1) - 1).max() < 1e-5


def test_the_zoo_is_served_by_triton_at_two_batch_sizes_and_two_lengths(zoo, tmp_path):
    # one value per row ([batch]) cannot take Triton's batching: the default refuses, naming why
    # and the option that works
    with pytest.raises(UserError, match=r"\['bucket'\] hold one value per row.*set"
                                        r" max_batch_size=0"):
        build_multi_model_repository([ModelEntry(zoo["mixed_dtypes"]["onnx"], "onnx", "m",
                                                 TritonModelOptions())], tmp_path / "refused")
    entries = [ModelEntry(zoo[e.name][fmt], fmt, f"{e.name}_{fmt}",
                          TritonModelOptions(max_batch_size=e.triton_max_batch_size))
               for e in ZOO for fmt in _exports(e)]
    build_multi_model_repository(entries, tmp_path / "repository")
    record = triton_server.start_server(tmp_path / "repository", entries[0].name, "zoo", timeout_s=180)
    failures = []
    try:
        for entry in ZOO:
            for fmt in _exports(entry):
                name = f"{entry.name}_{fmt}"
                signature = ModelSignature.load(zoo[entry.name][fmt])
                golden = GoldenSet.load(zoo[entry.name][fmt])
                names = triton_tensor_names(fmt, signature)
                # float16 travels as binary tensors (auto): Triton's JSON does not carry it
                target = (OipBinaryRestTarget if resolve_transport("auto", signature, False)
                          == "rest-binary" else OipRestTarget)
                for case, data, step in (("batch 1", golden, 1), ("batch 4", golden, 0),
                                         ("resized", golden.resized, 0)):
                    if data is None:
                        continue
                    result = validate(target(record.url, name, signature, names), data,
                                      max_batch_size=step, ready_timeout_s=60)
                    if not result.passed:
                        failures.append(f"{name} {case}: {result.failure_line()}")
        # why auto picks binary tensors for float16: the real Triton refuses them as JSON
        fp16 = zoo["float16_mlp"]["onnx"]
        with pytest.raises(KfpServeError) as refused:
            validate(OipRestTarget(record.url, "float16_mlp_onnx", ModelSignature.load(fp16)),
                     GoldenSet.load(fp16), ready_timeout_s=60)
        assert "binary" in str(refused.value), str(refused.value)
    finally:
        triton_server.stop_server(record)
    assert failures == []


class _TorchServePredictions(HttpTarget):
    """TorchServe's own inference API: ``POST /predictions/<name>`` with instances."""

    def __init__(self, url: str, model_name: str, signature: ModelSignature):
        super().__init__(url, model_name, signature, Instances(signature))
        self.infer_path = f"/predictions/{model_name}"

    def wait_ready(self, timeout_s: float) -> None:  # the runner waited for READY
        return None

    def metadata_problems(self) -> list[str] | None:
        return None


@requires("java")
def test_the_zoo_is_served_by_torchserve(zoo, tmp_path):
    from kfp_serve.components.torchserve.archive import ArchiveOptions, build_archive

    store = tmp_path / "model-store"
    store.mkdir()
    for entry in ZOO:
        result = build_archive(zoo[entry.name]["torchscript"], "torchscript", tmp_path / entry.name,
                               entry.name, ArchiveOptions())
        (store / f"{entry.name}.mar").write_bytes(result.mar.read_bytes())
    work = tmp_path / "work"
    work.mkdir()
    failures = []
    with torchserve_store(store, [e.name for e in ZOO], work) as url:
        for entry in ZOO:
            signature = ModelSignature.load(zoo[entry.name]["torchscript"])
            golden = GoldenSet.load(zoo[entry.name]["torchscript"])
            for data in (golden, golden.resized):
                if data is not None:
                    result = validate(_TorchServePredictions(url, entry.name, signature), data)
                    if not result.passed:
                        failures.append(f"{entry.name}: {result.failure_line()}")
    assert failures == []
