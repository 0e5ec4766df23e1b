"""Ctrl-C and SIGTERM on ``kfp-serve run``: stop everything the run started, then exit 130/143.

kfp.local runs each step as a child process and waits for it inside ``with Popen``; the local
servers a deploy step starts run in sessions of their own (they outlive the step, and Ctrl-C on
the terminal does not reach them), and the pipeline's exit handler that would stop them never
runs once the orchestrator is interrupted. So the CLI does what the exit handler would have done:
the signal handler signals the step processes first (so that ``Popen.__exit__`` has nothing to
wait for) and raises :class:`Interrupted`; the runner then stops the servers its steps recorded,
and the CLI prints one line and exits ``128 + signal``, as a shell does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path


class Interrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT (Ctrl-C) or SIGTERM."""

    def __init__(self, signum: int, stopped: list[str] | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.stopped = list(stopped or [])  # what the clean-up stopped, in words

    def __str__(self) -> str:
        name = "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name
        done = ", ".join(self.stopped) if self.stopped else "nothing was running"
        return f"interrupted ({name}); stopped: {done}"

    @property
    def exit_code(self) -> int:
        """130 for Ctrl-C, 143 for SIGTERM: the codes a shell reports for them."""
        return 128 + self.signum


#: in the command line of every kfp.local step process (``python3 -m kfp.dsl.executor_main``)
STEP_MARK = b"kfp.dsl.executor_main"


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within: SIGINT and SIGTERM signal the running steps and raise Interrupted.

    A second signal while the first is being handled is ignored, so the clean-up (bounded to
    seconds) is not cut short half-way.
    """
    def handler(signum: int, _frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        steps = signal_steps(signal.SIGTERM)[0]
        raise Interrupted(signum, [counted(steps, "running step")] if steps else [])

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, action in previous.items():
            signal.signal(sig, action)


def _process_table() -> dict[int, list[int]]:
    """Parent PID -> the PIDs of its living (not zombie) children, read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:  # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    return parents


def step_processes() -> tuple[int, list[int]]:
    """How many kfp.local steps this process runs now, and their processes with everything below
    them (children first), from one read of /proc. The GCS emulator and podman's service, also
    our children, are not among them."""
    table = _process_table()
    steps = [pid for pid in table.get(os.getpid(), []) if _is_step(pid)]
    found, queue = [], list(steps)
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(table.get(pid, []))
    return len(steps), found


def _is_step(pid: int) -> bool:
    try:
        return STEP_MARK in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def signal_steps(sig: int) -> tuple[int, list[int]]:
    """Send ``sig`` to every step process: how many steps there were, and the PIDs signalled."""
    steps, processes = step_processes()
    signalled = []
    for pid in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            signalled.append(pid)
    return steps, signalled


def counted(number: int, noun: str) -> str:
    """"1 running step", "2 running steps"."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def stop_steps(grace_s: float = 10.0) -> int:
    """SIGTERM the step processes, SIGKILL what is left after ``grace_s`` and collect their
    exit status. Returns how many steps were running when asked to stop."""
    steps, signalled = signal_steps(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while step_processes()[1] and time.monotonic() < deadline:
        _reap(signalled)
        time.sleep(0.1)
    signalled += signal_steps(signal.SIGKILL)[1]
    _reap(signalled)
    return steps


def _reap(pids: list[int]) -> None:
    """Collect the exit status of those of ``pids`` that are our children and have exited."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
