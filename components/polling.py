"""Wait for something remote to be ready: the one wait loop every server and client uses.

Local servers starting, endpoints becoming ready, InferenceServices rolling out and Vertex AI
operations finishing all wait here: a bounded loop with an optional backoff, a timeout error
that quotes the remote object's last status, and (where asked) cancellation by SIGTERM, which
is how Kubeflow Pipelines stops a step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from kfp_serve.components.cancellation import sigterm_flag
from kfp_serve.components.errors import InfrastructureError, KfpServeError

T = TypeVar("T")


def poll(check: Callable[[], tuple[T | None, str]], timeout_s: float, what: str,
         interval_s: float = 0.5, detail: Callable[[], str] | None = None, *,
         backoff: float = 1.0, max_interval_s: float | None = None,
         on_cancel: Callable[[str], KfpServeError] | None = None) -> T:
    """Call ``check`` until it returns a result (not None), and return that result.

    ``check`` also returns a status line, which the timeout error quotes:
    ``{what} after {timeout_s}s: {status}`` (plus ``detail()``, e.g. a server's log tail, when
    given). ``check`` raises to fail at once (a server process that exited, a terminal state).
    The pause between checks starts at ``interval_s`` and grows by ``backoff`` up to
    ``max_interval_s`` (short waits end fast, long ones poll gently).

    With ``on_cancel`` the wait is cancellable: SIGTERM ends it at once (the pause is cut short)
    with the error ``on_cancel`` returns for the last status, after whatever it does to cancel
    the remote work.
    """
    with (sigterm_flag() if on_cancel is not None else _never()) as cancelled:
        deadline = time.monotonic() + timeout_s
        delay = interval_s
        while True:
            result, status = check()
            if result is not None:
                return result
            if cancelled.is_set():
                raise on_cancel(status)  # type: ignore[misc]  (set only with on_cancel)
            if time.monotonic() >= deadline:
                extra = f"; {detail()}" if detail is not None else ""
                raise InfrastructureError(f"{what} after {timeout_s:.0f}s: {status}{extra}")
            cancelled.wait(min(delay, max(deadline - time.monotonic(), 0.0) + 0.01))
            delay = min(delay * backoff, max_interval_s or delay * backoff)


class _never:
    """A flag nothing sets: the context of a wait that cannot be cancelled."""

    def __enter__(self) -> threading.Event:
        return threading.Event()

    def __exit__(self, *_: object) -> None:
        return None
