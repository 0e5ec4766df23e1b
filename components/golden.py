"""The golden set: sample inputs and the eager model's reference outputs, stored as ``golden.npz``.

Keys are ``input/<name>`` and ``output/<name>``; the batch dimension is the first axis.
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

    @property
    def batch_size(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def slice(self, start: int, stop: int) -> GoldenSet:
        """Rows ``start:stop`` of every input and output."""
        return GoldenSet(
            inputs={k: v[start:stop] for k, v in self.inputs.items()},
            outputs={k: v[start:stop] for k, v in self.outputs.items()},
        )

    def check_against(self, signature: ModelSignature) -> None:
        """Raise UserError unless names, dtypes and ranks agree with the signature."""
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

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / GOLDEN_FILE
        arrays = {f"input/{k}": v for k, v in self.inputs.items()}
        arrays.update({f"output/{k}": v for k, v in self.outputs.items()})
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> GoldenSet:
        path = Path(directory) / GOLDEN_FILE
        try:
            with np.load(path, allow_pickle=False) as data:
                inputs = {k[len("input/"):]: data[k] for k in data.files if k.startswith("input/")}
                outputs = {
                    k[len("output/"):]: data[k] for k in data.files if k.startswith("output/")
                }
        except FileNotFoundError as err:
            raise UserError(
                f"{path} is missing; a model artifact must carry its golden set"
            ) from err
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
            raise UserError(f"{path} is not a readable .npz file ({err}); re-export the model") from err
        if not inputs or not outputs:
            raise UserError(f"{path} holds no 'input/*' or no 'output/*' arrays; re-export the model")
        return cls(inputs=inputs, outputs=outputs)
