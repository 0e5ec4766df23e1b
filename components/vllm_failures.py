"""vLLM's own start-up failures, recognised in a log and told as what to change.

The messages are vLLM's (``vllm/v1/core/kv_cache_utils.py`` raises the cache ones,
``vllm/config/model.py`` the max-length one); PyTorch's allocator writes the CUDA one. The local
runtime quotes them when a server dies, and the KServe diagnostics when a predictor does.
"""

from __future__ import annotations

import re

#: (pattern in the log, what to change)
KNOWN_FAILURES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"No available memory for the cache blocks", re.I),
     "no memory is left for the KV cache after the weights: raise gpu_memory_utilization, use"
     " a larger accelerator or more of them (tensor_parallel_size), or a quantized checkpoint"),
    (re.compile(r"max.{0,10}seq_len.{0,80}larger than the maximum number of tokens that can be"
                r" stored in KV cache|KV cache is needed, which is larger than the available KV"
                r" cache memory", re.I),
     "the KV cache cannot hold one sequence of max_model_len tokens: lower max_model_len or"
     " raise gpu_memory_utilization"),
    (re.compile(r"max_model_len.{0,80}(greater|larger) than|User-specified max_model_len"
                r" \(\d+\) is greater than the derived max_model_len", re.I),
     "max_model_len is beyond the model's maximum context: lower it to the card's maximum"),
    (re.compile(r"CUDA out of memory|OutOfMemoryError", re.I),
     "the accelerator ran out of memory loading the model: lower gpu_memory_utilization's"
     " neighbours (max_num_seqs, max_model_len) or use a larger accelerator"),
    (re.compile(r"trust_remote_code", re.I),
     "the checkpoint needs remote code, which the suite does not run: use an architecture"
     " vLLM supports natively"),
)
_ERROR_LINE = re.compile(r"(\w+Error|\w+Exception): (?P<message>.+)$")
#: pydantic's reason line under "ValidationError: 1 validation error for ...Config"
_VALUE_ERROR = re.compile(r"^\s*Value error, (?P<message>.+?)(?: \[type=.*)?$")


def recognise(log_text: str) -> str:
    """What to change for the first known failure in ``log_text`` ('' when none is known)."""
    for pattern, advice in KNOWN_FAILURES:
        if pattern.search(log_text):
            return advice
    return ""


def error_lines(log_text: str, lines: int = 2) -> str:
    """The last exception lines of a vLLM log (else its last lines), joined on one line."""
    found: list[str] = []
    for line in log_text.splitlines():
        value = _VALUE_ERROR.match(line)
        match = _ERROR_LINE.search(line)
        if value:
            message = value.group("message").strip()
        elif match:
            message = f"{match.group(1)}: {match.group('message').strip()}"
        else:
            continue
        if message not in found:
            found.append(message)
    if found:
        return " | ".join(found[-lines:])
    tail = [line.strip() for line in log_text.strip().splitlines()[-lines:]]
    return " | ".join(tail) or "(empty log)"
