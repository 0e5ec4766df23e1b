"""Ports on 127.0.0.1 for the local servers: chosen free, or checked when given."""

from __future__ import annotations

import contextlib
import socket

from kfp_serve.components.errors import UserError


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1. The sockets are held open together while
    they are chosen: ports asked for one at a time can come back the same once closed."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                 for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def choose_ports(asked: dict[str, int]) -> list[int]:
    """The ports asked for (0: any free one), checked, and distinct from each other."""
    given = [port for port in asked.values() if port]
    if len(set(given)) < len(given):
        raise UserError(f"{', '.join(f'{k}={v}' for k, v in asked.items())}: each server needs a"
                        " port of its own; pass different ports, or 0 to pick free ones")
    chosen = [_choose_port(port, what) for what, port in asked.items()]
    spare = iter(p for p in free_ports(len(chosen) * 2) if p not in given)
    return [port or next(spare) for port in chosen]


def _choose_port(port: int, what: str) -> int:
    """``port`` checked (0 stays 0: :func:`choose_ports` picks a free one)."""
    if port == 0:
        return 0
    if not 1 <= port <= 65535:
        raise UserError(f"{what} {port} is not a TCP port; use 1-65535, or 0 for any free port")
    if not port_is_free(port):
        raise UserError(
            f"{what} {port} on 127.0.0.1 is already in use; pass a free port, or 0 to pick one"
        )
    return port
