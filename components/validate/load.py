"""A bounded load phase against a live endpoint: latency percentiles, throughput, errors.

Each concurrency level runs that many clients (one keep-alive HTTP connection, or one gRPC
client, each) for a fixed time, sending golden samples round-robin; loops are bounded in time
and count. HTTP clients are spread over one worker process per core (threads within each), so
the GIL does not cap the rate. Request bodies are encoded once, up front, and responses are only
status-checked (the golden phase already checked the numbers), so the generator spends its time
on the wire, not in Python. Targets (:mod:`kfp_serve.components.validate.targets`) call it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.client import HTTPConnection

import numpy as np

from kfp_serve.components.errors import UserError

MAX_REQUESTS_PER_LEVEL = 200_000


@dataclass(frozen=True)
class LoadLevel:
    """What one concurrency level measured."""

    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0


@dataclass(frozen=True)
class SloGates:
    """Service-level objectives; None skips a gate."""

    max_p95_ms: float | None = None
    min_throughput: float | None = None
    max_error_rate: float | None = None

    def violations(self, levels: list[LoadLevel]) -> list[str]:
        problems = []
        for level in levels:
            tag = f"at concurrency {level.concurrency}"
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


def run_requests(make_connection, path: str, requests: list[tuple[bytes, dict[str, str]]],
                 concurrency: list[int], seconds: float) -> list[LoadLevel]:
    """POST ``requests`` (body, headers) round-robin to ``path`` at each concurrency level for
    ``seconds``.

    Over plain HTTP the requests are encoded once, whole, and sent on raw keep-alive sockets
    (http.client spends more time building and parsing headers than a fast server spends
    answering); over HTTPS http.client does the work.
    """
    check_levels(concurrency, seconds)
    probe = make_connection()
    if type(probe) is HTTPConnection:
        host, port = probe.host, probe.port
        encoded = [f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
                   + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                   for body, headers in requests]
        encoded = [head.encode() + body for head, (body, _) in zip(encoded, requests)]

        def exchange(conn, i: int) -> None:
            status = conn.exchange(encoded[i % len(encoded)])
            if status != 200:
                raise RuntimeError(f"HTTP {status}")

        return [_Level(clients, seconds).run(lambda: _RawHttp(host, port), exchange)
                for clients in concurrency]

    def send(conn, i: int) -> None:
        body, headers = requests[i % len(requests)]
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")

    return [_Level(clients, seconds).run(make_connection, send) for clients in concurrency]


class _RawHttp:
    """One keep-alive HTTP/1.1 connection: sends pre-encoded requests, reads each response's
    status line, headers and body (Content-Length or chunked) and keeps only the status."""

    def __init__(self, host: str, port: int, timeout: float = 60.0):
        self.address, self.timeout = (host, port), timeout
        self._connect()

    def _connect(self) -> None:
        import socket

        self.sock = socket.create_connection(self.address, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.open = True

    def exchange(self, request: bytes) -> int:
        if not self.open:  # the server ended the last exchange by closing (HTTP/1.0 servers)
            self.close()
            self._connect()
        self.sock.sendall(request)
        status_line = self.file.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split(None, 2)[1])
        length, chunked, close = 0, False, status_line.startswith(b"HTTP/1.0")
        while True:
            line = self.file.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower() or (close and b"keep-alive" not in value.lower())
        if chunked:
            while True:
                size = int(self.file.readline().split(b";")[0], 16)
                self.file.read(size + 2)
                if size == 0:
                    break
        elif length:
            self.file.read(length)
        elif close:
            self.file.read()  # the body runs to the end of the connection
        self.open = not close
        return status

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def run_load_grpc(address: str, model_name: str, requests: list[list], outputs: list,
                  concurrency: list[int], seconds: float) -> list[LoadLevel]:
    """The load phase over gRPC (tritonclient, protobuf tensors): ``requests`` (each a list of
    ``InferInput``) round-robin, one client per thread (gRPC clients do not survive fork)."""
    import tritonclient.grpc as grpcclient

    check_levels(concurrency, seconds)

    def send(client, i: int) -> None:
        client.infer(model_name, requests[i % len(requests)], outputs=outputs, client_timeout=60)

    return [_Level(clients, seconds, fork=False).run(
        lambda: grpcclient.InferenceServerClient(address), send) for clients in concurrency]


class _Level:
    """The shared state of one concurrency level's client threads."""

    def __init__(self, clients: int, seconds: float, fork: bool = True):
        self.clients = clients
        self.seconds = seconds
        self.fork = fork  # gRPC clients do not survive fork(): they stay in threads
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors = 0
        self.budget = MAX_REQUESTS_PER_LEVEL
        self.deadline = 0.0

    def _take(self) -> bool:
        with self.lock:
            if self.budget <= 0 or time.perf_counter() >= self.deadline:
                return False
            self.budget -= 1
            return True

    def _worker(self, offset: int, make_client, send) -> None:
        client = make_client()
        i = offset
        try:
            while self._take():
                began = time.perf_counter()
                try:
                    send(client, i)
                    elapsed = time.perf_counter() - began
                    with self.lock:
                        self.latencies.append(elapsed)
                except Exception:  # counted, not raised: the error rate is the measurement
                    with self.lock:
                        self.errors += 1
                    client.close()  # a failed exchange may leave the connection unusable
                    client = make_client()
                i += 1
        finally:
            client.close()

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
        processes = min(self.clients, _cores()) if self.fork else 1
        if processes <= 1:
            self.run_threads(make_client, send)
        else:
            self._run_processes(processes, make_client, send)
        elapsed = time.perf_counter() - started
        lat = np.asarray(self.latencies) * 1000 if self.latencies else np.asarray([float("nan")])
        return LoadLevel(self.clients, len(self.latencies) + self.errors, self.errors, elapsed,
                         float(np.percentile(lat, 50)), float(np.percentile(lat, 95)),
                         float(np.percentile(lat, 99)))

    def _run_processes(self, processes: int, make_client, send) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")  # the request closures are inherited
        queue = context.Queue()
        shares = [self.clients // processes + (k < self.clients % processes) for k in range(processes)]
        budget = self.budget // processes

        def child(clients: int, first: int) -> None:
            level = _Level(clients, self.seconds)
            level.budget = budget
            level.run_threads(make_client, send, first)
            queue.put((level.latencies, level.errors))

        workers = [context.Process(target=child, args=(n, sum(shares[:k])), daemon=True)
                   for k, n in enumerate(shares)]
        for worker in workers:
            worker.start()
        for _ in workers:
            latencies, errors = queue.get(timeout=self.seconds + 120)
            self.latencies.extend(latencies)
            self.errors += errors
        for worker in workers:
            worker.join(timeout=30)


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def markdown_table(levels: list[LoadLevel], server: list | None = None) -> str:
    """One row per level; with the server's view per level (ServerStats), its queue and compute
    time and the batch size it formed."""
    extra = server and len(server) == len(levels)
    head = "| concurrency | requests | errors | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) |"
    rule = "|---|---|---|---|---|---|---|"
    if extra:
        head += " server queue (ms) | server compute (ms) | batch formed |"
        rule += "---|---|---|"
    lines = [head, rule]
    for k, lv in enumerate(levels):
        row = (f"| {lv.concurrency} | {lv.requests} | {lv.errors} | {lv.throughput:,.1f} |"
               f" {lv.p50_ms:.2f} | {lv.p95_ms:.2f} | {lv.p99_ms:.2f} |")
        if extra:
            stats = server[k]
            batch = f"{stats.mean_batch:.2f}" if stats.mean_batch is not None else "n/a"
            compute = f"{stats.compute_ms:.3f}" if stats.server == "triton" else "n/a"
            row += f" {stats.queue_ms:.3f} | {compute} | {batch} |"
        lines.append(row)
    return "\n".join(lines)


def latency_svg(levels: list[LoadLevel], width: int = 560, height: int = 260) -> str:
    """A grouped bar chart of p50/p95/p99 per concurrency level (inline SVG, no dependencies)."""
    top = max([lv.p99_ms for lv in levels if np.isfinite(lv.p99_ms)] or [1.0]) * 1.15
    left, bottom, plot_h = 60, height - 40, height - 70
    group = (width - left - 20) / max(len(levels), 1)
    bar = group / 4
    colors = {"p50": "#4c78a8", "p95": "#f58518", "p99": "#e45756"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
             ' role="img" aria-label="latency percentiles per concurrency">',
             f'<line x1="{left}" y1="{bottom}" x2="{width - 10}" y2="{bottom}" stroke="#333"/>',
             f'<line x1="{left}" y1="{bottom}" x2="{left}" y2="20" stroke="#333"/>',
             '<text x="10" y="30" font-size="12">ms</text>',
             f'<text x="{left - 8}" y="24" font-size="11" text-anchor="end">{top:.1f}</text>']
    for g, level in enumerate(levels):
        x0 = left + g * group + bar / 2
        for k, (name, value) in enumerate((("p50", level.p50_ms), ("p95", level.p95_ms),
                                           ("p99", level.p99_ms))):
            h = 0 if not np.isfinite(value) else plot_h * value / top
            parts.append(f'<rect class="bar" x="{x0 + k * bar:.1f}" y="{bottom - h:.1f}"'
                         f' width="{bar * 0.9:.1f}" height="{h:.1f}" fill="{colors[name]}">'
                         f'<title>{name} {value:.2f} ms</title></rect>')
        parts.append(f'<text x="{x0 + 1.5 * bar:.1f}" y="{bottom + 16}" font-size="12"'
                     f' text-anchor="middle">c={level.concurrency}</text>')
    for k, (name, color) in enumerate(colors.items()):
        parts.append(f'<rect x="{width - 180 + k * 55}" y="8" width="10" height="10" fill="{color}"/>'
                     f'<text x="{width - 166 + k * 55}" y="17" font-size="11">{name}</text>')
    parts.append("</svg>")
    return "".join(parts)
