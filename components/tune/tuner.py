"""Serve candidate configurations on the local Triton and measure each under load.

One tritonserver runs in explicit model-control mode for the whole search; each candidate is
loaded through Triton's model repository extension (``POST /v2/repository/models/<name>/load``
with the configuration as JSON in ``parameters.config``, which replaces config.pbtxt for that
load), so a candidate costs a model reload, not a server start. Each candidate is driven by
the validator's load generator over a rising concurrency sweep that stops once the latency
percentile passes the SLO or throughput stops rising; Triton's own counters give the batch size
the dynamic batcher formed at each level.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kfp_serve.components.artifacts import ServingEndpoint
from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.golden import GoldenSet
from kfp_serve.components.machine import available_cores
from kfp_serve.components.signature import ModelSignature
from kfp_serve.components.tune.search import (
    NOISE,
    Candidate,
    better,
    coordinate_search,
    starting_point,
)
from kfp_serve.components.validate.server_metrics import ServerStats, difference, read_counters

MODEL_NAME = "model"
#: a level must raise throughput by this much over the best before it; after two levels that
#: do not, the sweep stops (one noisy level does not end it)
MIN_GAIN = 0.05
#: the search's leader is measured again against the defaults, alternating, this many rounds
CONFIRM_ROUNDS = 2
#: a short load that warms a freshly loaded candidate up before it is measured (seconds)
WARM_UP_S = 0.5


@dataclass(frozen=True)
class Level:
    """One concurrency level of one candidate."""

    concurrency: int
    throughput: float  # samples/s (one sample per request)
    latency_ms: float  # at the tuning percentile
    errors: int
    server: ServerStats | None


@dataclass
class Trial:
    """One candidate and what it measured."""

    candidate: Candidate
    levels: list[Level] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0
    repeats: list[Trial] = field(default_factory=list)  # the confirmation rounds

    def score(self, slo_ms: float) -> float:
        """The highest throughput of a level that met the SLO without errors (0: none did)."""
        return max((lv.throughput for lv in self.levels
                    if lv.latency_ms <= slo_ms and not lv.errors), default=0.0)

    def confirmed_score(self, slo_ms: float) -> float | None:
        """The mean score of the confirmation rounds; None when it was not confirmed."""
        if not self.repeats:
            return None
        return sum(r.score(slo_ms) for r in self.repeats) / len(self.repeats)

    def spread(self, slo_ms: float) -> float:
        """How far the confirmation rounds' scores lie apart, relative to their mean."""
        scores = [r.score(slo_ms) for r in self.repeats]
        mean = sum(scores) / len(scores) if scores else 0.0
        return (max(scores) - min(scores)) / mean if mean else 0.0

    def estimate(self, slo_ms: float) -> float:
        """The best estimate of the score: the confirmed one where measured again."""
        confirmed = self.confirmed_score(slo_ms)
        return self.score(slo_ms) if confirmed is None else confirmed

    def best_level(self, slo_ms: float) -> Level | None:
        met = [lv for lv in self.levels if lv.latency_ms <= slo_ms and not lv.errors]
        return max(met, key=lambda lv: lv.throughput) if met else None


@dataclass
class TuneResult:
    """Every trial, the chosen one and the starting point (the defaults)."""

    model_format: str
    slo_ms: float
    percentile: int
    trials: list[Trial]
    chosen: Trial
    seconds: float
    cores: int
    transport: str

    @property
    def default(self) -> Trial:
        return self.trials[0]


def concurrency_sweep(max_concurrency: int) -> list[int]:
    levels, c = [], 1
    while c <= max_concurrency:
        levels.append(c)
        c *= 2
    return levels


def load_candidate(url: str, model_format: str, signature: ModelSignature,
                   candidate: Candidate, timeout_s: float = 120.0) -> None:
    """(Re)load the model with ``candidate``'s configuration through the repository API."""
    from google.protobuf import json_format

    from kfp_serve.components.triton.config import build_config
    from kfp_serve.components.validate.http import HttpEndpoint, answer_error

    config = build_config(MODEL_NAME, model_format, signature, candidate.options(model_format))
    body = json.dumps({"parameters": {"config": json_format.MessageToJson(config)}}).encode()
    endpoint = HttpEndpoint.parse(url)
    connection = endpoint.connection(timeout_s=timeout_s)
    try:
        status, data, _ = endpoint.call(connection, "POST", f"/v2/repository/models/{MODEL_NAME}/load",
                                        body, {"Content-Type": "application/json"})
    finally:
        connection.close()
    if status != 200:
        raise answer_error(status, data, f"loading candidate [{candidate.label}]")


