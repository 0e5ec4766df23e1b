"""Greedy outputs of a live endpoint against the checkpoint's golden set.

By token ids where the server returns them (vLLM's ``return_token_ids``): re-tokenizing a
correct answer's text can give other ids. Raw prompts are sent as the golden prompt's token ids,
so the comparison measures the served model; chat prompts go through the server's chat
template, and the prompt ids it reports are compared too. A step where the server picked another
token counts as a near tie, not a failure, when the reference's log-probability of the server's
token is within ``logprob_atol`` of its best (bf16, fp8 and quantized weights flip such ties);
the sequences are not compared past it. Where both sides give log-probabilities, the chosen
tokens' must agree within ``logprob_atol``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kfp_serve.components.errors import InfrastructureError, UserError
from kfp_serve.components.llm.golden_set import GoldenEntry, GoldenSet
from kfp_serve.components.llm.openai_http import OpenAIClient


@dataclass(frozen=True)
class ParityRow:
    kind: str
    prompt: str
    passed: bool
    matched: int  # tokens equal before the first difference
    expected: int
    max_logprob_diff: float | None
    detail: str


def request_for(entry: GoldenEntry, model: str, top_k: int) -> tuple[str, dict[str, Any]]:
    common = {"model": model, "max_tokens": len(entry.token_ids), "temperature": 0.0,
              "repetition_penalty": 1.0, "return_token_ids": True,
              "return_tokens_as_token_ids": True}
    if entry.kind == "chat":
        return "/v1/chat/completions", {**common, "messages": entry.prompt, "logprobs": True,
                                        "top_logprobs": top_k}
    return "/v1/completions", {**common, "prompt": entry.prompt_token_ids, "logprobs": top_k}


def check_parity(client: OpenAIClient, model: str, golden: GoldenSet,
                 logprob_atol: float) -> list[ParityRow]:
    rows = []
    for entry in golden.entries:
        path, body = request_for(entry, model, min(golden.top_k, 5))
        status, answer = client.post_json(path, body)
        label = (entry.prompt if entry.kind == "completion"
                 else entry.prompt[-1]["content"])[:40]
        if status != 200 or not isinstance(answer, dict) or not answer.get("choices"):
            rows.append(ParityRow(entry.kind, label, False, 0, len(entry.token_ids), None,
                                  f"HTTP {status}: {str(answer)[:120]}"))
            continue
        rows.append(compare(entry, answer["choices"][0], logprob_atol, label))
    return rows


def answered_by(client: OpenAIClient, model: str, golden: GoldenSet, where: str) -> GoldenSet:
    """The golden prompts answered greedily by a reference server instead of transformers: the
    stable model a canary may replace, for models too large for a CPU reference. Its token ids,
    text and top-k log-probabilities (and, for chat, its prompt ids) become the expected ones."""
    entries = []
    for entry in golden.entries:
        path, body = request_for(entry, model, min(golden.top_k, 5))
        status, answer = client.post_json(path, body)
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if status != 200 or not choices:
            raise InfrastructureError(f"the parity reference {where} answered a golden prompt"
                                      f" with HTTP {status}: {str(answer)[:160]}")
        choice = choices[0]
        if choice.get("token_ids") is None:
            raise UserError(f"the parity reference {where} returns no token ids"
                            " (return_token_ids): compare against the golden set instead")
        entries.append(dataclasses.replace(
            entry, token_ids=[int(t) for t in choice["token_ids"]], text=_served_text(choice) or "",
            top_logprobs=_served_top_logprobs(choice),
            prompt_token_ids=list(choice.get("prompt_token_ids") or entry.prompt_token_ids)))
    return GoldenSet(golden.max_tokens, golden.top_k, where, entries)


def _served_text(choice: dict[str, Any]) -> str | None:
    """A completions choice's text or a chat choice's message content."""
    return choice.get("text") if "text" in choice else (choice.get("message") or {}).get("content")


def _token_id(token: str) -> int:
    """``token_id:123`` (vLLM's ``return_tokens_as_token_ids``) -> 123."""
    return int(str(token).rsplit(":", 1)[-1])


def _served_top_logprobs(choice: dict[str, Any]) -> list[list[list[float]]]:
    """Per generated step ``[[token id, log-probability], ...]`` best first, as the golden set
    keeps them, from a completions or chat answer's logprobs (the chosen token alone where the
    server gave no top-k); [] when it gave no log-probabilities."""
    logprobs = choice.get("logprobs") or {}
    if "top_logprobs" in logprobs:  # completions: one {token: logprob} per step
        steps = [list((step or {}).items()) for step in logprobs["top_logprobs"]]
    else:  # chat: content[i].top_logprobs = [{token, logprob}, ...]
        steps = [[(item["token"], item["logprob"]) for item in position.get("top_logprobs", [])]
                 for position in logprobs.get("content") or []]
    chosen, ids = _served_logprobs(choice) or [], choice.get("token_ids") or []
    out = []
    for k, token in enumerate(ids):
        pairs = sorted([[_token_id(t), float(lp)] for t, lp in (steps[k] if k < len(steps) else [])],
                       key=lambda pair: -pair[1])
        out.append(pairs or ([[int(token), chosen[k]]] if k < len(chosen) else []))
    return out if any(out) else []


def _served_logprobs(choice: dict[str, Any]) -> list[float] | None:
    logprobs = choice.get("logprobs") or {}
    if "token_logprobs" in logprobs:  # completions
        return [float(v) for v in logprobs["token_logprobs"]]
    if logprobs.get("content"):  # chat
        return [float(item["logprob"]) for item in logprobs["content"]]
    return None


def compare(entry: GoldenEntry, choice: dict[str, Any], logprob_atol: float,
            label: str) -> ParityRow:
    """One golden entry against the server's first choice."""
    served = choice.get("token_ids")
    text = _served_text(choice)
    expected = entry.token_ids
    if served is None:  # the server does not return ids: compare the text
        same = (text or "") == entry.text
        return ParityRow(entry.kind, label, same, len(expected) if same else 0, len(expected),
                         None, "text equal (the server returns no token ids)" if same else
                         f"text differs: expected {entry.text[:40]!r}, got {(text or '')[:40]!r}")
    matched = next((k for k, (a, b) in enumerate(zip(expected, served)) if a != b),
                   min(len(expected), len(served)))
    logprobs = _served_logprobs(choice)
    diff = None
    if logprobs is not None:
        diffs = [abs(logprobs[k] - entry.top_logprobs[k][0][1])
                 for k in range(min(matched, len(logprobs), len(entry.top_logprobs)))
                 if entry.top_logprobs[k]]
        diff = max(diffs, default=0.0)
    if matched < min(len(expected), len(served)):
        step = entry.top_logprobs[matched] if matched < len(entry.top_logprobs) else []
        reference = dict((int(token), lp) for token, lp in step)
        best = step[0][1] if step else None
        picked = served[matched]
        if best is not None and picked in reference and best - reference[picked] <= logprob_atol:
            ok = diff is None or diff <= logprob_atol
            return ParityRow(entry.kind, label, ok, matched, len(expected), diff,
                             f"near tie at token {matched}: the reference rates the server's"
                             f" {picked} {best - reference[picked]:.4f} below its {expected[matched]}"
                             " (within logprob_atol); not compared further")
        seen = (f"{reference[picked]:.3f}" if picked in reference
                else f"outside the reference's top {len(step)}")
        return ParityRow(entry.kind, label, False, matched, len(expected), diff,
                         f"differs at token {matched}: expected {expected[matched]}"
                         f" (log-prob {best:.3f}), got {picked} ({seen})")
    if len(served) != len(expected):
        return ParityRow(entry.kind, label, False, matched, len(expected), diff,
                         f"{len(served)} tokens, expected {len(expected)}")
    if diff is not None and diff > logprob_atol:
        return ParityRow(entry.kind, label, False, matched, len(expected), diff,
                         f"same tokens, log-probabilities differ by up to {diff:.4f}"
                         f" > logprob_atol {logprob_atol}")
    prompt_ids = choice.get("prompt_token_ids")
    if entry.kind == "chat" and prompt_ids is not None and list(prompt_ids) != entry.prompt_token_ids:
        return ParityRow(entry.kind, label, False, matched, len(expected), diff,
                         "same output, but the server's chat template made other prompt ids")
    return ParityRow(entry.kind, label, True, matched, len(expected), diff,
                     "token ids equal" + (f", log-probs within {diff:.2e}" if diff is not None else ""))
