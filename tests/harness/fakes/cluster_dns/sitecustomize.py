"""Cluster DNS for step subprocesses of end-to-end tests (see fakes/cluster_gateway.py)."""

import os
import socket

if os.environ.get("KFP_SERVE_FAKE_CLUSTER_DNS") == "1":
    _original = socket.getaddrinfo

    def _getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".svc.cluster.local"):
            host = "127.0.0.1"
        return _original(host, *args, **kwargs)

    socket.getaddrinfo = _getaddrinfo
