"""Pack several Triton repositories into one, so that small models share one server (and one
GPU), each with its own instance group."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from kfp_serve.components.errors import UserError
from kfp_serve.components.formats import highest_onnx_ir
from kfp_serve.components.triton.config import InstanceKind, parse_pbtxt, to_pbtxt
from kfp_serve.components.triton.repository import CONFIG_FILE


@dataclass(frozen=True)
class PackResult:
    repository: Path
    models: list[str]  # in the order of the sources
    onnx_ir_version: int | None  # the highest IR of the ONNX models packed, if any


def models_in(repository: Path) -> list[str]:
    """The model folders of a Triton repository (those with a config.pbtxt)."""
    return sorted(p.name for p in repository.iterdir() if (p / CONFIG_FILE).is_file())


def pack_repositories(sources: list[Path], target: str | Path,
                      instance_counts: dict[str, int] | None = None,
                      instance_kind: str | None = None) -> PackResult:
    """Copy every model of ``sources`` into one repository at ``target``; a model named in
    ``instance_counts`` gets one instance group of that many instances (of ``instance_kind``,
    else its own kind). The configs are rewritten through Triton's protobuf schema; the
    repository appears only once complete."""
    from kfp_serve.components.staging import staged_directory

    counts = dict(instance_counts or {})
    kind_asked = InstanceKind.parse(instance_kind) if instance_kind is not None else None
    if len(sources) < 2:
        raise UserError("packing needs at least two repositories")
    owner: dict[str, Path] = {}
    for source in sources:
        found = models_in(source)
        if not found:
            raise UserError(f"{source} holds no Triton model (no <model>/config.pbtxt)")
        for name in found:
            if name in owner:
                raise UserError(f"model {name!r} is in two of the repositories ({owner[name]} and"
                                f" {source}); rebuild one with another model_name")
            owner[name] = source
    unknown = sorted(set(counts) - set(owner))
    if unknown:
        raise UserError(f"instance_counts names {unknown}, which are not among the models"
                        f" {sorted(owner)}")
    bad = {name: count for name, count in counts.items() if count < 1}
    if bad:
        raise UserError(f"instance_counts must be >= 1: {bad}")
    with staged_directory(target) as staging:
        for name, source in owner.items():
            shutil.copytree(source / name, staging / name)
            config = parse_pbtxt((source / name / CONFIG_FILE).read_text())
            if name in counts:
                kind = kind_asked or (mc.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind)
                                      if config.instance_group else InstanceKind.AUTO)
                del config.instance_group[:]
                config.instance_group.append(mc.ModelInstanceGroup(
                    kind=mc.ModelInstanceGroup.Kind.Value(InstanceKind.parse(kind).value),
                    count=counts[name]))
            elif kind_asked:
                for group in config.instance_group:
                    group.kind = mc.ModelInstanceGroup.Kind.Value(kind_asked.value)
            (staging / name / CONFIG_FILE).write_text(to_pbtxt(config))
    return PackResult(Path(target), list(owner), highest_onnx_ir(target))
