"""The one exception type that reaches users as a one-line message."""

from __future__ import annotations


class MedsegError(Exception):
    """A user-facing error: the message names the file or field and the fix.

    The CLI prints ``error: <message>`` on one line, without a traceback, and exits 2.
    Library callers can catch it like any other exception.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
