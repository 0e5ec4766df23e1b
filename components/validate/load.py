"""A bounded load phase against a live endpoint: latency percentiles, throughput, errors.

Each concurrency level runs that many clients (one keep-alive HTTP connection, or one gRPC
client, each) for a fixed time, sending golden samples round-robin; loops are bounded in time
and count. HTTP clients are spread over one worker process per core (threads within each), so
the GIL does not cap the rate. Request bodies are encoded once, up front, and responses are only
status-checked (the golden phase already checked the numbers), so the generator spends its time
on the wire, not in Python. Targets (:mod:`kfp_serve.components.validate.targets`) call it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPConnection

import numpy as np

from kfp_serve.components.errors import UserError
from kfp_serve.components.machine import available_cores
from kfp_serve.components.validate.http import RawHttpConnection

MAX_REQUESTS_PER_LEVEL = 200_000


@dataclass(frozen=True)
class LoadLevel:
    """What one concurrency level measured. ``requests`` counts every request the clients sent
    and the model under test answered or failed; ``errors`` every one that failed (a refused or
    lost connection, a non-200 answer, a client that could not reconnect); ``excluded`` the
    answers of other models behind the same endpoint (a canary's neighbours), counted apart;
    ``lost_clients`` clients whose results never came back (their worker died)."""

    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    excluded: int = 0
    lost_clients: int = 0

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0


@dataclass(frozen=True)
class SloGates:
    """Service-level objectives; None skips a gate. Strict by default: one failed request fails
    the verdict (``max_error_rate=0``), and a level that measured nothing always fails it."""

    max_p95_ms: float | None = None
    min_throughput: float | None = None
    max_error_rate: float | None = 0.0

    def violations(self, levels: list[LoadLevel]) -> list[str]:
        problems = []
        for level in levels:
            tag = f"at concurrency {level.concurrency}"
            if level.requests - level.errors <= 0:  # missing data is a failure, never a pass
                problems.append(f"no request succeeded {tag} ({level.requests} sent,"
                                f" {level.errors} failed"
                                + (f", {level.excluded} answered by other models" if level.excluded else "")
                                + ")")
            if level.lost_clients:
                problems.append(f"{level.lost_clients} of {level.concurrency} load clients {tag}"
                                " reported nothing (their worker died)")
            if self.max_p95_ms is not None and level.p95_ms > self.max_p95_ms:
                problems.append(f"p95 latency {level.p95_ms:.2f} ms {tag} exceeds {self.max_p95_ms:g} ms")
            if self.max_error_rate is not None and level.error_rate > self.max_error_rate:
                problems.append(f"error rate {level.error_rate:.1%} {tag} exceeds {self.max_error_rate:.1%}")
        if self.min_throughput is not None and levels:
            best = max(levels, key=lambda lv: lv.throughput)
            if best.throughput < self.min_throughput:
                problems.append(f"best throughput {best.throughput:.1f} req/s (concurrency"
                                f" {best.concurrency}) is below {self.min_throughput:g} req/s")
        return problems


def check_levels(concurrency: list[int], seconds: float) -> None:
    if not concurrency or any(c < 1 or c > 256 for c in concurrency):
        raise UserError(f"concurrency levels {concurrency} must each be between 1 and 256")
    if seconds <= 0:
        raise UserError("load seconds must be > 0")


#: decides whether an answer (its value of the selector's header, its body) came from the model
#: under test; answers of other models are excluded from the measurement
Selector = tuple[str, Callable[[str, bytes], bool]]


def run_requests(make_connection, path: str, requests: list[tuple[bytes, dict[str, str]]],
                 concurrency: list[int], seconds: float,
                 select: Selector | None = None) -> list[LoadLevel]:
    """POST ``requests`` (body, headers) round-robin to ``path`` at each concurrency level for
    ``seconds``. With ``select`` (a header name and a test of its value and the body), answers
    from other models behind the endpoint are counted apart, not measured.

    Over plain HTTP the requests are encoded once, whole, and sent on raw keep-alive sockets
    (http.client spends more time building and parsing headers than a fast server spends
    answering); over HTTPS http.client does the work.
    """
    check_levels(concurrency, seconds)
    header, ours = (select[0].lower(), select[1]) if select else ("", None)
    probe = make_connection()
    if type(probe) is HTTPConnection:
        host, port = probe.host, probe.port
        encoded = [f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
                   + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                   for body, headers in requests]
        encoded = [head.encode() + body for head, (body, _) in zip(encoded, requests)]

        def exchange(conn, i: int) -> bool:
            if ours is None:
                status = conn.exchange(encoded[i % len(encoded)])
                if status != 200:
                    raise RuntimeError(f"HTTP {status}")
                return True
            status, value, body = conn.exchange(encoded[i % len(encoded)], header.encode())
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
            return ours(value, body)

        return [_Level(clients, seconds).run(lambda: RawHttpConnection(host, port), exchange)
                for clients in concurrency]

    def send(conn, i: int) -> bool:
        body, headers = requests[i % len(requests)]
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        return True if ours is None else ours(response.getheader(header) or "", data)

    return [_Level(clients, seconds).run(make_connection, send) for clients in concurrency]


def run_load_grpc(make_client, model_name: str, requests: list[list], outputs: list,
                  concurrency: list[int], seconds: float) -> list[LoadLevel]:
    """The load phase over gRPC (tritonclient, protobuf tensors): ``requests`` (each a list of
    ``InferInput``) round-robin, one client per thread from ``make_client`` (gRPC clients do not
    survive fork)."""
    check_levels(concurrency, seconds)

    def send(client, i: int) -> bool:
        client.infer(model_name, requests[i % len(requests)], outputs=outputs, client_timeout=60)
        return True

    return [_Level(clients, seconds, fork=False).run(make_client, send) for clients in concurrency]


class _Level:
    """The shared state of one concurrency level's client threads."""

    def __init__(self, clients: int, seconds: float, fork: bool = True):
        self.clients = clients
        self.seconds = seconds
        self.fork = fork  # gRPC clients do not survive fork(): they stay in threads
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors = 0
        self.excluded = 0
        self.lost = 0
        self.budget = MAX_REQUESTS_PER_LEVEL
        self.deadline = 0.0

    def _take(self, first: bool = False) -> bool:
        """One more request within the budget and the time; a client's first request goes
        out even past the deadline (a client that started late on a busy machine still
        measures, so a level never reports 0 requests)."""
        with self.lock:
            if self.budget <= 0 or (not first and time.perf_counter() >= self.deadline):
                return False
            self.budget -= 1
            return True

    def _worker(self, offset: int, make_client, send) -> None:
        """Send until the deadline. Every failure counts as one failed request, reconnecting
        included: a client that cannot reach the server keeps counting its failures instead of
        ending quietly (a dead server must not look like an idle one)."""
        client, i = None, offset
        try:
            while self._take(first=i == offset):
                began = time.perf_counter()
                try:
                    if client is None:
                        client = make_client()
                    counted = send(client, i)
                    elapsed = time.perf_counter() - began
                    with self.lock:
                        if counted:
                            self.latencies.append(elapsed)
                        else:  # another model behind the endpoint answered
                            self.excluded += 1
                except Exception:  # counted, not raised: the error rate is the measurement
                    with self.lock:
                        self.errors += 1
                    _close(client)  # a failed exchange may leave the connection unusable
                    client = None
                    time.sleep(0.001)  # a refused connection fails at once: do not spin
                i += 1
        finally:
            _close(client)

    def run_threads(self, make_client, send, first: int = 0) -> None:
        """Run this level's clients as threads of this process until the deadline."""
        self.deadline = time.perf_counter() + self.seconds
        threads = [threading.Thread(target=self._worker, args=(first + k, make_client, send), daemon=True)
                   for k in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=self.seconds + 60)

    def run(self, make_client, send) -> LoadLevel:
        """Run the level: its clients spread over worker processes (one per core, so Python's
        GIL does not cap the request rate), threads within each."""
        started = time.perf_counter()
        processes = min(self.clients, available_cores()) if self.fork else 1
        if processes <= 1:
            self.run_threads(make_client, send)
        else:
            self._run_processes(processes, make_client, send)
        elapsed = time.perf_counter() - started
        lat = np.asarray(self.latencies) * 1000 if self.latencies else np.asarray([float("nan")])
        return LoadLevel(self.clients, len(self.latencies) + self.errors, self.errors, elapsed,
                         float(np.percentile(lat, 50)), float(np.percentile(lat, 95)),
                         float(np.percentile(lat, 99)), self.excluded, self.lost)

    def _run_processes(self, processes: int, make_client, send) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")  # the request closures are inherited
        queue = context.Queue()
        shares = [self.clients // processes + (k < self.clients % processes) for k in range(processes)]
        budget = self.budget // processes

        def child(k: int, clients: int, first: int) -> None:
            level = _Level(clients, self.seconds)
            level.budget = budget
            level.run_threads(make_client, send, first)
            queue.put((k, level.latencies, level.errors, level.excluded))

        workers = [context.Process(target=child, args=(k, n, sum(shares[:k])), daemon=True)
                   for k, n in enumerate(shares)]
        for worker in workers:
            worker.start()
        reported: set[int] = set()
        deadline = time.monotonic() + self.seconds + 120
        while len(reported) < len(workers) and time.monotonic() < deadline:
            try:
                k, latencies, errors, excluded = queue.get(timeout=1.0)
            except Exception:  # queue.Empty: a worker may have died; stop waiting for it
                if all(not w.is_alive() for j, w in enumerate(workers) if j not in reported) \
                        and queue.empty():
                    break
                continue
            reported.add(k)
            self.latencies.extend(latencies)
            self.errors += errors
            self.excluded += excluded
        self.lost = sum(shares[k] for k in range(len(workers)) if k not in reported)
        for worker in workers:
            worker.join(timeout=30)


def _close(client) -> None:
    if client is not None:  # closing a broken connection may fail too; it is gone either way
        with contextlib.suppress(Exception):
            client.close()
