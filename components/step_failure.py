"""How a failed step ends: its own one-line error as the last line of its log, and an exit code
that says who must act (2: the input, 3: the infrastructure, 1: a bug).

Inside a component (KFP's executor sets ``_KFP_RUNTIME=true``) :func:`install` replaces
``sys.excepthook``: the traceback prints as usual, then ``kfp-serve: error: <the message>``,
which is what the Kubeflow UI shows at the end of the step's log. Where
``$KFP_SERVE_STEP_ERRORS`` names a file (``kfp-serve run`` sets it), the failure is also
appended there as one JSON line, so the runner can print the step's own message instead of
"task failed".
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from kfp_serve.components.errors import KfpServeError, filesystem_error, first_line

ERRORS_FILE_ENV = "KFP_SERVE_STEP_ERRORS"
#: errors of the machine's disks that no step raises on purpose: a full disk, a read-only folder
_FILESYSTEM = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}
PREFIX = "kfp-serve: error:"


@dataclass(frozen=True)
class StepFailure:
    """One step's failure: the component function, its one-line message, its exit code."""

    step: str
    message: str
    exit_code: int

    @classmethod
    def of(cls, err: BaseException, step: str = "") -> StepFailure:
        if isinstance(err, OSError) and err.errno in _FILESYSTEM:  # the disk's, not a bug
            err = filesystem_error(err, err.filename2 or err.filename, "writing the step's files")
        if isinstance(err, KfpServeError):
            return cls(step, " ".join(str(err).split()), err.exit_code)
        # not raised on purpose: a bug or an unexpected library error; still one line
        return cls(step, f"{type(err).__name__}: {first_line(err)}", 1)


def step_name(argv: list[str]) -> str:
    """The component function a step command line runs (``--function_to_execute``)."""
    for flag, value in itertools.pairwise(argv):
        if flag == "--function_to_execute":
            return value
    return ""


def _hook(kind: type[BaseException], err: BaseException, traceback) -> None:
    sys.__excepthook__(kind, err, traceback)
    if isinstance(err, KeyboardInterrupt):
        return
    failure = StepFailure.of(err, step_name(sys.argv))
    print(f"{PREFIX} {failure.message}", file=sys.stderr)
    record(failure)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(failure.exit_code)  # the interpreter would exit 1 whatever the error


def record(failure: StepFailure) -> None:
    """Append ``failure`` to ``$KFP_SERVE_STEP_ERRORS`` when it names a file (else nothing)."""
    path = os.environ.get(ERRORS_FILE_ENV)
    if path:
        try:
            with open(path, "a") as handle:
                handle.write(json.dumps(asdict(failure)) + "\n")
        except OSError as write_err:
            print(f"kfp-serve: could not record the failure in {path}: {write_err}", file=sys.stderr)


def install() -> None:
    """Make an uncaught error end the process with its one line last and its exit code."""
    sys.excepthook = _hook


def read_failures(path: str | Path) -> list[StepFailure]:
    """The failures steps recorded in ``path`` (none when it does not exist)."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    failures = []
    for line in lines:
        try:
            failures.append(StepFailure(**json.loads(line)))
        except (ValueError, TypeError):
            continue  # a line cut short by a killed step
    return failures
