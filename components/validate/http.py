"""One HTTP endpoint: its URL parsed once, connections, JSON calls with one-line errors."""

from __future__ import annotations

import json
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
            raise InfrastructureError(f"cannot reach {self.url}: {err}") from err

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


def answer_error(status: int, body: bytes, what: str) -> KfpServeError:
    """A non-200 answer as one line: 400/403/404 are the caller's to fix (a request the model
    does not take, no permission, no such model), the rest the server's."""
    detail = body.decode(errors="replace")[:300]
    kind = UserError if status in (400, 403, 404) else InfrastructureError
    return kind(f"{what} answered {status}: {detail}")
