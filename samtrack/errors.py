"""Errors that reach the user as one line (the CLI turns them into exit code 2)."""
from __future__ import annotations

from pathlib import Path


class SamtrackError(Exception):
    """A problem the user can fix: bad input, missing weights, bad config.

    The CLI prints ``str(error)`` on one line and exits with ``exit_code``; it never shows a
    traceback for these.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class InputError(SamtrackError):
    """A file the user gave us is missing, unreadable or invalid."""


class ConfigError(SamtrackError):
    """A config file or a ``--set`` override is invalid."""


class WeightsError(SamtrackError):
    """Model weights are missing, corrupt, or cannot be fetched."""

    exit_code = 3
