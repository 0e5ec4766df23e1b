"""The serving configurations the tuner may try, and the quick search over them.

A candidate is one Triton model configuration: max_batch_size, dynamic batching on/off, its
preferred batch sizes and queue delay, instance count and intra-op threads per instance. The
search is coordinate descent from the defaults: one dimension at a time, in the order that
usually matters most on CPU (how the cores are split between instances and threads, then
dynamic batching and its queue delay, then batch sizes), keeping the best candidate so far and
moving on when a dimension brings no gain beyond the noise. It visits a few dozen candidates
at most, not the full product (hundreds), and stops at the time budget with the best so far.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from kfp_serve.components.errors import UserError
from kfp_serve.components.triton.config import TritonModelOptions

#: each real backend's thread parameter in config.pbtxt (onnxruntime_backend / pytorch_backend)
THREAD_PARAMETERS = {"onnx": "intra_op_thread_count", "torchscript": "INTRA_OP_THREAD_COUNT"}
#: two scores closer than this (relative) are a tie; the simpler candidate wins
NOISE = 0.05
QUEUE_DELAYS_US = (0, 100, 500, 2000)


@dataclass(frozen=True)
class Candidate:
    """One serving configuration."""

    max_batch_size: int = 32
    dynamic_batching: bool = True
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 100
    instance_count: int = 1
    threads: int = 0  # intra-op threads per instance; 0 = the backend's default (every core)

    def options(self, model_format: str) -> TritonModelOptions:
        """The TritonModelOptions that build_triton_repository writes for this candidate."""
        parameters = {THREAD_PARAMETERS[model_format]: str(self.threads)} if self.threads else {}
        return TritonModelOptions(
            max_batch_size=self.max_batch_size,
            preferred_batch_sizes=self.preferred_batch_sizes if self.dynamic_batching else (),
            max_queue_delay_microseconds=self.max_queue_delay_microseconds,
            dynamic_batching=self.dynamic_batching,
            instance_count=self.instance_count,
            parameters=parameters,
        )

    @property
    def label(self) -> str:
        batching = (f"dyn {self.max_queue_delay_microseconds}us"
                    + (f" pref {list(self.preferred_batch_sizes)}" if self.preferred_batch_sizes else "")
                    if self.dynamic_batching else "no dyn")
        threads = f"x{self.threads}t" if self.threads else ""
        return f"mbs {self.max_batch_size}, {batching}, {self.instance_count} inst{threads}"

    @property
    def complexity(self) -> tuple:
        """Smaller is simpler: the tie-break (fewer instances, less waiting, fewer settings)."""
        return (self.instance_count, self.max_queue_delay_microseconds if self.dynamic_batching else 0,
                len(self.preferred_batch_sizes), self.max_batch_size, self.dynamic_batching)


def starting_point(cores: int, max_batch_size: int = 32) -> Candidate:
    """The defaults: one instance on every core, dynamic batching at 100 us."""
    return Candidate(max_batch_size=max_batch_size, threads=cores)


def instance_splits(cores: int) -> list[tuple[int, int]]:
    """(instances, threads each) that use the cores: 1 x cores, 2 x cores/2, ..., cores x 1."""
    splits, instances = [], 1
    while instances <= cores:
        splits.append((instances, max(1, cores // instances)))
        instances *= 2
    if splits[-1][0] != cores:
        splits.append((cores, 1))
    return splits


def neighbours(current: Candidate, dimension: str, cores: int, batch_ceiling: int) -> list[Candidate]:
    """The candidates that differ from ``current`` along one dimension."""
    if dimension == "instances":
        return [replace(current, instance_count=n, threads=t) for n, t in instance_splits(cores)]
    if dimension == "batching":
        if current.max_batch_size == 0:
            return [current]
        return ([replace(current, dynamic_batching=False, preferred_batch_sizes=())]
                + [replace(current, dynamic_batching=True, max_queue_delay_microseconds=d)
                   for d in QUEUE_DELAYS_US])
    if dimension == "max_batch_size":
        if current.max_batch_size == 0:
            return [current]
        sizes = sorted({s for s in (8, 32, 128) if s <= batch_ceiling} | {current.max_batch_size})
        return [replace(current, max_batch_size=s,
                        preferred_batch_sizes=tuple(p for p in current.preferred_batch_sizes if p <= s))
                for s in sizes]
    if dimension == "preferred":
        if not current.dynamic_batching or current.max_batch_size < 4:
            return [current]
        top = current.max_batch_size
        return [replace(current, preferred_batch_sizes=()),
                replace(current, preferred_batch_sizes=(top // 2, top))]
    raise UserError(f"unknown search dimension {dimension!r}")


DIMENSIONS = ("instances", "batching", "max_batch_size", "preferred")


def better(a: tuple[float, Candidate], b: tuple[float, Candidate]) -> bool:
    """Is scored candidate ``a`` better than ``b``: a higher score beyond the noise, or within
    the noise and simpler."""
    (score_a, cand_a), (score_b, cand_b) = a, b
    if score_a > score_b * (1 + NOISE):
        return True
    if score_b > score_a * (1 + NOISE):
        return False
    return cand_a.complexity < cand_b.complexity


def coordinate_search(evaluate: Callable[[Candidate], float], start: Candidate, cores: int,
                      batch_ceiling: int,
                      out_of_time: Callable[[], bool]) -> Iterator[tuple[Candidate, float]]:
    """Yield ``(candidate, score)`` as the search evaluates them; the caller keeps the best.

    ``evaluate`` returns the throughput at the SLO (0 when no load level met it); each
    dimension is swept around the best so far, each candidate evaluated once.
    """
    seen: dict[Candidate, float] = {}
    best = (evaluate(start), start)
    seen[start] = best[0]
    yield start, best[0]
    for dimension in DIMENSIONS:
        for candidate in neighbours(best[1], dimension, cores, batch_ceiling):
            if candidate in seen:
                continue
            if out_of_time():
                return
            score = evaluate(candidate)
            seen[candidate] = score
            yield candidate, score
            if better((score, candidate), best):
                best = (score, candidate)
