"""Readiness polling shared by every protocol the validator speaks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from kfp_serve.components.errors import InfrastructureError

T = TypeVar("T")


def poll(check: Callable[[], tuple[T | None, str]], timeout_s: float, what: str,
         interval_s: float = 0.5) -> T:
    """Call ``check`` until it returns a result (not None); it also returns a status line, which
    the timeout error quotes: ``{what} after {timeout_s}s: {status}``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result, status = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise InfrastructureError(f"{what} after {timeout_s:.0f}s: {status}")
        time.sleep(interval_s)