def tune(folder: str | Path, model_format: str, slo_ms: float, percentile: int = 95,
         budget_s: float = 180.0, seconds_per_level: float = 1.5, max_concurrency: int = 32,
         transport: str = "rest-binary", cores: int | None = None,
         max_candidates: int | None = None, progress=print) -> TuneResult:
    """Search serving configurations for the model in ``folder`` (an ONNX or TorchScript export
    with its signature and golden set) and pick the one with the highest throughput whose
    latency percentile meets ``slo_ms``.

    Args:
        folder: The exported model's artifact folder.
        model_format: ``onnx`` or ``torchscript``.
        slo_ms: Latency objective at ``percentile`` (ms).
        percentile: 95 or 99.
        budget_s: Time for the whole search; the best so far is returned when it runs out
            (the starting point is always measured).
        seconds_per_level: Measuring time per concurrency level.
        max_concurrency: Highest number of concurrent clients in a sweep.
        transport: How the load generator sends tensors (rest, rest-binary, grpc, grpc-stream).
        cores: Cores to split between instances and threads (default: those available).
        max_candidates: Stop after this many candidates (default: when the budget runs out
            or the search ends).
        progress: Called with one line per candidate.
    """
    from kfp_serve.components.local.triton_server import start_server, stop_server
    from kfp_serve.components.triton.config import triton_tensor_names
    from kfp_serve.components.triton.repository import build_repository
    from kfp_serve.components.validate.targets import target_for

    if model_format not in ("onnx", "torchscript"):
        raise UserError(f"the tuner serves onnx or torchscript models on the local Triton, not"
                        f" {model_format!r}")
    if percentile not in (95, 99):
        raise UserError(f"percentile {percentile} is not 95 or 99")
    if slo_ms <= 0 or budget_s <= 0 or seconds_per_level <= 0 or not 1 <= max_concurrency <= 256:
        raise UserError("slo_ms, budget_s and seconds_per_level must be > 0 and max_concurrency"
                        " 1..256")
    folder = Path(folder)
    signature, golden = ModelSignature.load(folder), GoldenSet.load(folder)
    cores = cores or available_cores()
    start = starting_point(cores, 32 if signature.batched else 0)
    began = time.monotonic()
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="kfp-serve-tune-") as scratch:
        build_repository(folder, model_format, Path(scratch) / "repository", MODEL_NAME,
                         start.options(model_format))
        record = start_server(Path(scratch) / "repository", MODEL_NAME,
                              f"tune-{uuid.uuid4().hex[:8]}", explicit=True)
        endpoint = ServingEndpoint(url=record.url, model_name=MODEL_NAME, grpc_url=record.grpc_url,
                                   tensor_names=triton_tensor_names(model_format, signature))

        loaded = [start]

        def measure(candidate: Candidate) -> Trial:
            trial = Trial(candidate)
            trial_began = time.monotonic()
            try:
                if candidate != loaded[0]:
                    loaded[0] = candidate
                    load_candidate(record.url, model_format, signature, candidate)
                target = target_for(endpoint, signature, transport)
                target.wait_ready(60)
                target.infer(golden.slice(0, 1).inputs)
                target.load(golden, [2], WARM_UP_S)  # thread pools and arenas warm, not measured
                for clients in concurrency_sweep(max_concurrency):
                    _, before = read_counters(record.metrics_url, MODEL_NAME)
                    level = target.load(golden, [clients], seconds_per_level)[0]
                    server, after = read_counters(record.metrics_url, MODEL_NAME)
                    latency = level.p95_ms if percentile == 95 else level.p99_ms
                    trial.levels.append(Level(clients, level.throughput, latency, level.errors,
                                              difference(server, before, after, MODEL_NAME)))
                    if latency > slo_ms or level.errors or _levelled_off(trial.levels):
                        break
                target.close()
            except (InfrastructureError, UserError) as err:  # a candidate that fails scores 0
                trial.error = str(err).splitlines()[0][:300]
            trial.seconds = time.monotonic() - trial_began
            return trial

        def evaluate(candidate: Candidate) -> float:
            trial = measure(candidate)
            trials.append(trial)
            score = trial.score(slo_ms)
            progress(f"[{len(trials)}] {candidate.label}: {score:,.1f} samples/s within"
                     f" p{percentile} {slo_ms:g} ms" + (f" (failed: {trial.error})" if trial.error else "")
                     + f" [{trial.seconds:.1f}s]")
            return score

        def out_of_time() -> bool:
            """Would one more candidate, as long as the average, leave too little budget to
            confirm the leader against the defaults?"""
            if max_candidates is not None and len(trials) >= max_candidates:
                return True
            per_trial = sum(t.seconds for t in trials) / max(len(trials), 1)
            reserve = 2 * CONFIRM_ROUNDS * per_trial
            return time.monotonic() - began + per_trial + reserve > budget_s

        try:
            for _ in coordinate_search(evaluate, start, cores, 128 if signature.batched else 0,
                                       out_of_time):
                pass
            leader = _choose(trials, slo_ms)
            if leader is not trials[0] and not leader.error:
                # the search measured each candidate once, the defaults first on a fresh server:
                # measure both again, alternating, so drift and warm-up count for both alike
                for round_number in range(1, CONFIRM_ROUNDS + 1):
                    for trial in (trials[0], leader):
                        again = measure(trial.candidate)
                        trial.repeats.append(again)
                        progress(f"confirming {trial.candidate.label} ({round_number}/"
                                 f"{CONFIRM_ROUNDS}): {again.score(slo_ms):,.1f} samples/s"
                                 f" [{again.seconds:.1f}s]")
        finally:
            stop_server(record)
    chosen = _confirmed(trials, slo_ms)
    return TuneResult(model_format, slo_ms, percentile, trials, chosen, time.monotonic() - began,
                      cores, transport)


