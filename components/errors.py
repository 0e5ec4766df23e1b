"""One exception hierarchy for the whole suite.

Every error a user can see is one line that says what was wrong and how to fix it. Errors are
split by who has to act: the user (bad input, a model that fails verification) or the
infrastructure (a server that does not start, a remote that times out).
"""

from __future__ import annotations

import re


class KfpServeError(Exception):
    """Base class of every error kfp-serve raises on purpose."""

    exit_code = 1


class UserError(KfpServeError):
    """The input is wrong; the message says what to change."""

    exit_code = 2


class VerificationError(UserError):
    """An exported or deployed model disagrees with its reference outputs."""


class InfrastructureError(KfpServeError):
    """Something outside the user's input failed: a process, a server, a remote API."""

    exit_code = 3


_GENERIC_HEADERS = ("The following operation failed in the TorchScript interpreter.",)
_COLOUR_CODES = re.compile(r"\x1b\[[0-9;]*m")


def first_line(err: BaseException) -> str:
    """The telling line of an exception's message, as plain text (terminal colour codes taken
    out): the first, unless that is a generic header (TorchScript puts the real error last);
    the type name when the message is empty."""
    text = _COLOUR_CODES.sub("", str(err))
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[-1] if lines[0] in _GENERIC_HEADERS else lines[0]


def filesystem_error(err: OSError, path: object | None, doing: str) -> KfpServeError:
    """An ``OSError`` met while ``doing`` something with ``path`` (a folder the user chose), as the
    one-line error of whoever must act: a read-only folder or a file where a folder belongs is the
    input's (exit 2), a full disk or anything else the machine's (exit 3)."""
    import errno

    reason = err.strerror or first_line(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f"the device of {path}" if path else "a disk it writes to"
        return InfrastructureError(f"no space left on {where} while {doing}; free space there or"
                                   " choose a folder on another disk")
    if err.errno == errno.EROFS:
        return UserError(f"{path} is not writable ({reason.lower()}) while {doing}; choose a folder"
                         " this user can write to")
    if err.errno in (errno.EACCES, errno.EPERM):
        return UserError(f"{path} is not open to this user ({reason.lower()}) while {doing}; fix"
                         " its permissions or choose a folder this user can write to")
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        from pathlib import Path

        blocking = next((p for p in (Path(str(path)), *Path(str(path)).parents)
                         if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            where = "" if str(blocking) == str(path) else f", so {path} cannot be a folder"
            return UserError(f"{blocking} is a file, not a folder{where} ({doing}); choose a"
                             " folder")
    return InfrastructureError(f"{doing} failed at {path}: {reason}")
