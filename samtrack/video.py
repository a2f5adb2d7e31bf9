"""Frame sources: a video file or a folder of images, read one RGB frame at a time by index.

Frames are decoded on demand and never all held in memory, so arbitrarily long videos can be
processed. Every problem with the input (missing, not a video, corrupt, empty, a frame that
cannot be decoded) surfaces as a one-line :class:`~samtrack.errors.InputError`.
"""
from __future__ import annotations

import math
import os
import re
import stat
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av  # noqa: F401  (before decord: see below)
import cv2

# decord loads its own FFmpeg and libvpx 6 with RTLD_GLOBAL; PyAV's libavcodec, loaded after it,
# would bind to that libvpx and fail to open the VP9 encoder (the cut-out WebM export). Loading
# PyAV first binds it to its own libvpx (tests/test_export.py checks this in a fresh process).
import decord
import numpy as np

from .errors import InputError
from .fileio import check_readable, list_folder, open_image, os_errors

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# A folder of frames carries no frame rate; DAVIS, the usual source of such folders, is 24 fps.
# Also used for the rare video file whose container reports no usable rate.
DEFAULT_FPS = 24.0


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a frame source before decoding it.

    Attributes:
        path: the video file or the frame folder.
        n_frames: number of frames (as the container reports it for video files).
        fps: frames per second.
        height, width: frame size in pixels.
    """

    path: Path
    n_frames: int
    fps: float
    height: int
    width: int


class VideoReader(Protocol):
    """Random access to the frames of one video; frames are decoded when read."""

    info: VideoInfo

    def __len__(self) -> int:
        """Number of frames, ``info.n_frames``."""
        ...

    def read(self, index: int) -> np.ndarray:
        """Decode frame ``index`` (``0 <= index < len(self)``) as RGB uint8 ``[H, W, 3]``.

        Raises ``IndexError`` for an index out of range and ``InputError`` for a frame that
        cannot be decoded.
        """
        ...

    def close(self) -> None:
        """Release the file handles and decoder; the reader is unusable afterwards."""
        ...


def open_video(path: str | Path) -> VideoReader:
    """Open a video file or a folder of frames.

    A folder is read as its ``.jpg``/``.jpeg``/``.png`` files in natural order (``2.jpg`` before
    ``10.jpg``). Any other path is tried as a video file whatever its extension: first with
    decord, then, when decord cannot open it, with OpenCV.

    Args:
        path: a video file (mp4, mov, avi, webm, mkv, ...) or a folder of frames.

    Returns:
        A :class:`VideoReader` with at least one frame.

    Raises:
        InputError: the path is missing, is not a readable video, or holds no frames.
    """
    path = Path(path)
    with os_errors(path):
        st = path.stat()
    if stat.S_ISDIR(st.st_mode):
        return FrameFolderReader(path)
    if not stat.S_ISREG(st.st_mode):
        raise InputError("not a video file or a folder of frames", path)
    if st.st_size == 0:
        raise InputError("the file is empty", path)
    # decord and OpenCV report an unreadable file as they report a corrupt one.
    check_readable(path)
    try:
        return DecordVideoReader(path)
    except _CannotOpen:
        pass
    try:
        return OpenCVVideoReader(path)
    except _CannotOpen:
        raise InputError("cannot be opened as a video (not a video file, or corrupt or truncated)", path) from None


def resize_longest_side(frame: np.ndarray, longest: int | None) -> np.ndarray:
    """Shrink ``frame`` so that its longest side is at most ``longest`` pixels.

    Args:
        frame: ``[H, W]`` or ``[H, W, C]`` image (any dtype OpenCV resizes).
        longest: the largest allowed side; ``None`` means no limit.

    Returns:
        The resized image (aspect ratio kept, area interpolation), or ``frame`` itself when
        ``longest`` is ``None`` or the frame is already small enough.
    """
    height, width = frame.shape[:2]
    if longest is None or max(height, width) <= longest:
        return frame
    scale = longest / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def select_frames(
    n_frames: int,
    start: int = 0,
    stride: int = 1,
    max_frames: int | None = None,
    path: str | Path | None = None,
) -> list[int]:
    """Indices of the frames to process: every ``stride``-th from ``start``, at most ``max_frames``.

    Args:
        n_frames: length of the video.
        start: first frame index (``>= 0``).
        stride: step between frames (``>= 1``).
        max_frames: cap on the number of indices; ``None`` means no cap.
        path: the video, named in the error.

    Raises:
        InputError: ``start`` is past the end of the video.
        ValueError: ``start``, ``stride`` or ``max_frames`` out of range (a caller bug; the
            config is validated before it gets here).
    """
    if start < 0 or stride < 1 or (max_frames is not None and max_frames < 1):
        raise ValueError(f"invalid frame selection: start={start}, stride={stride}, max_frames={max_frames}")
    if start >= n_frames:
        raise InputError(f"start frame {start} is past the end of the video ({n_frames} frames)", path)
    indices = range(start, n_frames, stride)
    return list(indices if max_frames is None else indices[:max_frames])


class _CannotOpen(Exception):
    """A backend could not open the file; open_video tries the next one."""


class DecordVideoReader:
    """A video file decoded by decord on the CPU."""

    def __init__(self, path: Path) -> None:
        # decord's private FFmpeg prints per-packet complaints about damaged streams while
        # reading; those become InputErrors here, so the noise only hides them.
        decord.logging.set_level(decord.logging.QUIET)
        try:
            with _native_stderr_silenced():
                self._video = decord.VideoReader(str(path), ctx=decord.cpu(0))
                # decord has no size query; decoding frame 0 also proves the stream decodes.
                first = self._video[0].asnumpy()
        except Exception as exc:  # decord raises RuntimeError, DECORDError or AssertionError
            raise _CannotOpen from exc
        fps = self._video.get_avg_fps()
        self.info = VideoInfo(path, len(self._video), _usable_fps(fps), first.shape[0], first.shape[1])

    def __len__(self) -> int:
        return self.info.n_frames

    def read(self, index: int) -> np.ndarray:
        _check_index(index, self.info.n_frames)
        # decord's indexing decodes forward without seeking when the frame is the next one or
        # ahead in the same GOP, so sequential reads stream (as fast as its next()).
        try:
            return self._video[index].asnumpy()
        except Exception as exc:
            raise InputError(f"cannot decode frame {index}", self.info.path) from exc

    def close(self) -> None:
        # decord frees its decoder when the reader object is collected; it has no close().
        self._video = None


class OpenCVVideoReader:
    """A video file decoded by OpenCV: the fallback for what decord cannot open.

    Frame counts come from the container, as with decord; a frame past the real end of a
    damaged file raises ``InputError`` when read. A stream without an index (a raw H.264
    file, say) cannot seek: its frames are counted when it is opened, and a jump is served by
    decoding forward, from the start again when jumping back.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._capture = self._open(path)
        n_frames = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        # Without an index FFmpeg reports no usable count (0 or negative).
        self._seekable = n_frames > 0
        if not self._seekable:
            n_frames = 0
            while self._capture.grab():
                n_frames += 1
            self._capture.release()
            if n_frames == 0:
                raise InputError("the video has no frames", path)
            self._capture = self._open(path)
        self._next = 0  # index of the frame the next capture.read() returns; -1 = unknown
        with _native_stderr_silenced():
            first = self._decode_next()
        if first is None:
            self._capture.release()
            raise InputError("cannot decode the first frame", path)
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.info = VideoInfo(path, n_frames, _usable_fps(fps), first.shape[0], first.shape[1])

    def __len__(self) -> int:
        return self.info.n_frames

    def read(self, index: int) -> np.ndarray:
        _check_index(index, self.info.n_frames)
        # A jump costs a re-decode from a keyframe, so sequential reads must not jump.
        if index != self._next and not self._jump(index):
            self._next = -1
            raise InputError(f"cannot decode frame {index}", self.info.path)
        frame = self._decode_next()
        if frame is None:
            raise InputError(f"cannot decode frame {index}", self.info.path)
        return frame

    def close(self) -> None:
        self._capture.release()

    def _jump(self, index: int) -> bool:
        """Position the capture so that the next read returns frame ``index``."""
        if self._seekable:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            # Past the real end of a truncated file FFmpeg stops at the last frame it can
            # decode; the position it then reports gives it away.
            self._next = index
            return int(self._capture.get(cv2.CAP_PROP_POS_FRAMES)) == index
        if not 0 <= self._next <= index:
            self._capture.release()
            self._capture = self._open(self._path)
            self._next = 0
        while self._next < index:
            if not self._capture.grab():
                return False
            self._next += 1
        return True

    def _decode_next(self) -> np.ndarray | None:
        ok, frame = self._capture.read()
        if not ok:
            self._next = -1
            return None
        self._next += 1
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    @staticmethod
    def _open(path: Path) -> cv2.VideoCapture:
        with _native_stderr_silenced():
            capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise _CannotOpen
        return capture


