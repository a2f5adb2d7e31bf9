"""Errors that reach the user as one line (the CLI turns them into exit code 2), and the helpers
that keep them one line: :func:`show` for any value the user gave, :func:`os_problem` for what
the operating system said."""
from __future__ import annotations

import errno
import reprlib
from pathlib import Path
from typing import Any

# An echoed value longer than this is cut: a message quotes the user, it does not replay the input.
SHOW_LIMIT = 80
# A whole message longer than this is cut too (a message built from many shown values).
MESSAGE_LIMIT = 2000


class SamtrackError(Exception):
    """A problem the user can fix: bad input, missing weights, bad config.

    The CLI prints ``str(error)`` on one line and exits with ``exit_code``; it never shows a
    traceback for these. The message is made one line here, whatever went into it: control
    characters (newlines included) are escaped, so that no user string can split it or forge a
    line of its own, and it is capped at ``MESSAGE_LIMIT`` characters.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        text = f"{show_path(self.path)}: {message}" if self.path is not None else message
        super().__init__(one_line(text, MESSAGE_LIMIT))


class InputError(SamtrackError):
    """A file the user gave us is missing, unreadable or invalid."""


class ConfigError(SamtrackError):
    """A config file or a ``--set`` override is invalid."""


class WeightsError(SamtrackError):
    """Model weights are missing, corrupt, or cannot be fetched."""

    exit_code = 3


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` with control characters escaped (``\\n`` for a newline) and cut to ``limit``."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show(value: Any, limit: int = SHOW_LIMIT) -> str:
    """A user-given value as it goes into a message: ``repr`` style (quotes and escapes for
    strings, so that a key with a newline cannot split the line), cut to ``limit`` characters."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]  # cut before repr: repr of a huge string is as huge
    text = repr(value) if isinstance(value, str) else _short_repr(value, limit)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_path(path: str | Path) -> str:
    """A path as it goes into a message: as is when printable, else escaped, and cut."""
    return one_line(str(path), 300)


def os_problem(exc: OSError) -> str:
    """What an ``OSError`` means to a user, in a few words (``permission denied``, ...)."""
    words = _OS_WORDS.get(exc.errno or -1)
    if words:
        return words
    return (exc.strerror or type(exc).__name__).lower()


_OS_WORDS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "no such file or folder",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.ELOOP: "too many levels of symbolic links",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EIO: "input/output error (a failing disk or a network drive that went away)",
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "the file system is read-only",
    errno.EMFILE: "too many open files",
}


def _escape(char: str) -> str:
    return repr(char)[1:-1]


def _short_repr(value: Any, limit: int) -> str:
    # Containers are cut while rendering: repr() of a YAML alias bomb is tens of megabytes.
    if isinstance(value, (list, tuple, dict, set)):
        r = reprlib.Repr()
        r.maxlist = r.maxtuple = r.maxdict = r.maxset = 6
        r.maxlevel = 3
        r.maxstring = r.maxother = limit
        return one_line(r.repr(value), limit)
    return one_line(repr(value), limit)
