"""A small scripted OpenAI-compatible server for deterministic gate tests of
validate_llm_endpoint: time to first token and inter-token gaps as configured, a stream that is
buffered to the end, an error event mid-stream, 429/503 for every completion, no 400 for an
over-long prompt.

It answers as vLLM's OpenAI server answers (``vllm/entrypoints/openai/``: ``/v1/models`` with
``max_model_len``; completions and chat with ``token_ids`` when ``return_token_ids`` is set;
server-sent ``data:`` events, a usage event when ``stream_options.include_usage`` is set, then
``data: [DONE]``; 400 for a prompt beyond ``max_model_len``, 404 for an unknown model). Given a
golden set it answers each golden prompt with its golden tokens and log-probabilities, so a
well-behaved script passes parity; any other prompt gets ``max_tokens`` of token 7.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Script:
    model: str = "scripted"
    max_model_len: int = 1024
    ttft_s: float = 0.0
    itl_s: float = 0.0
    buffered: bool = False  # send the whole stream at the end, as a buffering proxy does
    buffered_first: int = 0  # ... only the first n streams, as vLLM short of CPU coalesces
    error_after: int = -1  # tokens sent before an error event (-1: never) ...
    error_every: int = 1  # ... in every n-th streamed request
    status: int = 200  # 429 / 503: every completion is refused so
    refuse_long: bool = True  # 400 for a prompt beyond max_model_len
    golden: Any = None  # a GoldenSet whose prompts get their golden answers
    requests: list[dict[str, Any]] = field(default_factory=list)


def _answer(script: Script, body: dict[str, Any]) -> tuple[list[int], list[float]]:
    if script.golden is not None:
        for entry in script.golden.entries:
            if body.get("prompt") == entry.prompt_token_ids or body.get("messages") == entry.prompt:
                return list(entry.token_ids), [step[0][1] for step in entry.top_logprobs]
    count = int(body.get("max_tokens", 16))
    return [7] * count, [-1.0] * count


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    script: Script

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()  # uvicorn (vLLM's server) sends each event at once: no Nagle delay
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": self.script.model, "object": "model", "max_model_len": self.script.max_model_len}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "code": 404}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        script = self.script
        script.requests.append(body)
        chat = self.path == "/v1/chat/completions"
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            return self._json(404, {"error": {"message": "not found", "code": 404}})
        if body.get("model") != script.model:
            return self._json(404, {"error": {"message": f"The model `{body.get('model')}` does"
                                              " not exist.", "code": 404}})
        prompt = body.get("prompt")
        if script.refuse_long and isinstance(prompt, list) and len(prompt) > script.max_model_len:
            return self._json(400, {"error": {"message": "This model's maximum context length is"
                                              f" {script.max_model_len} tokens", "code": 400}})
        if script.status != 200:
            return self._json(script.status, {"error": {"message": "busy", "code": script.status}})
        tokens, logprobs = _answer(script, body)
        tokens = tokens[:int(body.get("max_tokens", len(tokens)))]
        prompt_tokens = len(prompt) if isinstance(prompt, list) else 5
        if body.get("stream"):
            return self._stream(body, tokens, chat, prompt_tokens)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "token_ids": tokens}
        if chat:
            choice["message"] = {"role": "assistant", "content": " x" * len(tokens)}
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [{"token": f"token_id:{t}", "logprob": lp}
                                                  for t, lp in zip(tokens, logprobs)]}
        else:
            choice["text"] = " x" * len(tokens)
            if body.get("logprobs"):
                choice["logprobs"] = {"token_logprobs": logprobs[:len(tokens)]}
        self._json(200, {"object": "text_completion", "choices": [choice], "usage": {
            "prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens)}})

    def _stream(self, body: dict[str, Any], tokens: list[int], chat: bool, prompt_tokens: int) -> None:
        script = self.script
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        held: list[bytes] = []
        script.streams = getattr(script, "streams", 0) + 1
        error_after = script.error_after if script.streams % script.error_every == 0 else -1
        buffered = script.buffered or script.streams <= script.buffered_first

        def send(event: Any) -> None:
            data = b"data: " + (event if isinstance(event, bytes) else json.dumps(event).encode()) + b"\n\n"
            if buffered:
                held.append(data)
                return
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        time.sleep(script.ttft_s)
        for k, token in enumerate(tokens):
            if k == error_after:
                send({"error": {"message": "scripted failure mid-stream", "code": 500}})
                break
            if k:
                time.sleep(script.itl_s)
            last = k == len(tokens) - 1
            choice = {"index": 0, "token_ids": [token], "finish_reason": "length" if last else None}
            choice.update({"delta": {"content": " x"}} if chat else {"text": " x"})
            send({"choices": [choice]})
        if (body.get("stream_options") or {}).get("include_usage"):
            send({"choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                           "completion_tokens": len(tokens)}})
        send(b"[DONE]")
        if held:
            data = b"".join(held)
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class ScriptedOpenAI:
    """Serves a :class:`Script` on a free port of 127.0.0.1 (a thread; stopped on exit)."""

    def __init__(self, script: Script):
        handler = type("Handler", (_Handler,), {"script": script})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.script = script
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
