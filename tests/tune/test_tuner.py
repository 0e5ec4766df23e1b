"""tune_triton_config's core: the real measurement on a local Triton, the confirmation rounds,
the sweep, the report."""

import re

import pytest

from kfp_serve.components.errors import UserError
from kfp_serve.components.tune import report
from kfp_serve.components.tune.search import (
    Candidate,
    starting_point,
)
from kfp_serve.components.tune.tuner import Level, Trial, TuneResult, require_slo_met, tune


@pytest.mark.server
def test_tunes_the_digits_model_on_a_real_triton(digits_onnx):
    """Real measurement: each candidate loaded into one running Triton through its repository
    API, driven over binary HTTP; Triton's counters give the batch sizes it formed."""
    lines = []
    result = tune(digits_onnx, "onnx", slo_ms=50.0, budget_s=600.0, seconds_per_level=0.3,
                  max_concurrency=8, max_candidates=4, progress=lines.append)
    assert len(result.trials) == 4 and result.trials[0].candidate == starting_point(result.cores)
    assert [line.split("]")[0] for line in lines[:4]] == ["[1", "[2", "[3", "[4"]
    assert lines[0].startswith("[1] mbs 32, dyn 100us, 1 inst")
    assert all(line.startswith("confirming ") for line in lines[4:])
    assert all(not t.error for t in result.trials), [t.error for t in result.trials]
    for trial in result.trials:
        assert trial.levels and trial.levels[0].concurrency == 1
        assert all(lv.server.requests > 0 and lv.server.mean_batch >= 1.0 for lv in trial.levels)
    leader = max(result.trials, key=lambda t: t.score(50.0))
    if leader is not result.default:  # confirmed in two alternating rounds against the defaults
        assert len(result.default.repeats) == 2 and all(r.levels for r in result.default.repeats)
    assert result.chosen.estimate(50.0) >= result.default.estimate(50.0) * 0.95 > 0
    page = report.html(result, None)
    assert page.count('class="chosen"') == len(result.chosen.levels)
    assert '<polyline class="frontier"' in page and 'class="slo"' in page
    assert len(re.findall(r"<tr(?: class='chosen')?><td>", page)) == len(result.trials)
    assert page.count("<tr class='chosen'>") == 1
    assert report.metrics(result, None)["candidates"] == len(result.trials)


@pytest.mark.server
def test_a_multi_input_torchscript_model_tunes_with_torch_threads(tmp_path):
    """The text encoder (two named inputs, dynamic seq, two outputs) as TorchScript: tensors
    named <name>__<index>, threads through the pytorch backend's INTRA_OP_THREAD_COUNT."""
    from model_zoo import build_text_encoder, text_encoder_inputs, text_encoder_signature

    from kfp_serve.components.export.torchscript_export import export_torchscript
    from kfp_serve.components.model_artifact import save_torch_model

    save_torch_model(build_text_encoder(), text_encoder_signature(3, 64), text_encoder_inputs(4, 16),
                     tmp_path / "text", torchscript="script")
    export_torchscript(tmp_path / "text", tmp_path / "ts", method="saved")
    result = tune(tmp_path / "ts", "torchscript", slo_ms=500.0, budget_s=600.0,
                  seconds_per_level=0.3, max_concurrency=2, max_candidates=2, progress=lambda line: None)
    assert all(not t.error for t in result.trials), [t.error for t in result.trials]
    assert len(result.trials) == 2 and result.chosen.score(500.0) > 0
    assert result.trials[1].candidate.options("torchscript").parameters == {"INTRA_OP_THREAD_COUNT": "1"}


def test_a_leader_the_confirmation_rounds_do_not_confirm_loses_to_the_defaults():
    from kfp_serve.components.tune.tuner import _confirmed

    def trial(candidate, throughput, repeats=()):
        return Trial(candidate, [Level(1, throughput, 1.0, 0, None)],
                     repeats=[Trial(candidate, [Level(1, r, 1.0, 0, None)]) for r in repeats])

    default = trial(Candidate(), 28.0, repeats=(39.0, 38.0))  # measured cold the first time
    leader = trial(Candidate(instance_count=2, threads=1), 36.0, repeats=(36.0, 35.0))
    assert _confirmed([default, leader], 100.0) is default
    leader = trial(Candidate(instance_count=2, threads=1), 36.0, repeats=(45.0, 47.0))
    assert _confirmed([default, leader], 100.0) is leader
    assert leader.estimate(100.0) == 46.0 and default.estimate(100.0) == 38.5
    # rounds that disagree by 21% make a 21% win noise (the transformer's case on 2 cores)
    default = trial(Candidate(), 37.5, repeats=(28.8, 35.7))
    leader = trial(Candidate(instance_count=2, threads=1), 42.4, repeats=(39.3, 39.0))
    assert round(default.spread(100.0), 3) == 0.214
    assert _confirmed([default, leader], 100.0) is default
    # within the noise, a leader that looks simpler (no queue delay) still loses to the defaults
    default = trial(Candidate(), 34.5, repeats=(34.0, 30.1))
    leader = trial(Candidate(max_batch_size=8, max_queue_delay_microseconds=0), 39.2,
                   repeats=(32.8, 38.0))
    assert _confirmed([default, leader], 100.0) is default


def _result(score: float) -> TuneResult:
    trial = Trial(Candidate(), [Level(1, 100.0, 12.5, 0, None)])
    return TuneResult("onnx", 10.0 if score == 0 else 20.0, 95, [trial], trial, 1.0, 2, "rest")


def test_an_slo_nobody_meets_is_one_line_error_after_the_report():
    require_slo_met(_result(1.0))
    with pytest.raises(UserError, match=r"no configuration met p95 <= 10 ms \(the lowest measured"
                                        r" was 12.50 ms\); raise max_latency_ms"):
        require_slo_met(_result(0))
    assert "Chosen: mbs 32, dyn 100us, 1 inst" in report.markdown(_result(0), None)


def test_bad_tuning_requests(digits_onnx):
    with pytest.raises(UserError, match="onnx or torchscript models on the local Triton"):
        tune(digits_onnx, "tensorrt", 10.0)
    with pytest.raises(UserError, match="percentile 90 is not 95 or 99"):
        tune(digits_onnx, "onnx", 10.0, percentile=90)
    with pytest.raises(UserError, match="must be > 0"):
        tune(digits_onnx, "onnx", 0.0)


def test_a_sweep_stops_after_two_levels_that_bring_nothing_not_after_one_noisy_level():
    from kfp_serve.components.tune.tuner import _levelled_off

    def levels(*rates):
        return [Level(2 ** i, r, 1.0, 0, None) for i, r in enumerate(rates)]

    assert not _levelled_off(levels(100, 200))
    assert not _levelled_off(levels(100, 200, 190))  # one level below the best: keep going
    assert not _levelled_off(levels(100, 200, 190, 300))
    assert _levelled_off(levels(100, 200, 190, 205))  # two levels, neither 5% over 200