class FrameFolderReader:
    """A folder of ``.jpg``/``.jpeg``/``.png`` frames, in natural filename order.

    Every frame must have the size of the first; this is checked as each frame is read, so
    opening a folder of thousands of frames stays instant.
    """

    def __init__(self, path: Path) -> None:
        # Names starting with "." are hidden files, such as macOS "._0001.jpg" metadata.
        images = (p for p in list_folder(path) if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        with os_errors(path):
            self.files = sorted((p for p in images if p.is_file()), key=lambda p: natural_key(p.name))
        if not self.files:
            raise InputError(f"the folder holds no images ({', '.join(IMAGE_SUFFIXES)})", path)
        try:
            with open_image(self.files[0]) as image:
                width, height = image.size
        except (OSError, ValueError) as exc:
            raise InputError("cannot read image (corrupt or not an image)", self.files[0]) from exc
        self.info = VideoInfo(path, len(self.files), DEFAULT_FPS, height, width)

    def __len__(self) -> int:
        return self.info.n_frames

    def read(self, index: int) -> np.ndarray:
        _check_index(index, self.info.n_frames)
        file = self.files[index]
        try:
            with open_image(file) as image:
                frame = np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
            raise InputError("cannot read image (corrupt or not an image)", file) from exc
        if frame.shape[:2] != (self.info.height, self.info.width):
            raise InputError(
                f"frame is {frame.shape[1]}x{frame.shape[0]}, but the first frame is "
                f"{self.info.width}x{self.info.height}; all frames must have the same size",
                file,
            )
        return frame

    def close(self) -> None:
        # Each read opens and closes its own file; nothing is held between reads.
        pass


class RecentFrames:
    """A :class:`VideoReader` over another one that keeps the last ``size`` frames it decoded.

    ``samtrack run`` reads each frame twice, once in the pipeline (a tracking window at a time)
    and once to draw the overlay as its result comes out; decoding a 480p frame again costs
    about as much as writing its mask, and a video file may have to seek back for it. Frames
    come back read-only, since the same array goes to every caller.
    """

    def __init__(self, reader: VideoReader, size: int = 2) -> None:
        self.reader = reader
        self.info = reader.info
        self.size = size
        self._recent: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.reader)

    def read(self, index: int) -> np.ndarray:
        frame = self._recent.pop(index, None)
        if frame is None:
            frame = self.reader.read(index)
            frame.flags.writeable = False
        self._recent[index] = frame  # re-inserted: the dict's order is the reading order
        while len(self._recent) > self.size:
            del self._recent[next(iter(self._recent))]
        return frame

    def close(self) -> None:
        self._recent.clear()
        self.reader.close()


