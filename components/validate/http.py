"""HTTP transports: one endpoint (its URL parsed once, connections, JSON calls with one-line
errors), and the raw keep-alive connection the load generator drives."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPResponse, HTTPSConnection
from urllib.parse import urlparse

from kfp_serve.components.errors import InfrastructureError, KfpServeError, UserError


@dataclass(frozen=True)
class HttpEndpoint:
    """``http(s)://HOST[:PORT][/prefix]``; ``prefix`` is kept for servers behind a path."""

    scheme: str
    netloc: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> HttpEndpoint:
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UserError(f"endpoint URL {url!r} is not valid; use http://HOST:PORT")
        return cls(parsed.scheme, parsed.netloc, parsed.path.rstrip("/"))

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.prefix}"

    def connection(self, timeout_s: float = 60.0) -> HTTPConnection:
        kind = HTTPSConnection if self.scheme == "https" else HTTPConnection
        return kind(self.netloc, timeout=timeout_s)

    def call(self, connection: HTTPConnection, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes, HTTPResponse]:
        """One request on ``connection``: ``(status, body, the response for its headers)``."""
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read(), response
        except OSError as err:
            connection.close()
            raise transport_error(err, self.url, f"{method} {path}", connection.timeout) from err

    def get_json(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict | str]:
        """GET ``path``: ``(status, parsed JSON)`` or ``(status, text)`` when not JSON."""
        connection = self.connection(timeout_s=10)
        try:
            status, body, _ = self.call(connection, "GET", path, headers=headers)
        finally:
            connection.close()
        try:
            return status, json.loads(body or b"{}")
        except ValueError:
            return status, body.decode(errors="replace")[:200]


def transport_error(err: OSError, url: str, request: str, timeout_s: float | None) -> InfrastructureError:
    """Which of three failures it was: no server (refused, unknown host), a server that stopped
    mid-request (reset, closed), or one that took the request and never answered (timeout)."""
    if isinstance(err, TimeoutError):
        return InfrastructureError(
            f"{url} took {request} and did not answer within {timeout_s or 0:.0f} s: the server is"
            " stalled or overloaded (it still accepts connections)")
    if isinstance(err, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return InfrastructureError(f"{url} closed the connection during {request} ({err}): the"
                                   " server stopped or crashed; see its log")
    return InfrastructureError(f"cannot reach {url}: {err}")


def answer_error(status: int, body: bytes, what: str) -> KfpServeError:
    """A non-200 answer as one line: 400/403/404 are the caller's to fix (a request the model
    does not take, no permission, no such model), the rest the server's."""
    detail = body.decode(errors="replace")[:300]
    kind = UserError if status in (400, 403, 404) else InfrastructureError
    return kind(f"{what} answered {status}: {detail}")


class RawHttpConnection:
    """One keep-alive HTTP/1.1 connection for the load generator: sends pre-encoded requests,
    reads each response's status line, headers and body (Content-Length or chunked) and keeps
    only the status (http.client spends more time on headers than a fast server on answering)."""

    def __init__(self, host: str, port: int, timeout: float = 60.0):
        self.address, self.timeout = (host, port), timeout
        self._connect()

    def _connect(self) -> None:
        self.sock = socket.create_connection(self.address, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.open = True

    def exchange(self, request: bytes, header: bytes = b"") -> int | tuple[int, str, bytes]:
        """Send one request; its status, or with ``header`` (lowercase) ``(status, that header's
        value, body)``: what a caller needs to tell which model answered."""
        if not self.open:  # the server ended the last exchange by closing (HTTP/1.0 servers)
            self.close()
            self._connect()
        self.sock.sendall(request)
        status_line = self.file.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split(None, 2)[1])
        length, chunked, close = 0, False, status_line.startswith(b"HTTP/1.0")
        wanted = ""
        while True:
            line = self.file.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if header and name == header:
                wanted = value.strip().decode(errors="replace")
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower() or (close and b"keep-alive" not in value.lower())
        body = b""
        if chunked:
            while True:
                size = int(self.file.readline().split(b";")[0], 16)
                body += self.file.read(size + 2)[:size]
                if size == 0:
                    break
        elif length:
            body = self.file.read(length)
        elif close:
            body = self.file.read()  # the body runs to the end of the connection
        self.open = not close
        return (status, wanted, body) if header else status

    def close(self) -> None:
        self.file.close()
        self.sock.close()
