"""Parity rules on hand-made answers: ids first, near ties within the tolerance, log-probs."""

from __future__ import annotations

from kfp_serve.components.llm.golden_set import GoldenEntry
from kfp_serve.components.llm.parity import compare

ENTRY = GoldenEntry(kind="completion", prompt="p", prompt_token_ids=[1, 2], token_ids=[10, 11, 12],
                    text="abc", top_logprobs=[[[10, -1.0], [20, -1.02]], [[11, -0.5], [21, -3.0]],
                                              [[12, -0.1], [22, -4.0]]])


def _choice(ids, logprobs=None, text="abc"):
    choice = {"text": text, "token_ids": ids}
    if logprobs is not None:
        choice["logprobs"] = {"token_logprobs": logprobs}
    return choice


def test_equal_ids_pass_and_log_probs_are_compared():
    row = compare(ENTRY, _choice([10, 11, 12], [-1.0, -0.5, -0.1001]), 0.05, "p")
    assert row.passed and row.matched == 3 and row.max_logprob_diff < 1e-3
    row = compare(ENTRY, _choice([10, 11, 12], [-1.0, -0.9, -0.1]), 0.05, "p")
    assert not row.passed and "log-probabilities differ by up to 0.4000" in row.detail


def test_a_near_tie_within_the_tolerance_may_flip():
    row = compare(ENTRY, _choice([20, 99, 99]), 0.05, "p")
    assert row.passed and "near tie at token 0" in row.detail
    row = compare(ENTRY, _choice([20, 99, 99]), 0.01, "p")
    assert not row.passed and "differs at token 0: expected 10" in row.detail


def test_a_clear_difference_fails_where_it_happens():
    row = compare(ENTRY, _choice([10, 21, 12]), 0.05, "p")
    assert not row.passed and row.matched == 1
    assert "differs at token 1: expected 11 (log-prob -0.500), got 21 (-3.000)" in row.detail
    row = compare(ENTRY, _choice([10, 11]), 0.05, "p")
    assert not row.passed and "2 tokens, expected 3" in row.detail


def test_without_token_ids_the_text_is_compared():
    assert compare(ENTRY, {"text": "abc"}, 0.05, "p").passed
    assert not compare(ENTRY, {"text": "abd"}, 0.05, "p").passed
