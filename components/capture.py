"""How save_torch_model captures a model: calling it in signature order, torch.export with the
signature's dynamic dims, and the TorchScript policy (a trace of the eager model, checked at
batch 1 and a second size of the other dynamic dims, or a script where tracing cannot hold).

The artifact these captures are written into is :mod:`kfp_serve.components.model_artifact`.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kfp_serve.components.errors import UserError, first_line
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.signature import ModelSignature

if TYPE_CHECKING:
    import torch

TORCHSCRIPT_METHODS = ("auto", "trace", "script")
#: a traced module is compared with the eager model at a second size with these tolerances; a
#: trace that baked in a size fails by far more (or raises)
_TRACE_CHECK = {"atol": 1e-3, "rtol": 1e-2}
_CONSTRAINT = re.compile(r"L\['(?:args'\]\[(\d+)|(\w+)')\]\.size\(\)\[(\d+)\]")


def outputs_by_name(result: Any, signature: ModelSignature) -> dict[str, np.ndarray]:
    """A model's return value (a tensor, a tuple in signature order, or a dict/``ModelOutput``
    by output name) as named numpy arrays; UserError when it does not match the signature."""
    return {name: value.detach().cpu().numpy()
            for name, value in zip(signature.output_names, output_tuple(result, signature))}


def output_tuple(result: Any, signature: ModelSignature) -> tuple[Any, ...]:
    """The model's outputs as a tuple in signature order (what Triton's pytorch backend and the
    ONNX graph want): dict keys matched by name, tuples by position."""
    import torch

    names = signature.output_names
    if isinstance(result, torch.Tensor):
        result = (result,)
    if isinstance(result, Mapping):
        missing = [n for n in names if n not in result or result[n] is None]
        if missing:
            raise UserError(f"the model's output has no {missing} (it returns {list(result)});"
                            " name the signature's outputs after the keys the model returns")
        return tuple(result[n] for n in names)
    values = tuple(result)
    if len(values) != len(names) or not all(isinstance(v, torch.Tensor) for v in values):
        raise UserError(f"the model returned {len(values)} value(s) but the signature names {names};"
                        " return a tensor, a tuple in that order or a dict by output name")
    return values


def _by_keyword(module: Any, signature: ModelSignature) -> bool:
    """Whether ``forward`` takes every signature input by name (so the order does not matter)."""
    try:
        parameters = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return all(name in parameters for name in signature.input_names)


def signature_module(module: torch.nn.Module, signature: ModelSignature) -> torch.nn.Module:
    """``module`` behind the signature: called with the inputs in signature order (passed on by
    name where ``forward`` names them all), returning a tuple in signature order. What is
    exported, traced and stored, so every format sees the same interface."""
    import torch

    class SignatureModule(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            named = dict(zip(signature.input_names, args))
            return output_tuple(self.inner(**named) if by_keyword else self.inner(*args), signature)

    by_keyword = _by_keyword(module, signature)
    return SignatureModule(module).eval()


def run_module(module: Any, signature: ModelSignature,
               inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a module (eager, exported or TorchScript) in fp32 without autocast on named inputs in
    signature order; returns named numpy outputs."""
    import torch

    args = tuple(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in signature.input_names)
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        return outputs_by_name(module(*args), signature)


@dataclass
class Captured:
    """What save_torch_model made, and why something is missing."""

    program: Any = None
    torchscript: Any = None
    info: dict[str, str] = field(default_factory=dict)


def capture_program(wrapped: Any, signature: ModelSignature, golden: GoldenSet, saved: Captured) -> None:
    """torch.export the wrapped model with the signature's dynamic dims (why not, when it cannot)."""
    import torch

    args = tuple(torch.from_numpy(golden.inputs[n]) for n in signature.input_names)
    dynamic = tuple({axis: torch.export.Dim.DYNAMIC for axis, d in enumerate(s.dims) if isinstance(d, str)}
                    for s in signature.inputs)
    try:
        saved.program = torch.export.export(wrapped, args, dynamic_shapes=(dynamic,))
        saved.info["program"] = "torch.export"
    except Exception as err:  # torch raises many types; translated here
        saved.info["program_problem"] = export_problem(err, signature)


