"""How GCS requests ride out an outage: retried through transient errors for a bounded window that
all the parallel requests of one publish or fetch share, with a line that says so at the start,
and one error, with what was done, at the end.

google-cloud-storage retries each request on its own for up to 120 s (``DEFAULT_RETRY``), so a
publish of many files with the server gone retried file after file for minutes without a word,
then ended in a ``RetryError`` the translation did not catch. Here the first transient error
starts the outage's clock; once every request has failed for ``window_s`` since, each request
gives up at its next error (the ones not started yet at their first), so the whole transfer
ends about ``window_s`` after the outage began. The transient set is google-cloud-storage's
(``google/cloud/storage/retry.py``: ``_RETRYABLE_TYPES`` and ``_RETRYABLE_STATUS_CODES``),
written out here because that module keeps it private.
"""

from __future__ import annotations

import http.client
import os
import re
import sys
import threading
import time

from kfp_serve.components.errors import InfrastructureError, first_line
from kfp_serve.components.storage.emulator import EMULATOR_ENV

#: how long a storage outage is ridden out before the transfer fails (GCS's own default: 120 s
#: per request, with no bound across requests)
GCS_RETRY_S = 30.0


def _transient_types() -> tuple[type[BaseException], ...]:
    import google.auth.exceptions
    import requests
    from google.api_core import exceptions as gexc

    return (gexc.TooManyRequests, gexc.InternalServerError, gexc.BadGateway,
            gexc.ServiceUnavailable, gexc.GatewayTimeout, ConnectionError, requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError, requests.exceptions.Timeout,
            http.client.BadStatusLine, google.auth.exceptions.TransportError)


def endpoint() -> str:
    """Where GCS requests go: the emulator's URL, or storage.googleapis.com."""
    return os.environ.get(EMULATOR_ENV) or "storage.googleapis.com"


def reason(error: BaseException) -> str:
    """A transport error in a few words ("connection refused"), else its first line."""
    text = first_line(error)
    errno = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", text)
    if errno:  # ... NewConnectionError(... [Errno 111] Connection refused')
        return errno.group(1).strip().lower()
    inner = re.search(r"[A-Za-z]+(?:Error|Disconnected)\('([^']+)'\)", text)
    if inner:  # ('Connection aborted.', RemoteDisconnected('Remote end closed connection ...'))
        return inner.group(1).strip().rstrip(".").lower()
    return text[:200]


class OutageRetry:
    """The retry policy of one transfer; ``policy`` goes to every request as ``retry=``."""

    def __init__(self, window_s: float = GCS_RETRY_S):
        from google.api_core.retry import Retry

        self.window_s = window_s
        self.transient = _transient_types()
        self.lock = threading.Lock()
        self.started: float | None = None  # the outage's first error
        self.latest: float | None = None
        self.policy = Retry(predicate=self._retryable, initial=0.5, maximum=8.0, multiplier=2.0,
                            timeout=window_s)

    def is_transient(self, error: BaseException) -> bool:
        """One of the errors google-cloud-storage retries (408 Request Timeout among them)."""
        return isinstance(error, self.transient) or getattr(error, "code", None) == 408

    def _retryable(self, error: Exception) -> bool:
        if not self.is_transient(error):
            return False
        now = time.monotonic()
        with self.lock:
            quiet = self.latest is not None and now - self.latest > self.window_s
            if self.started is None or quiet:  # a new outage (errors long apart are not one)
                self.started = now
                print(f"GCS at {endpoint()} is not answering ({reason(error)}); retrying for up"
                      f" to {self.window_s:.0f} s", file=sys.stderr, flush=True)
            self.latest = now
            return now - self.started < self.window_s

    def down_for(self) -> float:
        with self.lock:
            return 0.0 if self.started is None else (self.latest or self.started) - self.started

    def failure(self, error: BaseException, what: str) -> InfrastructureError | None:
        """The one-line error for a transfer that gave up on an outage (None: not one).

        ``what`` says what was being done and how far it got ("nothing was committed under ...").
        """
        from google.api_core import exceptions as gexc

        cause = error.cause if isinstance(error, gexc.RetryError) and error.cause else error
        if not (isinstance(error, gexc.RetryError) or self.is_transient(cause)):
            return None
        waited = max(self.down_for(), 0.0)
        return InfrastructureError(
            f"GCS at {endpoint()} did not answer for {waited:.0f} s ({reason(cause)}); {what};"
            " rerun when it answers")
