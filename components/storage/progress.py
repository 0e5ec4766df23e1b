"""Upload progress: bytes counted as the uploads read them, one line on a terminal for big ones."""

from __future__ import annotations

import base64
import sys
import threading
import time
from pathlib import Path

import google_crc32c

#: smaller uploads finish before a progress line would help
PROGRESS_MIN_BYTES = 64 * 1024 * 1024


class UploadProgress:
    """Counts bytes read by the uploads; prints a progress line on a terminal for big uploads."""

    def __init__(self, total: int, enabled: bool | None):
        self.total = total
        self.done = 0
        self.lock = threading.Lock()
        self.enabled = (total >= PROGRESS_MIN_BYTES and sys.stderr.isatty()) if enabled is None else enabled
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._report, daemon=True) if self.enabled else None
        if self.thread:
            self.thread.start()

    def wrap(self, path: Path, offset: int = 0, length: int | None = None) -> CountingFile:
        return CountingFile(path, self, offset, length)

    def add(self, count: int) -> None:
        with self.lock:
            self.done += count

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = min(self.done, self.total)
        return (f"uploaded {done / 2**20:,.0f} / {self.total / 2**20:,.0f} MiB"
                f" ({100 * done / max(self.total, 1):.0f}%, {done / 2**20 / elapsed:,.0f} MiB/s)")

    def summary(self) -> str:
        """"140 of 200 MiB had been uploaded"."""
        return (f"{min(self.done, self.total) / 2**20:,.0f} of {self.total / 2**20:,.0f} MiB had"
                " been uploaded")

    def _report(self) -> None:
        while not self.stop.wait(1.0):
            print(f"\r{self._line()}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.thread:
            self.stop.set()
            self.thread.join()
            print(f"\r{self._line()}", file=sys.stderr, flush=True)


class CountingFile:
    """A read-only view of ``length`` bytes of a file from ``offset`` (the whole file by default)
    that reports bytes read past its high-water mark to the progress meter (re-reads after a
    retry's seek are not counted twice)."""

    def __init__(self, path: Path, meter: UploadProgress, offset: int = 0, length: int | None = None):
        self.handle = open(path, "rb")  # noqa: SIM115 (closed by the caller)
        self.meter = meter
        self.name = str(path)
        self.start = offset
        self.length = path.stat().st_size - offset if length is None else length
        self.high = 0
        self.handle.seek(offset)

    def read(self, size: int = -1) -> bytes:
        left = self.length - self.tell()
        data = self.handle.read(left if size is None or size < 0 else min(size, left))
        position = self.tell()
        if position > self.high:
            self.meter.add(position - self.high)
            self.high = position
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.tell(), 2: self.length}[whence]
        self.handle.seek(self.start + min(max(base + offset, 0), self.length))
        return self.tell()

    def tell(self) -> int:
        return self.handle.tell() - self.start

    def crc32c(self) -> str:
        """Base64 CRC32C of this view's bytes (read afresh: works after close)."""
        checksum = google_crc32c.Checksum()
        with open(self.name, "rb") as handle:
            handle.seek(self.start)
            left = self.length
            while left > 0:
                block = handle.read(min(4 * 1024 * 1024, left))
                if not block:
                    break
                checksum.update(block)
                left -= len(block)
        return base64.b64encode(checksum.digest()).decode()

    def close(self) -> None:
        self.handle.close()