def export_problem(err: BaseException, signature: ModelSignature) -> str:
    """torch.export's refusal as one line that names the signature dim it could not keep dynamic
    and keeps torch's own explanation (the line after the first, which says why)."""
    text = str(err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    match = _CONSTRAINT.search(text)
    if match:
        index, name, axis = match.groups()
        spec = signature.inputs[int(index)] if index is not None else signature.input(name)
        dim = spec.dims[int(axis)]
        why = next((line for line in lines if "specialized" in line or "constant" in line
                    or "must be" in line or "guard" in line.lower()), lines[-1] if lines else "")
        why = why.lstrip("- ").split(". ")[0].rstrip(".")  # torch's reason, without its advice
        return f"torch.export cannot keep input {spec.name!r} dim {int(axis)} ({dim!r}) dynamic: {why}"
    return f"torch.export could not capture the model: {' '.join(lines[:2]) or type(err).__name__}"


def _mismatch(module: Any, signature: ModelSignature, golden: GoldenSet) -> str:
    """'' when ``module`` reproduces the eager outputs at batch 1, on the whole golden set and on
    its resized variant; else the first difference (or error)."""
    from kfp_serve.components.verify import compare_outputs, summarize_failures, visible_positions

    for case in (golden.slice(0, 1), golden, golden.resized):
        if case is None:
            continue
        try:
            actual = run_module(module, signature, case.inputs)
        except Exception as err:
            return first_line(err)
        found = summarize_failures(compare_outputs(case.outputs, actual, **_TRACE_CHECK,
                                                   visible=visible_positions(signature, case.inputs)),
                                   f"batch {case.batch_size}")
        if found:
            return found
    return ""


def capture_torchscript(wrapped: Any, module: Any, signature: ModelSignature, golden: GoldenSet,
                        method: str, saved: Captured) -> None:
    """Trace the wrapped eager model (checked at batch 1 and the resized dims), or script the
    user's module; ``auto`` prefers the trace unless tracing warned of data-dependent flow."""
    import torch

    from kfp_serve.components.staging import quiet_export

    problems: dict[str, str] = {}
    candidates: dict[str, Any] = {}
    args = tuple(torch.from_numpy(golden.inputs[n]) for n in signature.input_names)
    flow_warning = ""
    if method in ("auto", "trace"):
        try:
            with warnings.catch_warnings(record=True) as caught, torch.no_grad():
                warnings.simplefilter("always")
                traced = torch.jit.trace(wrapped, args, check_trace=False)
            flow_warning = next((str(w.message).split(". ")[0] for w in caught
                                 if issubclass(w.category, torch.jit.TracerWarning)
                                 and "Python" in str(w.message)), "")
            mismatch = _mismatch(traced, signature, golden)
            if mismatch:
                problems["trace"] = f"the trace does not generalize ({mismatch})"
            else:
                candidates["trace"] = traced
        except Exception as err:
            problems["trace"] = first_line(err)
    if method == "script" or (method == "auto" and ("trace" not in candidates or flow_warning)):
        try:
            with quiet_export():
                scripted = torch.jit.script(module)
            mismatch = _mismatch(scripted, signature, golden)
            sample = scripted(*args)
            if isinstance(sample, (dict, list)):
                problems["script"] = ("the scripted module returns a dict or list, which Triton's"
                                      " pytorch backend refuses; return a tensor or a tuple")
            elif mismatch:
                problems["script"] = mismatch
            else:
                candidates["script"] = scripted
        except Exception as err:
            problems["script"] = first_line(err)
    chosen = "script" if "script" in candidates and (flow_warning or "trace" not in candidates) \
        else "trace" if "trace" in candidates else ""
    if chosen:
        saved.torchscript = candidates[chosen]
        saved.info["torchscript"] = chosen
        if chosen == "trace" and flow_warning:
            saved.info["torchscript_warning"] = (
                f"model.ts was traced although tracing warned: {flow_warning}; scripting failed"
                f" ({problems.get('script', '?')}); the trace holds for inputs like the golden"
                " set's, so make the golden set take every branch")
    else:
        saved.info["torchscript_problem"] = "; ".join(f"{k}: {v}" for k, v in problems.items())
