"""A tiny threaded HTTP server on 127.0.0.1 for behavioural fakes of remote APIs."""

from __future__ import annotations

import json
import select
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

# (method, path, query, json body) -> (status, json response, plain text, bytes or an iterator
# of byte chunks sent as they come[, extra headers])
Handler = Callable[[str, str, dict, dict], tuple]
#: what an HTTP/2 client sends first (RFC 9113 3.4); gRPC speaks HTTP/2
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def relay(client: socket.socket, upstream: str) -> None:
    """Copy bytes both ways between ``client`` and ``upstream`` (HOST:PORT) until one closes."""
    host, port = upstream.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as server:
        sockets = [client, server]
        while True:
            readable, _, _ = select.select(sockets, [], [], 60)
            if not readable:
                continue
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                (server if sock is client else client).sendall(data)


class FakeServer:
    """Serves ``handler`` on a free port of 127.0.0.1 and records every request.

    A handler with ``takes_h2`` also takes HTTP/2 on the same port: such a connection (gRPC) is
    relayed to the server at its ``h2_upstream`` (HOST:PORT), as a host that serves REST and gRPC on one
    port does (a Vertex AI dedicated endpoint's DNS name)."""

    def __init__(self, handler: Handler):
        self.requests: list[tuple[str, str, dict, dict]] = []
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            def _serve(self):
                parsed = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                kind = self.headers.get("Content-Type", "")
                # a proxy of binary bodies (Triton's binary tensors) takes them as bytes
                media = kind.split(";")[0].strip()
                as_bytes = getattr(handler, "takes_bytes", False) and raw and media not in ("", "application/json")
                body = raw if as_bytes else (json.loads(raw) if raw else {})
                query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                fake.requests.append((self.command, parsed.path, query, body))
                if getattr(handler, "wants_headers", False):  # e.g. headers a proxy passes on
                    status, payload, *extra = handler(self.command, parsed.path, query, body,
                                                      headers=dict(self.headers.items()))
                else:
                    status, payload, *extra = handler(self.command, parsed.path, query, body)
                if isinstance(payload, Iterator):  # a stream: chunks go out as they come
                    self._send_chunks(status, payload, extra[0] if extra else {})
                    return
                text = isinstance(payload, str)  # e.g. pod logs
                if isinstance(payload, bytes):
                    data, kind = payload, "application/octet-stream"
                else:
                    data = payload.encode() if text else json.dumps(payload).encode()
                    kind = "text/plain" if text else "application/json"
                added = extra[0] if extra else {}
                self.send_response(status)
                if not any(k.lower() == "content-type" for k in added):
                    self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for key, value in added.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _send_chunks(self, status: int, chunks: Iterator[bytes], headers: dict) -> None:
                """An HTTP/1.0 answer without a length: each chunk is written and flushed as it
                comes, and closing the connection ends the body."""
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, *args):
                pass

        class _Server(ThreadingHTTPServer):
            def finish_request(self, request, client_address):
                # every HTTP/1 request line and the HTTP/2 preface have 4 bytes to look at
                if getattr(handler, "takes_h2", False) and \
                        request.recv(4, socket.MSG_PEEK | socket.MSG_WAITALL) == H2_PREFACE[:4]:
                    relay(request, handler.h2_upstream)
                    return
                super().finish_request(request, client_address)

        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
