"""Does the endpoint speak the OpenAI API as clients expect? Each check is one row: models,
completions, chat, a well-formed stream that really streams, 400 for an over-long request,
404 for an unknown model."""

from __future__ import annotations

from dataclasses import dataclass

from kfp_serve.components.llm.openai_http import OpenAIClient, StreamResult

#: a streamed answer counts as streamed when it came in at least this many events per output
#: token (vLLM sends one per token; a server that buffers sends one or two in all)
MIN_EVENTS_PER_TOKEN = 0.5
#: ... and its first token came before this share of the request's time
MAX_TTFT_SHARE = 0.8


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    buffered: bool = False  # failed only for coming whole (the load phase may clear it)


def check_conformance(client: OpenAIClient, model: str, max_model_len: int, chat: bool,
                      vocab_size: int, listing: bool = True) -> list[Check]:
    """Every conformance check against ``client``'s endpoint, in the order a client meets them.
    ``max_model_len``: the model's context (its card); the server may serve less. ``listing``
    False: GET routes do not reach the server (Vertex AI's invoke forwards POST only), so
    instead of ``/v1/models`` the answers are checked to name the model."""
    checks, served_len = [], 0
    if listing:
        models, served_len = _models(client, model, max_model_len)
        checks.append(models)
    max_model_len = served_len or max_model_len
    status, body = client.post_json("/v1/completions", {
        "model": model, "prompt": "Hello", "max_tokens": 4, "temperature": 0.0})
    checks.append(_answer("completions", status, body, lambda c: "text" in c))
    if not listing:
        named = body.get("model") if isinstance(body, dict) else None
        checks.append(Check("served model name", named == model,
                            f"the completions answer names {named!r} (expected {model!r})"))
    if chat:
        status, body = client.post_json("/v1/chat/completions", {
            "model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4,
            "temperature": 0.0})
        checks.append(_answer("chat completions", status, body,
                              lambda c: "content" in (c.get("message") or {})))
    checks.append(_stream(client, model))
    long_prompt = [min(5, vocab_size - 1)] * (max_model_len + 1)
    status, body = client.post_json("/v1/completions", {
        "model": model, "prompt": long_prompt, "max_tokens": 1})
    checks.append(Check("over-long request is 400", status == 400,
                        f"a {max_model_len + 1}-token prompt got HTTP {status}"))
    status, body = client.post_json("/v1/completions", {
        "model": f"{model}-no-such-model", "prompt": "Hello", "max_tokens": 1})
    checks.append(Check("unknown model is 404", status == 404,
                        f"model {model + '-no-such-model'!r} got HTTP {status}"))
    return checks


def _models(client: OpenAIClient, model: str, context: int) -> tuple[Check, int]:
    """The models check, and the max model length the server reports (0: none)."""
    status, body = client.get_json("/v1/models")
    if status != 200 or not isinstance(body, dict):
        return Check("/v1/models", False, f"HTTP {status}"), 0
    listed = {m.get("id"): m for m in body.get("data", []) if isinstance(m, dict)}
    if model not in listed:
        return Check("/v1/models", False, f"{model!r} is not listed (found {sorted(listed)})"), 0
    served_len = int(listed[model].get("max_model_len") or 0)
    if served_len > context:
        return Check("/v1/models", False, f"{model!r} serves max_model_len {served_len}, beyond"
                                          f" the model's context of {context}"), served_len
    return Check("/v1/models", True, f"{model!r}, max_model_len"
                                     f" {served_len or 'not reported'}"), served_len


def _answer(name: str, status: int, body: object, has_text) -> Check:
    if status != 200 or not isinstance(body, dict):
        return Check(name, False, f"HTTP {status}: {str(body)[:120]}")
    choices = body.get("choices") or []
    if not choices or not has_text(choices[0]) or not choices[0].get("finish_reason"):
        return Check(name, False, f"no choice with text and finish_reason: {str(body)[:120]}")
    usage = body.get("usage") or {}
    return Check(name, "completion_tokens" in usage,
                 f"{usage.get('completion_tokens', 'no')} tokens, finish_reason"
                 f" {choices[0]['finish_reason']!r}" + ("" if usage else "; no usage"))


#: the streamed requests tried before "does not stream" is the verdict, by their output tokens:
#: vLLM coalesces the tokens of a request whose reader lags (vllm/v1/engine/output_processor.py
#: RequestOutputCollector), and a reader starved of CPU gets a short answer's events in one read,
#: so on a machine short of cores one answer can come whole; each try is longer (a lag of tens of
#: ms covers less of it) and comes after a pause. A server or proxy that buffers does it every time.
STREAM_TRIES_TOKENS = (32, 64, 128)
STREAM_RETRY_PAUSE_S = 0.5
STREAM_TRIES = len(STREAM_TRIES_TOKENS)


def _stream(client: OpenAIClient, model: str) -> Check:
    import time

    checks = []
    for tokens in STREAM_TRIES_TOKENS:
        if checks:
            time.sleep(STREAM_RETRY_PAUSE_S)
        checks.append(_stream_once(client, model, tokens))
        if checks[-1].passed:
            break
    if checks[-1].passed and len(checks) > 1:
        return Check("streaming", True, f"{checks[-1].detail} (try {len(checks)} of"
                                        f" {STREAM_TRIES}; before: {checks[0].detail})")
    return checks[-1] if checks[-1].passed else Check(
        "streaming", False, checks[-1].detail + ("" if len(checks) == 1 else
                                                 f" ({len(checks)} tries)"),
        buffered=checks[-1].buffered)


def streamed(result: StreamResult) -> bool:
    """Whether a streamed answer came token by token: events about one per token, the first
    well before the last."""
    tokens = int(result.output_tokens or 0)
    return not result.error and (tokens <= 1 or (
        result.events >= MIN_EVENTS_PER_TOKEN * tokens and result.ttft <= MAX_TTFT_SHARE * result.latency))


def _stream_once(client: OpenAIClient, model: str, max_tokens: int) -> Check:
    name = "streaming"
    result = client.stream("/v1/completions", {
        "model": model, "prompt": "Hello", "max_tokens": max_tokens, "temperature": 0.0,
        "ignore_eos": True})
    if result.error:
        return Check(name, False, result.error)
    problems = []
    if result.output_tokens is None:
        problems.append("no usage chunk although stream_options.include_usage was set")
    if not result.finish_reason:
        problems.append("no finish_reason")
    tokens = int(result.output_tokens or 0)
    if tokens > 1 and result.events < MIN_EVENTS_PER_TOKEN * tokens:
        problems.append(f"{result.events} events for {tokens} tokens: the server sends many"
                        " tokens per event, so inter-token latency is not what clients feel")
    elif tokens > 1 and result.ttft > MAX_TTFT_SHARE * result.latency:
        problems.append(f"the first of {tokens} tokens came after {result.ttft * 1000:.0f} ms of"
                        f" {result.latency * 1000:.0f} ms: the server (or a proxy before it)"
                        " buffers its stream; clients see no token until the end")
    detail = "; ".join(problems) or (f"{result.events} events for {tokens} tokens, first after"
                                     f" {result.ttft * 1000:.0f} ms of {result.latency * 1000:.0f} ms")
    whole = bool(problems) and result.output_tokens is not None and bool(result.finish_reason)
    return Check(name, not problems, detail, buffered=whole)
