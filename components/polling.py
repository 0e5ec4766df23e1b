"""Wait for something remote to be ready: the one readiness loop every server and client uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from kfp_serve.components.errors import InfrastructureError

T = TypeVar("T")


def poll(check: Callable[[], tuple[T | None, str]], timeout_s: float, what: str,
         interval_s: float = 0.5, detail: Callable[[], str] | None = None) -> T:
    """Call ``check`` until it returns a result (not None), and return that result.

    ``check`` also returns a status line, which the timeout error quotes:
    ``{what} after {timeout_s}s: {status}`` (plus ``detail()``, e.g. a server's log tail, when
    given). ``check`` raises to fail at once (a server process that exited, a terminal state).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result, status = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            extra = f"; {detail()}" if detail is not None else ""
            raise InfrastructureError(f"{what} after {timeout_s:.0f}s: {status}{extra}")
        time.sleep(interval_s)
