"""validate_llm's verdict against a scripted OpenAI-compatible server (fakes/openai_scripted.py):
each misbehaviour fails it with a line that names it; a well-behaved server passes."""

from __future__ import annotations

import pytest
from fakes.openai_scripted import Script, ScriptedOpenAI

from kfp_serve.components.llm.golden_set import GoldenSet
from kfp_serve.components.llm.llm_load import Slo, synthetic_prompts
from kfp_serve.components.llm.llm_report import html, markdown
from kfp_serve.components.llm.llm_validation import LlmGates, validate_llm
from kfp_serve.components.llm.targets import OpenAITarget


def _validate(packaged_llm, script: Script, gates=None, slo=None, levels=((1, 0.0), (4, 0.0))):
    folder, _ = packaged_llm
    gates, slo = gates or LlmGates(), slo or Slo()
    golden = GoldenSet.load(folder)
    script.golden = golden
    with ScriptedOpenAI(script) as server:
        return validate_llm(OpenAITarget(server.url, script.model), golden, script.max_model_len, 2048, True,
                            list(levels), lambda c: synthetic_prompts(2 * c + 2, 16, 8, 2048),
                            gates, slo, progress=lambda _: None)


def test_a_well_behaved_server_passes_with_every_section_reported(packaged_llm):
    result = _validate(packaged_llm, Script(ttft_s=0.02, itl_s=0.005))
    assert result.passed, result.failure_line()
    assert all(p.matched == p.expected for p in result.parity)
    level = result.levels[0]
    # 8 tokens: TTFT about 20 ms, 7 gaps of about 5 ms each
    assert 15 <= level.percentile_ms("ttft", 50) <= 200
    assert 4 <= level.percentile_ms("itl", 50) <= 50 and len(level.samples_ms("itl")) == 7 * 4
    assert level.output_tokens == 4 * 8 and level.errors == 0
    text = markdown(result)
    assert "PASSED" in text and "TTFT p95 ms" in text and "token ids equal" in text
    assert "<svg" in html(result)


def test_a_buffered_stream_fails_conformance(packaged_llm):
    result = _validate(packaged_llm, Script(itl_s=0.002, buffered=True))
    assert not result.passed
    # three tries, each longer: the last (128 tokens) decides
    assert ("streaming: the first of 128 tokens came after" in result.failure_line()
            and "buffers its stream" in result.failure_line() and "(3 tries)" in result.failure_line())
    assert result.levels[0].whole_share == 1.0  # every load request came whole too


def test_answers_coalesced_at_times_pass_when_the_load_phase_streamed(packaged_llm):
    result = _validate(packaged_llm, Script(itl_s=0.002, buffered_first=3))
    assert result.passed, result.failure_line()
    check = next(c for c in result.conformance if c.name == "streaming")
    assert "load requests streamed token by token; the conformance tries came whole" in check.detail
    assert result.levels[0].whole_share == 0.0


def test_an_error_inside_a_stream_is_a_failed_request(packaged_llm):
    result = _validate(packaged_llm, Script(error_after=3, error_every=3))
    assert not result.passed
    line = result.failure_line()
    assert "requests failed (> max_error_rate 0): error in the stream: scripted failure" in line
    assert 0 < result.levels[1].errors < len(result.levels[1].results)


@pytest.mark.parametrize("status", [429, 503])
def test_a_server_refusing_every_completion_fails_closed(packaged_llm, status):
    result = _validate(packaged_llm, Script(status=status))
    assert not result.passed
    assert f"c=1: no request succeeded (HTTP {status}: busy)" in result.failure_line()


def test_an_over_long_prompt_accepted_fails_conformance(packaged_llm):
    result = _validate(packaged_llm, Script(refuse_long=False), levels=())
    assert "over-long request is 400: a 1025-token prompt got HTTP 200" in result.failure_line()


def test_latency_gates_and_goodput(packaged_llm):
    result = _validate(packaged_llm, Script(ttft_s=0.06, itl_s=0.001),
                       gates=LlmGates(max_p95_ttft_ms=30, min_goodput_ratio=0.9),
                       slo=Slo(ttft_ms=30))
    line = result.failure_line()
    assert "c=1: p95 TTFT" in line and "> 30 ms" in line
    assert "c=1: goodput 0% of requests met the SLO (< 90%)" in line
    assert result.levels[0].goodput_ratio == 0.0


def test_a_wrong_model_fails_parity_at_the_first_token(packaged_llm):
    folder, _ = packaged_llm
    golden = GoldenSet.load(folder)
    script = Script()
    with ScriptedOpenAI(script) as server:  # no golden set: every answer is token 7
        result = validate_llm(OpenAITarget(server.url, script.model), golden, 1024, 2048, True, [],
                              lambda c: synthetic_prompts(2, 16, 8, 2048), LlmGates(), Slo(),
                              progress=lambda _: None)
    assert not result.passed
    assert "differs at token 0: expected" in result.failure_line()


def test_parity_against_a_stable_server_compares_with_its_answers_not_the_golden_set(packaged_llm):
    """Canary against stable: the reference server's greedy answers are what the endpoint must
    give; a canary that agrees with the golden set but not with the stable one fails."""
    folder, _ = packaged_llm
    golden = GoldenSet.load(folder)
    canary = Script(golden=golden)
    with ScriptedOpenAI(canary) as served, ScriptedOpenAI(Script(golden=golden)) as same, \
            ScriptedOpenAI(Script()) as other:  # no golden set: it answers token 7 throughout
        def check(reference):
            return validate_llm(OpenAITarget(served.url, canary.model), golden, 1024, 2048, True,
                                [], lambda c: synthetic_prompts(2, 16, 8, 2048), LlmGates(), Slo(),
                                progress=lambda _: None, reference=OpenAITarget(reference.url, canary.model))
        agreeing = check(same)
        assert all(p.passed for p in agreeing.parity) and agreeing.reference == same.url
        differing = check(other)
    assert not any(p.passed for p in differing.parity)
    assert "differs at token 0: expected 7" in differing.failure_line()
    assert f"parity reference: {other.url}" in markdown(differing)
