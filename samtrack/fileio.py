"""Reading what the user gave: every filesystem failure on an input becomes one
:class:`~samtrack.errors.InputError` line (or the ``error`` class a caller names, such as
:class:`~samtrack.errors.WeightsError` for weights) that says what went wrong, e.g.
``clips/a: permission denied``, never a traceback and never a misleading "corrupt".

Decoders (Pillow, decord, OpenCV, YAML, JSON) see a file only after it opened here, so that
their own errors can honestly mean "the content is bad".
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator

from .errors import InputError, SamtrackError, os_problem

if TYPE_CHECKING:
    from PIL import Image


@contextmanager
def os_errors(path: str | Path, error: type[SamtrackError] = InputError, doing: str = "") -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into ``error`` naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise error(f"{doing + ': ' if doing else ''}{os_problem(exc)}", path) from None


def open_input(path: str | Path, error: type[SamtrackError] = InputError) -> BinaryIO:
    """Open a file the user gave for reading (binary)."""
    with os_errors(path, error):
        if Path(path).is_dir():
            raise IsADirectoryError(21, "Is a directory")
        return open(path, "rb")


def check_readable(path: str | Path, error: type[SamtrackError] = InputError) -> None:
    """Fail now, with the right words, when a file cannot be opened (for libraries such as
    decord that take a path and report every failure alike)."""
    open_input(path, error).close()


def read_input_text(path: str | Path, max_bytes: int | None = None, what: str = "file",
                    error: type[SamtrackError] = InputError) -> str:
    """A UTF-8 text file the user gave, refused beyond ``max_bytes`` before it is read."""
    with open_input(path, error) as f, os_errors(path, error):
        if max_bytes is not None:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise error(f"the {what} is {_size(size)}, more than the {_size(max_bytes)} samtrack reads", path)
            data = f.read(max_bytes + 1)  # a file that grows while read (a pipe, /dev/zero) stops here too
            if len(data) > max_bytes:
                raise error(f"the {what} is more than the {_size(max_bytes)} samtrack reads", path)
        else:
            data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error("not UTF-8 text", path) from None


def list_folder(path: str | Path) -> list[Path]:
    """The entries of a folder the user gave."""
    with os_errors(path):
        with os.scandir(path) as entries:
            return [Path(entry.path) for entry in entries]


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


@contextmanager
def open_image(path: str | Path) -> Iterator["Image.Image"]:
    """A Pillow image from a file the user gave. Filesystem failures and images too large to
    be real frames (Pillow's decompression-bomb guard, warning included) are
    :class:`InputError`; decoding errors are left to the caller, who knows what the image is for."""
    import warnings

    from PIL import Image

    with open_input(path) as f, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(f)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(f"the image has more than {Image.MAX_IMAGE_PIXELS} pixels; too large for a frame or mask", path) from None
        with image:
            yield image