class ReadAhead:
    """A :class:`VideoReader` over another one that decodes the next frame on a thread of its own
    while the caller works on the current one.

    The next frame is guessed from the last two reads, as an operating system reads ahead in a
    file: the same step again (forward, backward, a stride). A wrong guess costs one decode on a
    core that was idle, never a wrong frame. Every read of the wrapped reader runs on that one
    thread, so readers that must not be used from two threads at once (PyAV, decord) are safe.
    A frame that cannot be decoded fails when it is asked for, not when it was guessed.
    """

    def __init__(self, reader: VideoReader) -> None:
        self.reader = reader
        self.info = reader.info
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="samtrack-reader")
        self._guess: tuple[int, Future] | None = None
        self._last: int | None = None

    def __len__(self) -> int:
        return len(self.reader)

    def read(self, index: int) -> np.ndarray:
        _check_index(index, len(self.reader))
        guessed = self._guess
        self._guess = None
        if guessed is not None and guessed[0] == index:
            future = guessed[1]
        else:
            if guessed is not None:
                guessed[1].cancel()  # not started yet: dropped; running: its frame is discarded
            future = self._thread.submit(self.reader.read, index)
        frame = future.result()
        step = index - self._last if self._last is not None and self._last != index else 1
        self._last = index
        after = index + step
        if 0 <= after < len(self.reader):
            self._guess = (after, self._thread.submit(self.reader.read, after))
        return frame

    def close(self) -> None:
        if self._guess is not None:
            self._guess[1].cancel()
            self._guess = None
        self._thread.shutdown(wait=True)  # the reader may be mid-decode on that thread
        self.reader.close()


def natural_key(name: str) -> list[int | str]:
    # re.split with a capture group alternates text and digit runs, so keys always compare
    # str with str and int with int.
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _check_index(index: int, n_frames: int) -> None:
    if not 0 <= index < n_frames:
        raise IndexError(f"frame index {index} out of range for a video of {n_frames} frames")


def _usable_fps(fps: float) -> float:
    return fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration of the block.

    decord and OpenCV's bundled FFmpeg log failed opens ("moov atom not found", decord's own
    "ERROR opening: ...") straight to fd 2 from C, beyond the reach of Python's logging; the
    failure reaches the user as an InputError instead. Only short calls are wrapped, because
    for that time other threads' stderr is silenced too.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all (closed stdio): nothing to silence
        saved = None
    if saved is None:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