def _levelled_off(levels: list[Level]) -> bool:
    """Did the last two levels both fail to beat the best level before them by MIN_GAIN?"""
    if len(levels) < 3:
        return False
    best_before = max(lv.throughput for lv in levels[:-2])
    return all(lv.throughput < best_before * (1 + MIN_GAIN) for lv in levels[-2:])


def require_slo_met(result: TuneResult) -> None:
    """Raise a one-line UserError when no candidate met the SLO (write the report first)."""
    if result.chosen.score(result.slo_ms) > 0:
        return
    fastest = min((lv.latency_ms for t in result.trials for lv in t.levels), default=None)
    if fastest is None:
        errors = sorted({t.error for t in result.trials if t.error})
        raise InfrastructureError(f"no configuration could be measured: {'; '.join(errors) or 'no levels'}")
    raise UserError(
        f"no configuration met p{result.percentile} <= {result.slo_ms:g} ms (the lowest measured"
        f" was {fastest:.2f} ms); raise max_latency_ms or serve on faster hardware")


def _confirmed(trials: list[Trial], slo_ms: float) -> Trial:
    """The search's leader, if the confirmation rounds still find it better than the defaults
    beyond the noise (5%, or the spread between the rounds, whichever is larger); otherwise
    the defaults."""
    leader, default = _choose(trials, slo_ms), trials[0]
    if leader is default or leader.confirmed_score(slo_ms) is None:
        return leader
    # the win must also exceed how far the rounds of one configuration lay apart; a tie with
    # the defaults keeps the defaults (no change is the simplest answer)
    noise = max(NOISE, *(trial.spread(slo_ms) for trial in (leader, default)))
    won = leader.confirmed_score(slo_ms) > default.confirmed_score(slo_ms) * (1 + noise)
    return leader if won else default


def _choose(trials: list[Trial], slo_ms: float) -> Trial:
    best = trials[0]
    for trial in trials[1:]:
        if better((trial.score(slo_ms), trial.candidate), (best.score(slo_ms), best.candidate)):
            best = trial
    return best
