"""The process environment `me` runs in: streams, TTY checks, colour, exit codes.

Injectable (as in httpie) so tests can run the CLI with other streams and a
fake TTY without touching the real terminal.
"""

from __future__ import annotations

import enum
import os
import sys
from dataclasses import dataclass, field
from typing import IO


class ExitStatus(enum.IntEnum):
    """Exit codes promised by the contract."""

    SUCCESS = 0
    ERROR = 1  # runtime failure: model failed, disk, ...
    USAGE = 2  # usage or configuration error
    INTERRUPTED = 130  # Ctrl-C


class MeError(Exception):
    """An error the user can act on: printed as one line, no traceback."""

    def __init__(self, message: str, status: ExitStatus = ExitStatus.ERROR):
        super().__init__(message)
        self.message = message
        self.status = status


class UsageError(MeError):
    def __init__(self, message: str):
        super().__init__(message, ExitStatus.USAGE)


@dataclass
class Environment:
    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    environ: dict = field(default_factory=lambda: os.environ)

    @property
    def stdin_isatty(self) -> bool:
        return _isatty(self.stdin)

    @property
    def stdout_isatty(self) -> bool:
        return _isatty(self.stdout)

    @property
    def color(self) -> bool:
        """Rich rendering only on a terminal, and never with NO_COLOR set."""
        return self.stdout_isatty and "NO_COLOR" not in self.environ

    @property
    def stdin_has_data(self) -> bool:
        """True when stdin is a pipe or file (not a terminal, not closed)."""
        if self.stdin is None or self.stdin.closed:
            return False
        return not self.stdin_isatty


def _isatty(stream) -> bool:
    try:
        return bool(stream) and stream.isatty()
    except (ValueError, AttributeError):
        return False
