"""Requests to an OpenAI-compatible server (vLLM's), streamed with a timestamp per chunk.

Plain ``http.client``: one keep-alive connection per client thread, each server-sent event read
as it arrives, so time to first token and inter-token latency are measured as the chunks come
in, the way ``vllm bench serve`` measures them (``vllm/benchmarks/lib/endpoint_request_func.py``:
a chunk with ``choices`` is a token event, the first sets TTFT, each later one adds an
inter-token gap; ``usage`` gives the output length).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StreamResult:
    """One streamed request as the client saw it (times in seconds from the request start)."""

    status: int = 0
    error: str = ""
    start: float = 0.0  # perf_counter at the request
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0  # to the last token event
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    events: int = 0  # token events (chunks with choices)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None  # from usage
    saw_done: bool = False
    logprobs: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error and self.events > 0


class OpenAIClient:
    """A client for one base URL (``http://host:port`` or with a path prefix such as ``/openai``).
    Not thread-safe: one per thread."""

    def __init__(self, base_url: str, timeout_s: float = 120.0, headers: dict[str, str] | None = None):
        parsed = urllib.parse.urlsplit(base_url.rstrip("/"))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{base_url!r} is not an http(s) URL")
        self.scheme, self.host, self.port = parsed.scheme, parsed.hostname, parsed.port
        self.prefix = parsed.path
        self.timeout_s = timeout_s
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            self._conn = kind(self.host, self.port, timeout=self.timeout_s)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> http.client.HTTPResponse:
        payload = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):  # a kept-alive connection the server closed is reopened once
            conn = self._connection()
            try:
                conn.request(method, self.prefix + path, body=payload, headers=self.headers)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> tuple[int, Any]:
        return self._json("GET", path, None)

    def post_json(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return self._json("POST", path, body)

    def _json(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        try:
            response = self._send(method, path, body)
            raw = response.read()
        except (OSError, http.client.HTTPException) as err:
            self.close()
            return 0, {"error": f"{type(err).__name__}: {err}"}
        try:
            return response.status, json.loads(raw or b"null")
        except ValueError:
            return response.status, {"error": raw[:200].decode(errors="replace")}

    def get_text(self, path: str) -> tuple[int, str]:
        try:
            response = self._send("GET", path, None)
            return response.status, response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as err:
            self.close()
            return 0, f"{type(err).__name__}: {err}"

    def stream(self, path: str, body: dict[str, Any]) -> StreamResult:
        """POST ``body`` with ``stream: true`` (and usage in the stream) and read its events."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        result = StreamResult(start=time.perf_counter())
        recent = result.start
        try:
            response = self._send("POST", path, body)
            result.status = response.status
            if response.status != 200:
                result.error = f"HTTP {response.status}: {error_message(response.read())}"
                return result
            if "text/event-stream" not in (response.getheader("Content-Type") or ""):
                result.error = f"not a stream (Content-Type {response.getheader('Content-Type')!r})"
                response.read()
                return result
            while not result.error:
                line = response.readline()
                if not line:
                    break
                recent = add_event(result, line.strip(), recent)
            result.latency = recent - result.start
            if result.error:  # the rest of the answer is unread: this connection is spent
                self.close()
            elif not result.saw_done:
                result.error = "the stream ended without data: [DONE]"
        except (OSError, http.client.HTTPException, ValueError) as err:
            self.close()
            result.error = result.error or f"{type(err).__name__}: {err}"
        return result


def add_event(result: StreamResult, message: bytes, recent: float) -> float:
    """Add one server-sent event (``data: ...``) to ``result`` as it arrives, the way ``vllm
    bench serve`` counts them: an event with ``choices`` is a token event (the first sets TTFT,
    each later one adds an inter-token gap), ``usage`` gives the lengths, an ``error`` ends the
    request as failed. Returns the time of the latest token event."""
    if not message or message.startswith(b":"):  # keep-alive comments
        return recent
    if not message.startswith(b"data:"):
        result.error = f"not a server-sent event: {message[:80]!r}"
        return recent
    data = message[5:].strip()
    if data == b"[DONE]":
        result.saw_done = True
        return recent
    event = json.loads(data)
    if "error" in event:
        result.error = f"error in the stream: {error_message(data)}"
    elif choices := event.get("choices"):
        now = time.perf_counter()
        if result.events == 0:
            result.ttft = now - result.start
        else:
            result.itl.append(now - recent)
        result.events += 1
        _add_choice(result, choices[0])
        return now
    elif usage := event.get("usage"):
        result.output_tokens = usage.get("completion_tokens")
        result.prompt_tokens = usage.get("prompt_tokens")
    return recent


def _add_choice(result: StreamResult, choice: dict[str, Any]) -> None:
    delta = choice.get("delta")
    text = (delta or {}).get("content") if delta is not None else choice.get("text")
    result.text += text or ""
    result.token_ids += choice.get("token_ids") or []
    if choice.get("logprobs"):
        result.logprobs.append(choice["logprobs"])
    if choice.get("finish_reason"):
        result.finish_reason = choice["finish_reason"]


def error_message(raw: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body (else its text), short."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw[:200].decode(errors="replace").strip()
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return str(error.get("message") or error)[:200]
    return str(error)[:200]
