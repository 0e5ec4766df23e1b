"""The tuner's search: candidates, instance splits, the coordinate search and its ties."""

import json

import pytest

from kfp_serve.components.errors import UserError
from kfp_serve.components.triton.config import TritonModelOptions, build_config
from kfp_serve.components.tune.search import (
    Candidate,
    better,
    coordinate_search,
    instance_splits,
    starting_point,
)


def test_instance_splits_use_every_core():
    assert instance_splits(1) == [(1, 1)]
    assert instance_splits(2) == [(1, 2), (2, 1)]
    assert instance_splits(6) == [(1, 6), (2, 3), (4, 1), (6, 1)]
    assert all(n * t <= 6 for n, t in instance_splits(6))


def test_coordinate_search_finds_each_dimensions_best_once_and_keeps_to_the_budget():
    """A synthetic objective with a known optimum: two instances, 500 us, max batch 8."""
    def score(c: Candidate) -> float:
        return (100.0 * (2 if c.instance_count == 2 else 1)
                * (1.5 if c.max_queue_delay_microseconds == 500 else 1)
                * (1.2 if c.max_batch_size == 8 else 1) * (1.0 if c.dynamic_batching else 0.5))

    visited = []

    def evaluate(c):
        visited.append(c)
        return score(c)

    start = starting_point(cores=2)
    results = list(coordinate_search(evaluate, start, cores=2, batch_ceiling=128,
                                     out_of_time=lambda: False))
    best = max(results, key=lambda r: r[1])[0]
    assert (best.instance_count, best.threads, best.max_queue_delay_microseconds,
            best.max_batch_size) == (2, 1, 500, 8)
    assert len(visited) == len(set(visited)) < 20  # each candidate once, not the full product
    assert visited[0] == start
    calls = []
    short = list(coordinate_search(lambda c: calls.append(c) or 1.0, start, 2, 128,
                                   out_of_time=lambda: len(calls) >= 3))
    assert len(short) == 3  # the budget stops it; the starting point is always measured


def test_ties_go_to_the_simpler_configuration():
    simple = Candidate(instance_count=1)
    busy = Candidate(instance_count=2, max_queue_delay_microseconds=2000)
    assert better((100.0, simple), (104.0, busy))  # within 5%: simpler wins
    assert better((110.0, busy), (100.0, simple))  # beyond the noise: faster wins
    assert not better((100.0, busy), (104.0, simple))


def test_candidates_become_options_the_builder_takes(digits_onnx):
    from kfp_serve.components.signature import ModelSignature

    signature = ModelSignature.load(digits_onnx)
    off = Candidate(dynamic_batching=False, instance_count=2, threads=1).options("onnx")
    config = build_config("m", "onnx", signature, off)
    assert not config.HasField("dynamic_batching") and config.instance_group[0].count == 2
    assert config.parameters["intra_op_thread_count"].string_value == "1"
    scripted = Candidate(threads=2, preferred_batch_sizes=(16, 32)).options("torchscript")
    assert scripted.parameters == {"INTRA_OP_THREAD_COUNT": "2"}
    with pytest.raises(UserError, match="preferred batch sizes belong to dynamic batching"):
        build_config("m", "onnx", signature, TritonModelOptions(dynamic_batching=False,
                                                                preferred_batch_sizes=(8,)))
    # what an artifact's metadata gives back (numbers as floats) builds the same options
    restored = TritonModelOptions.from_dict(json.loads(json.dumps(
        {"max_batch_size": 8.0, "preferred_batch_sizes": [4.0, 8.0], "instance_count": 2.0,
         "max_queue_delay_microseconds": 500.0, "parameters": {"intra_op_thread_count": "1"}})))
    assert restored == TritonModelOptions(max_batch_size=8, preferred_batch_sizes=(4, 8),
                                          instance_count=2, max_queue_delay_microseconds=500,
                                          parameters={"intra_op_thread_count": "1"})
    with pytest.raises(UserError, match=r"unknown Triton model options \['threads'\]"):
        TritonModelOptions.from_dict({"threads": 2})
