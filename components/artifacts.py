"""The suite's artifact kinds: one frozen record per kind, the metadata its artifacts carry.

KFP 2.17 accepts only ``system.*`` and ``google.*`` schema titles, so the suite's artifacts are
``system.Model`` (models), ``system.Artifact`` (everything else) and Google's
``google.VertexModel`` / ``google.VertexEndpoint``, told apart by ``metadata["kfp_serve_kind"]``.

A step writes an output's record with :func:`mark` and reads an input's with :func:`read`
(:func:`read_published` for a published version of a given content). ``read`` checks the kind
and every field's type, so wiring the wrong artifact into a step, or an artifact whose metadata
lacks a field, fails at the step that reads it with a one-line error, not four steps later deep
inside a library.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from kfp_serve.components.errors import UserError
from kfp_serve.components.signature import ModelSignature

KIND_KEY = "kfp_serve_kind"
R = TypeVar("R", bound="Record")


@dataclass(frozen=True)
class Record:
    """The metadata of one artifact kind; the class name is the kind.

    ``to_metadata`` / ``from_metadata`` follow the fields' types: a ``ModelSignature`` travels
    as its dict, a nested record with its kind, tuples as lists. A field declared with
    ``field(metadata={"key": ...})`` travels under that key (Google's ``resourceName``).
    """

    #: what the artifact's path holds
    HOLDS: ClassVar[str] = ""
    #: the steps that write this kind (the fix an error names)
    MADE_BY: ClassVar[str] = ""

    @classmethod
    def kind(cls) -> str:
        return cls.__name__

    def to_metadata(self) -> dict[str, Any]:
        return {_key(f): _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_metadata(cls: type[R], metadata: Mapping[str, Any], where: str = "") -> R:
        """The record in ``metadata``; UserError naming the field that is missing or of the
        wrong type (``where`` names the artifact in the message)."""
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            key = _key(f)
            if key not in metadata:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise UserError(f"{where or 'the artifact'} is {_a(cls.kind())} without {key!r} in"
                                    f" its metadata; make it again with {cls.MADE_BY}")
                continue
            try:
                inner = f"{where} (its {key})" if where else key
                values[f.name] = _coerce(metadata[key], hints[f.name], inner)
            except (TypeError, ValueError) as err:
                raise UserError(f"{where or 'the artifact'} is {_a(cls.kind())} whose {key!r} is"
                                f" {str(metadata[key])[:60]!r}: {err}; make it again with"
                                f" {cls.MADE_BY}") from err
        return cls(**values)


def _a(kind: str) -> str:
    """``a TorchModel``, ``an OnnxModel``."""
    return f"{'an' if kind[:1] in 'AEIOU' else 'a'} {kind}"


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _plain(value: Any) -> Any:
    """A field's value as JSON-ready data."""
    if isinstance(value, Record):
        return {KIND_KEY: value.kind(), **value.to_metadata()}
    if isinstance(value, ModelSignature):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` (read back from metadata, where KFP may have turned ints into floats) as
    ``hint``; TypeError/ValueError saying what was expected (a nested record raises its own
    UserError, naming ``where`` it sits)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _coerce(value, options[0] if len(options) == 1 else tuple(options), where)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise TypeError("expected a whole number")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    if hint is ModelSignature:
        return ModelSignature.from_dict(value)
    records = hint if isinstance(hint, tuple) else (hint,)
    if all(isinstance(r, type) and issubclass(r, Record) for r in records):
        if not isinstance(value, Mapping):
            raise TypeError("expected a record")
        kind = value.get(KIND_KEY)
        record = next((r for r in _record_classes() if r.kind() == kind and issubclass(r, records)), None)
        if record is None:
            wanted = " or ".join(r.kind() for r in records)
            raise TypeError(f"expected {_a(wanted)}, not {kind or 'an unknown kind'}")
        return record.from_metadata(value, where)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise TypeError("expected a mapping")
        return {k: _coerce(v, args[1], where) for k, v in value.items()} if args else dict(value)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError("expected a list")
        item = args[0] if args else Any
        items = [_coerce(v, item, where) for v in value]
        return tuple(items) if origin is tuple else items
    raise TypeError(f"no rule for {hint!r}")  # a field type this module does not handle yet


def _record_classes() -> list[type[Record]]:
    found, queue = [], [Record]
    while queue:
        for sub in queue.pop().__subclasses__():
            found.append(sub)
            queue.append(sub)
    return found


# -- models -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchModel(Record):
    """A trained model in the suite's model contract (``save_torch_model``)."""

    HOLDS: ClassVar[str] = ("a folder: model.pt2 (torch.export) and/or model.ts (TorchScript),"
                            " signature.json, golden.npz")
    MADE_BY: ClassVar[str] = "train_digits_classifier, or save_torch_model in your training step"

    #: None for a model imported with dsl.importer (its signature.json is read instead)
    signature: ModelSignature | None = None
    framework: str = "pytorch"
    test_accuracy: float | None = None


@dataclass(frozen=True)
class ExportedModel(Record):
    """What every verified export carries: the signature and how the file was made."""

    MADE_BY: ClassVar[str] = "export_onnx, export_torchscript or export_tensorrt"

    signature: ModelSignature
    #: how it was made, as the export report lists it (opset, method, weights ...)
    export: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OnnxModel(ExportedModel):
    HOLDS: ClassVar[str] = ("a folder: model.onnx (+ model.onnx.data when > 2 GiB),"
                            " signature.json, golden.npz")
    MADE_BY: ClassVar[str] = "export_onnx or export_model"

    opset: int = 18
    exporter: str = "dynamo"  # the exporter that made the file (auto resolved)
    onnx_ir_version: int = 0  # KServe's Triton must be new enough to load it


@dataclass(frozen=True)
class TorchScriptModel(ExportedModel):
    HOLDS: ClassVar[str] = "a folder: model.pt (TorchScript), signature.json, golden.npz"
    MADE_BY: ClassVar[str] = "export_torchscript or export_model"

    method: str = "saved"


@dataclass(frozen=True)
class TensorRTModel(ExportedModel):
    HOLDS: ClassVar[str] = "a folder: model.plan, timing.cache, signature.json, golden.npz"
    MADE_BY: ClassVar[str] = "export_tensorrt"

    precision: str = "fp32"
    max_batch: int = 32


#: the kinds a serving format can be built from
EXPORTED = (OnnxModel, TorchScriptModel, TensorRTModel)


# -- packages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TritonRepository(Record):
    HOLDS: ClassVar[str] = "a Triton model repository: <model>/config.pbtxt, <model>/<version>/"
    MADE_BY: ClassVar[str] = "build_triton_repository or pack_triton_repositories"

    model_name: str  # the model validation calls (a packed repository's first)
    #: signature name -> the tensor name Triton serves (TorchScript: ``<name>__<index>``)
    tensor_names: dict[str, str] = field(default_factory=dict)
    signature: ModelSignature | None = None  # None for a packed repository (several models)
    model_format: str = ""
    version: int = 1
    max_batch_size: int = 0
    onnx_ir_version: int | None = None  # the highest ONNX IR in the repository, if any
    models: tuple[str, ...] = ()  # every model of a packed repository
    sources: tuple[str, ...] = ()  # the published versions a packed repository came from


@dataclass(frozen=True)
class TorchServeArchive(Record):
    HOLDS: ClassVar[str] = ("config/config.properties + model-store/<name>.mar (KServe) and"
                            " model.mar (Vertex AI)")
    MADE_BY: ClassVar[str] = "build_torchserve_archive"

    model_name: str
    model_format: str  # what the .mar carries: onnx or torchscript
    signature: ModelSignature


@dataclass(frozen=True)
class LlmCheckpoint(Record):
    HOLDS: ClassVar[str] = ("a checked Hugging Face model folder plus kfp_serve_llm_card.json and"
                            " kfp_serve_golden.json")
    MADE_BY: ClassVar[str] = "package_llm_checkpoint"

    model_name: str  # the name the servers serve it under
    card: dict[str, Any]  # ``llm.checkpoint.LlmCard.to_dict()``
    golden_prompts: int = 0


@dataclass(frozen=True)
class PublishedVersion(Record):
    HOLDS: ClassVar[str] = ("a committed, immutable version in storage; the artifact URI is"
                            " gs://.../v<N> (or a local folder)")
    MADE_BY: ClassVar[str] = "publish_model"

    uri: str
    published_version: int
    content: TritonRepository | TorchServeArchive | LlmCheckpoint  # what was published
    files: int = 0
    bytes: int = 0

    @property
    def content_kind(self) -> str:
        return self.content.kind()


# -- endpoints ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingEndpoint(Record):
    HOLDS: ClassVar[str] = "a JSON file: the local server's record"
    MADE_BY: ClassVar[str] = "deploy_local or deploy_local_llm"

    url: str
    model_name: str
    protocol: str = "v2"
    grpc_url: str = ""
    metrics_url: str = ""  # the server's Prometheus metrics page
    tensor_names: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    deployment: str = ""
    log_path: str = ""


@dataclass(frozen=True)
class KServeInferenceService(Record):
    HOLDS: ClassVar[str] = "nothing: the artifact URI is the InferenceService's URL"
    MADE_BY: ClassVar[str] = "deploy_kserve"

    name: str
    namespace: str
    model_name: str
    url: str  # status.url: the external host on the ingress domain
    internal_url: str = ""  # status.address.url: cluster-local
    validation_url: str = ""  # what validation calls: the canary's own address while split
    mode: str = "Knative"
    protocol: str = "v2"
    latest_ready_revision: str = ""
    traffic: list[dict[str, Any]] = field(default_factory=list)
    canary_url: str = ""
    canary_internal_url: str = ""
    previous_predictor: dict[str, Any] | None = None  # what Standard-mode rollback re-applies
    storage_uri: str = ""
    tensor_names: dict[str, str] = field(default_factory=dict)
    #: the predictor as this deploy applied it: promote and rollback check nobody changed it since
    predictor: dict[str, Any] | None = None
    #: Standard mode: this deploy's spec.canary entry, and the predictor promoting it applies
    canary: dict[str, Any] | None = None
    promoted_predictor: dict[str, Any] | None = None


@dataclass(frozen=True)
class VertexModel(Record):
    """``google.VertexModel``: Google's components read ``resourceName``."""

    HOLDS: ClassVar[str] = "nothing: the artifact URI is the model version's REST URL"
    MADE_BY: ClassVar[str] = "deploy_vertex"

    resource_name: str = field(metadata={"key": "resourceName"})  # .../models/ID@VERSION
    model_version_id: str = ""
    artifact_uri: str = ""


@dataclass(frozen=True)
class VertexEndpoint(Record):
    """``google.VertexEndpoint``: Google's components read ``resourceName``."""

    HOLDS: ClassVar[str] = "nothing: the artifact URI is the endpoint's REST URL"
    MADE_BY: ClassVar[str] = "deploy_vertex"

    resource_name: str = field(metadata={"key": "resourceName"})  # .../endpoints/ID
    deployed_model_id: str
    project: str
    location: str
    model_name: str
    predict_base: str  # where predictions go (a dedicated endpoint's own host)
    api_base: str = ""  # the endpoint on the regional API host
    api_endpoint: str = ""
    protocol: str = "vertex-raw"
    traffic: dict[str, int] = field(default_factory=dict)
    #: the split this deploy found (what a rollback restores)
    previous_traffic: dict[str, int] = field(default_factory=dict)
    tensor_names: dict[str, str] = field(default_factory=dict)
    model: str = ""  # the model (no version) whose earlier versions a promote replaces
    #: on flex-start VMs: Vertex AI undeploys it this many seconds after the deploy (promote refuses)
    flex_start_s: int = 0
    #: its container serves Triton's gRPC protocol too (``grpcPorts``), which DirectRawPredict
    #: carries on a dedicated endpoint (validate_endpoint's ``transport=grpc``)
    grpc: bool = False


#: the kinds validate_endpoint calls
ENDPOINTS = (ServingEndpoint, KServeInferenceService, VertexEndpoint)


# -- tuning -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TritonModelOptions(Record):
    HOLDS: ClassVar[str] = "a JSON file: the serving options tune_triton_config chose"
    MADE_BY: ClassVar[str] = "tune_triton_config"

    #: ``triton.config.TritonModelOptions.to_dict()``; read back with its ``from_dict``
    options: dict[str, Any]
    model_format: str
    slo_ms: float = 0.0
    percentile: int = 95
    samples_per_s_at_slo: float = 0.0
    trials: list[dict[str, Any]] = field(default_factory=list)


# -- writing and reading ------------------------------------------------------------------------


def mark(artifact: Any, record: Record) -> None:
    """Write ``record`` (and its kind) into an output artifact's metadata."""
    artifact.metadata[KIND_KEY] = record.kind()
    artifact.metadata.update(record.to_metadata())


def read(artifact: Any, *kinds: type[R]) -> R:
    """The record of an input artifact that must be one of ``kinds``; UserError in one line
    when it is another kind, or its metadata lacks a field or has one of the wrong type."""
    name = getattr(artifact, "name", "")
    kind = artifact.metadata.get(KIND_KEY)
    for record in kinds:
        if record.kind() == kind:
            return record.from_metadata(artifact.metadata, f"input artifact {name!r}")
    wanted = " or ".join(k.kind() for k in kinds)
    got = _a(kind) if kind else "an artifact without a kfp_serve kind"
    raise UserError(f"input artifact {name!r} is {got}; this step needs {_a(wanted)}"
                    f" ({kinds[0].HOLDS}; made by {kinds[0].MADE_BY})")


def read_published(artifact: Any, *contents: type[Record]) -> PublishedVersion:
    """The PublishedVersion an input artifact records, which must hold one of ``contents``."""
    published = read(artifact, PublishedVersion)
    if not isinstance(published.content, contents):
        wanted = " or ".join(k.kind() for k in contents)
        raise UserError(f"{published.uri} holds {_a(published.content_kind)}; this step needs a"
                        f" published {wanted}: publish one with publish_model")
    return published


def deployable(artifact: Any, instead: str, alternative: str, step: str) -> PublishedVersion | None:
    """The published repository or archive a deploy step was given, or None where it was given
    ``instead`` (described as ``alternative``): exactly one of the two."""
    if (artifact is None) == (not instead):
        raise UserError(f"{step} needs exactly one of model (a published version) and {alternative}")
    return None if artifact is None else read_published(artifact, TritonRepository, TorchServeArchive)
