"""Does the endpoint speak the OpenAI API as clients expect? Each check is one row: models,
completions, chat, a well-formed stream that really streams, 400 for an over-long request,
404 for an unknown model."""

from __future__ import annotations

from dataclasses import dataclass

from kfp_serve.components.llm.openai_http import OpenAIClient

#: a streamed answer counts as streamed when it came in at least this many events per output
#: token (vLLM sends one per token; a server that buffers sends one or two in all)
MIN_EVENTS_PER_TOKEN = 0.5
#: ... and its first token came before this share of the request's time
MAX_TTFT_SHARE = 0.8
STREAM_TOKENS = 32


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def check_conformance(client: OpenAIClient, model: str, max_model_len: int, chat: bool,
                      vocab_size: int) -> list[Check]:
    """Every conformance check against ``client``'s endpoint, in the order a client meets them."""
    checks = [_models(client, model, max_model_len)]
    status, body = client.post_json("/v1/completions", {
        "model": model, "prompt": "Hello", "max_tokens": 4, "temperature": 0.0})
    checks.append(_answer("completions", status, body, lambda c: "text" in c))
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


def _models(client: OpenAIClient, model: str, max_model_len: int) -> Check:
    status, body = client.get_json("/v1/models")
    if status != 200 or not isinstance(body, dict):
        return Check("/v1/models", False, f"HTTP {status}")
    listed = {m.get("id"): m for m in body.get("data", []) if isinstance(m, dict)}
    if model not in listed:
        return Check("/v1/models", False, f"{model!r} is not listed (found {sorted(listed)})")
    served_len = listed[model].get("max_model_len")
    if served_len is not None and max_model_len and int(served_len) != max_model_len:
        return Check("/v1/models", False, f"{model!r} serves max_model_len {served_len}, not the"
                                          f" {max_model_len} it was deployed with")
    return Check("/v1/models", True, f"{model!r}, max_model_len {served_len}")


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


def _stream(client: OpenAIClient, model: str) -> Check:
    name = "streaming"
    result = client.stream("/v1/completions", {
        "model": model, "prompt": "Hello", "max_tokens": STREAM_TOKENS, "temperature": 0.0,
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
    return Check(name, not problems, detail)
