"""The cluster's network, for the fake KServe controller: a gateway that routes by Host header
(as Knative's local gateway and a Kubernetes Service do) and a resolver for cluster-local names.

Inside a real cluster ``digits.models.svc.cluster.local`` resolves through cluster DNS and the
request reaches the revision(s) behind it. Here every ``*.svc.cluster.local`` name resolves to
127.0.0.1 (``install_cluster_dns``; subprocesses get it from ``cluster_dns/sitecustomize.py``
when ``KFP_SERVE_FAKE_CLUSTER_DNS=1`` and that folder is on PYTHONPATH), and the addresses the
fake controller reports carry the gateway's port (a real address uses port 80). External hosts
(``*.example.com``, KServe's default ingress domain) resolve nowhere, as from inside a cluster
without that DNS: a client that calls ``status.url`` instead of ``status.address.url`` fails.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLUSTER_SUFFIX = ".svc.cluster.local"

# host (without port) -> [(backend base URL, weight)]
Routes = Callable[[str], list[tuple[str, int]]]


class Gateway:
    """Forwards each request to a backend chosen by its Host header (weighted for a split)."""

    def __init__(self, routes: Routes):
        self.routes = routes

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
                backends = [(url, w) for url, w in routes(host) if w > 0]
                if not backends:
                    self._answer(404, {"Content-Type": "text/plain"}, f"no route for host {host}".encode())
                    return
                url = random.choices([u for u, _ in backends], [w for _, w in backends])[0]
                target = url.split("://", 1)[1]
                connection = http.client.HTTPConnection(target, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                try:
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    response = connection.getresponse()
                    if response.getheader("Transfer-Encoding", "").lower() == "chunked":
                        self._relay(response)  # a stream (server-sent events) goes on as it comes
                        return
                    data = response.read()
                    self._answer(response.status, dict(response.getheaders()), data)
                except OSError as err:  # the revision's server went away: Knative answers 503
                    self._answer(503, {"Content-Type": "text/plain"}, str(err).encode())
                finally:
                    connection.close()

            def _relay(self, response):
                """Knative's queue-proxy and Istio's Envoy pass a chunked answer on chunk by
                chunk (no response buffering), so a token stream reaches the client as sent."""
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while chunk := response.read1(65536):
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _answer(self, status, headers, data):
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, host: str) -> str:
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def install_cluster_dns() -> Callable[[], None]:
    """Resolve ``*.svc.cluster.local`` to 127.0.0.1 in this process; returns the undo."""
    original = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(CLUSTER_SUFFIX):
            host = "127.0.0.1"
        return original(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    return lambda: setattr(socket, "getaddrinfo", original)
