"""Pipeline cancellation: KFP stops a step with SIGTERM; long waits check this flag."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sigterm_flag() -> Iterator[threading.Event]:
    """An Event set by SIGTERM while waiting (main thread only; elsewhere never set)."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGTERM, previous)
