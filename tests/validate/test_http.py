"""What went wrong on the wire, named: no server, a server that stopped mid-request, a server that
took the request and never answered (it said "cannot reach" for all three), and a metrics page
that went away (it read as a malformed metrics page)."""

import socket
import threading

import pytest

from kfp_serve.components.errors import InfrastructureError
from kfp_serve.components.validate.http import HttpEndpoint
from kfp_serve.components.validate.server_metrics import read_counters


def _server(behaviour: str):
    """A socket on 127.0.0.1 that accepts, then stalls or hangs up."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    held = []

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.recv(65536)
            if behaviour == "hang up":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST
                conn.close()
            else:
                held.append(conn)  # never answers

    threading.Thread(target=serve, daemon=True).start()
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(("behaviour", "message"), [
    ("stall", r"^http://127.0.0.1:\d+ took POST /v2/models/m/infer and did not answer within 1 s:"
              r" the server is stalled or overloaded \(it still accepts connections\)$"),
    ("hang up", r"^http://127.0.0.1:\d+ closed the connection during POST /v2/models/m/infer"
                r" \(.*\): the server stopped or crashed; see its log$"),
])
def test_a_stalled_or_crashed_server_is_not_unreachable(behaviour, message):
    sock, url = _server(behaviour)
    try:
        endpoint = HttpEndpoint.parse(url)
        with pytest.raises(InfrastructureError, match=message):
            endpoint.call(endpoint.connection(timeout_s=1), "POST", "/v2/models/m/infer", b"{}")
    finally:
        sock.close()


def test_nothing_listening_is_unreachable_and_a_gone_metrics_page_says_the_server_went():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed below: nothing listens there
    endpoint = HttpEndpoint.parse(f"http://127.0.0.1:{port}")
    with pytest.raises(InfrastructureError, match=f"^cannot reach http://127.0.0.1:{port}: "):
        endpoint.call(endpoint.connection(timeout_s=1), "GET", "/v2/health/ready")
    with pytest.raises(InfrastructureError, match=f"^the metrics page http://127.0.0.1:{port}/metrics"
                                                  " refuses connections: the server exited or"
                                                  " crashed during validation"):
        read_counters(f"http://127.0.0.1:{port}/metrics", "m")
