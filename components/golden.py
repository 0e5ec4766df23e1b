"""The golden set: sample inputs and the eager model's reference outputs, stored as ``golden.npz``.

Keys are ``input/<name>`` and ``output/<name>``; the batch dimension is the first axis. An
optional second set, ``resized/input/<name>`` and ``resized/output/<name>``, holds the same
samples with every other dynamic dimension (a sequence length, an image size) cut shorter, so
each export is also verified at a second size of those dims.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kfp_serve.components.errors import UserError
from kfp_serve.components.signature import ModelSignature

GOLDEN_FILE = "golden.npz"


@dataclass
class GoldenSet:
    """Named input arrays and the reference output arrays computed from them."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    resized: GoldenSet | None = None  # other dynamic dims at a second size, where there are any

    @property
    def batch_size(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    @property
    def resized_shapes(self) -> dict[str, tuple[int, ...]]:
        """Input shapes of the resized variant ({} without one)."""
        return {k: tuple(v.shape) for k, v in (self.resized.inputs if self.resized else {}).items()}

    def slice(self, start: int, stop: int) -> GoldenSet:
        """Rows ``start:stop`` of every input and output."""
        return GoldenSet(
            inputs={k: v[start:stop] for k, v in self.inputs.items()},
            outputs={k: v[start:stop] for k, v in self.outputs.items()},
        )

    def check_against(self, signature: ModelSignature) -> None:
        """Raise UserError unless names, dtypes and ranks agree with the signature."""
        if self.resized is not None:
            self.resized.check_against(signature)
        for kind, specs, arrays in (
            ("input", signature.inputs, self.inputs),
            ("output", signature.outputs, self.outputs),
        ):
            expected = [s.name for s in specs]
            if sorted(arrays) != sorted(expected):
                raise UserError(
                    f"golden set {kind}s {sorted(arrays)} do not match the signature's {expected}"
                )
            for spec in specs:
                array = arrays[spec.name]
                if str(array.dtype) != spec.dtype or not spec.matches_shape(array.shape):
                    raise UserError(
                        f"golden {kind} {spec.name!r} is {array.dtype}{list(array.shape)} but the"
                        f" signature says {spec.dtype}{list(spec.dims)}"
                    )
                if kind == "input" and array.dtype.kind == "f" and not np.isfinite(array).all():
                    bad = int(array.size - np.isfinite(array).sum())
                    raise UserError(
                        f"golden input {spec.name!r} holds {bad} NaN or infinite value(s): no"
                        " export can be checked against it; save the model with finite example"
                        " inputs (save_torch_model)"
                    )

    def _arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        arrays = {f"{prefix}input/{k}": v for k, v in self.inputs.items()}
        arrays.update({f"{prefix}output/{k}": v for k, v in self.outputs.items()})
        if self.resized is not None:
            arrays.update(self.resized._arrays("resized/"))
        return arrays

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / GOLDEN_FILE
        arrays = self._arrays()
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> GoldenSet:
        path = Path(directory) / GOLDEN_FILE
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except FileNotFoundError as err:
            raise UserError(
                f"{path} is missing; a model artifact must carry its golden set"
            ) from err
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
            raise UserError(f"{path} is not a readable .npz file ({err}); re-export the model") from err
        def part(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

        inputs, outputs = part("input/"), part("output/")
        if not inputs or not outputs:
            raise UserError(f"{path} holds no 'input/*' or no 'output/*' arrays; re-export the model")
        resized = None
        if part("resized/input/"):
            resized = cls(inputs=part("resized/input/"), outputs=part("resized/output/"))
        return cls(inputs=inputs, outputs=outputs, resized=resized)
