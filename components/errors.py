"""One exception hierarchy for the whole suite.

Every error a user can see is one line that says what was wrong and how to fix it. Errors are
split by who has to act: the user (bad input, a model that fails verification) or the
infrastructure (a server that does not start, a remote that times out).
"""

from __future__ import annotations


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


def first_line(err: BaseException) -> str:
    """The telling line of an exception's message: the first, unless that is a generic header
    (TorchScript puts the real error last); the type name when the message is empty."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[-1] if lines[0] in _GENERIC_HEADERS else lines[0]
