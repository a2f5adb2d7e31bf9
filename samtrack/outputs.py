"""Result files: indexed label PNGs, tracks.json, and the folder that holds them.

Every file is written to a temporary name and renamed into place, and a whole results folder is
built aside and swapped in at the end, so that an interrupted run never leaves a half-written
file or a mix of old and new results behind. Renames are not fsync'ed: this protects against
the process failing, not against power loss, which is enough for results that can be recomputed.

tracks.json (version 1) holds the query points of every object on every processed frame, in
pixels of the original frames::

    {
      "version": 1,
      "video": {"path": "bear.mp4", "width": 854, "height": 480, "fps": 24.0, "n_frames": 82},
      "frames": [0, 1, 2],
      "objects": [
        {"id": 1, "name": "bear",
         "frames": [
           {"frame": 0, "score": 0.953, "points": [[412.0, 230.5], [101.25, 50.0]],
            "visible": [true, true], "labels": [1, 0]}
         ]}
      ]
    }

``frames`` lists the processed frames (input-video indices, ascending). Each object lists the
frames on which it had points; ``points[k]`` is (x, y) rounded to 0.01 px, ``visible[k]`` says
whether the tracker still follows it (a lost point keeps its last position), ``labels[k]`` is 1
for a positive and 0 for a negative point, ``score`` is the segmenter's predicted IoU for the
object's mask on that frame (null when no mask was decoded). Points are re-sampled from the mask
at re-initialisation and on prompted frames, so ``points[k]`` on two frames is the same physical
point only between two re-samplings.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError, os_problem, show
from .fileio import open_image
from .palette import davis_palette

if TYPE_CHECKING:
    from .pipeline import FrameResult
    from .video import VideoInfo

TRACKS_VERSION = 1


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a file for writing that appears at ``path`` only once the block succeeds.

    The data goes to a hidden temporary file next to ``path`` (same filesystem, so the final
    ``os.replace`` is atomic); an exception removes it and leaves any existing ``path`` as it
    was. ``mode`` is ``"wb"`` (binary) or ``"w"`` (UTF-8 text).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the permissions, as a plain open() would
    # (mkstemp would leave the result readable by its owner only).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, encoding="utf-8" if mode == "w" else None) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_label_png(path: str | Path, label_map: np.ndarray) -> None:
    """Write a label map as an indexed PNG with the DAVIS palette (the DAVIS annotation format).

    Args:
        path: the file to write (atomically).
        label_map: uint8 ``[H, W]``; each value is stored as the palette index (0 background,
            k object k), so it reads back exactly whatever the palette shows.
    """
    if not isinstance(label_map, np.ndarray) or label_map.dtype != np.uint8 or label_map.ndim != 2:
        raise ValueError(f"label_map must be a uint8 [H, W] array, got {getattr(label_map, 'dtype', type(label_map))} "
                         f"{getattr(label_map, 'shape', '')}")
    image = Image.fromarray(np.ascontiguousarray(label_map))
    image.putpalette(davis_palette().tobytes())  # turns the L image into P with the same indices
    with atomic_write(path) as f:
        image.save(f, format="PNG")


def read_label_png(path: str | Path, grey_values_are_ids: bool = False) -> np.ndarray:
    """Read a PNG of object ids: uint8 ``[H, W]``.

    An indexed (mode P) PNG gives its palette indices as they are, whatever colours the palette
    holds (DAVIS: 0 background, k object k, 255 void). Grey PNGs are binary masks: modes 1 and
    L, LA (alpha ignored) and RGB/RGBA whose three channels are equal give 1 where the grey value
    is nonzero, else 0 -- unless ``grey_values_are_ids``, when the grey values are the ids, as
    the official DAVIS evaluator reads results and annotations. Raises :class:`InputError` for a missing or unreadable file, a format
    other than PNG (lossy formats smear ids), a colour RGB image, or another mode.
    """
    path = Path(path)
    try:
        with open_image(path) as image:
            if image.format != "PNG":
                raise InputError(f"expected a PNG, got {image.format} (lossy formats blur object ids)", path)
            image.load()
            mode = image.mode
            pixels = np.array(image)  # writable: callers may edit the labels
    except UnidentifiedImageError:
        raise InputError("not an image Pillow can read", path) from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise InputError(f"cannot decode the PNG ({' '.join(str(exc).split())})", path) from None
    if mode == "P":
        return pixels.astype(np.uint8, copy=False)
    if mode in ("1", "L"):
        grey = pixels
    elif mode == "LA":
        grey = pixels[..., 0]
    elif mode in ("RGB", "RGBA"):
        rgb = pixels[..., :3]
        if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
            raise InputError(
                "a colour RGB mask has no defined object ids; save it as an indexed (palette) PNG "
                "whose pixel values are the ids, or as a black-and-white PNG", path)
        grey = rgb[..., 0]
    else:
        raise InputError(f"unsupported PNG mode {mode} (use an indexed PNG or a grey/binary one)", path)
    if grey_values_are_ids:
        return grey.astype(np.uint8)
    return (grey != 0).astype(np.uint8)


class TracksRecorder:
    """Collects the query points of every object on every processed frame; writes tracks.json.

    It keeps only points (a few floats per object and frame), never masks, so that it stays
    small on long videos. The format is described in the module docstring.
    """

    def __init__(self, video: VideoInfo, names: Mapping[int, str | None]) -> None:
        """
        Args:
            video: the input video (``path``, ``width``, ``height``, ``fps``, ``n_frames``).
            names: object id -> name (or None); objects appear in the file even if never seen.
        """
        self.video = {
            "path": str(video.path),
            "width": int(video.width),
            "height": int(video.height),
            "fps": float(video.fps),
            "n_frames": int(video.n_frames),
        }
        self.names = dict(names)
        self._frames: set[int] = set()
        # obj id -> frame -> (score, float32 [N, 4] of x, y, visible, label): one small array
        # per record instead of three keeps the per-frame overhead down.
        self._records: dict[int, dict[int, tuple[float | None, np.ndarray]]] = {i: {} for i in self.names}

    def add(self, result: FrameResult) -> None:
        """Record one frame's points (``result.points``: object id -> xy, visible, labels)."""
        frame = int(result.frame_index)
        if frame in self._frames:
            raise ValueError(f"frame {frame} was already recorded")
        self._frames.add(frame)
        for obj_id, points in result.points.items():
            xy = np.asarray(points.xy, np.float32).reshape(-1, 2)
            packed = np.column_stack([xy, np.asarray(points.visible, np.float32), np.asarray(points.labels, np.float32)])
            score = result.scores.get(obj_id)
            self._records.setdefault(int(obj_id), {})[frame] = (None if score is None else float(score), packed)

    def to_dict(self) -> dict[str, Any]:
        """The tracks.json content as plain Python values."""
        objects = []
        for obj_id in sorted(self._records):
            frames = []
            for frame, (score, packed) in sorted(self._records[obj_id].items()):
                frames.append({
                    "frame": frame,
                    "score": None if score is None else round(score, 3),
                    # float64 before rounding, so that 230.5 is written as 230.5, not 230.50000762.
                    "points": np.round(packed[:, :2].astype(np.float64), 2).tolist(),
                    "visible": (packed[:, 2] != 0).tolist(),
                    "labels": packed[:, 3].astype(int).tolist(),
                })
            objects.append({"id": obj_id, "name": self.names.get(obj_id), "frames": frames})
        return {"version": TRACKS_VERSION, "video": self.video, "frames": sorted(self._frames), "objects": objects}

    def write(self, path: str | Path) -> None:
        """Write tracks.json atomically (compact: one line, no spaces)."""
        with atomic_write(path, "w") as f:
            json.dump(self.to_dict(), f, separators=(",", ":"))


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO run-length encoding of a bool ``[H, W]`` mask (``pycocotools``, column-major as
    COCO), ``counts`` as a string so that it goes into JSON as is."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


# The file by which samtrack marks a working folder as its own: which process made it, on which
# host. Only folders carrying it are ever deleted by a later run, and only once that process is
# gone; a folder of the same name without it is the user's, and is left alone.
OWNER_FILE = ".samtrack-owner"


def claim_folder(folder: Path) -> None:
    """Mark ``folder`` (made by this process) as samtrack's, for :func:`reclaim_folders`."""
    (folder / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))


def owner_is_gone(folder: Path) -> bool:
    """Whether ``folder`` carries samtrack's mark and the process that made it has ended
    (a process on another host, as on a shared drive, is never presumed gone)."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        pid, host = int(owner["pid"]), owner["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # not marked (or not readable): not ours to delete
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, under another user
    return False


def reclaim_folders(parent: Path, prefix: str) -> list[Path]:
    """Delete the folders in ``parent`` named ``prefix...`` that killed samtrack runs left
    (see :func:`owner_is_gone`); returns them."""
    gone = dead_runs_folders(parent, prefix)
    for folder in gone:
        shutil.rmtree(folder, ignore_errors=True)
    return gone


def dead_runs_folders(parent: Path, prefix: str) -> list[Path]:
    """The folders in ``parent`` named ``prefix...`` whose samtrack owner is gone."""
    try:
        with os.scandir(parent) as entries:
            names = [e.name for e in entries if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return [parent / name for name in names if owner_is_gone(parent / name)]


@contextmanager
def owned_temp_dir(prefix: str) -> Iterator[Path]:
    """A private temporary folder, deleted when the block ends however it ends; one left by a
    killed run (SIGKILL, power loss) is deleted by the next run that makes one of the same kind."""
    parent = Path(tempfile.gettempdir())
    reclaim_folders(parent, prefix)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    try:
        claim_folder(folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class StagedOutputDir:
    """A results folder that appears complete or not at all.

    ``with StagedOutputDir(target) as staging:`` yields a hidden sibling folder
    ``.<name>.partial-<pid>`` to write into. When the block succeeds the staging folder becomes
    ``target``; an existing ``target`` is moved aside (``.<name>.old-<pid>``) first and deleted
    only once the new one is in place. When the block raises, the staging folder is deleted and
    ``target`` is untouched. Nothing is created before the block is entered.

    Both hidden folders carry samtrack's mark (:data:`OWNER_FILE`) while they exist, so that the
    next run for the same target reclaims what a killed one left: a staging folder is deleted, and
    a moved-aside result whose replacement never arrived is put back.

    ``staging_name`` fixes the staging folder's name instead, for callers that run one writer
    per target.
    """

    def __init__(self, target: str | Path, staging_name: str | None = None) -> None:
        self.target = Path(target)
        self.staging_name = staging_name
        self._staging: Path | None = None
        self._resolved: Path | None = None

    def __enter__(self) -> Path:
        # A symlinked target keeps its link: the folder it points to is the one replaced.
        target = self.target.resolve()
        if target.exists() and not target.is_dir():
            raise InputError("exists and is not a folder", self.target)
        staging = target.with_name(self.staging_name or f".{target.name}.partial-{os.getpid()}")
        made = False
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._reclaim(target)
            if staging.exists():
                raise InputError(f"the staging folder {show(staging.name)} exists and is not a dead samtrack run's "
                                 "(another run writing here, or not made by samtrack); remove it", self.target)
            staging.mkdir()
            made = True
            claim_folder(staging)
        except OSError as exc:
            if made:
                shutil.rmtree(staging, ignore_errors=True)
            raise InputError(f"cannot create the results folder ({os_problem(exc)})", self.target) from None
        self._staging, self._resolved = staging, target
        return staging

    @staticmethod
    def _reclaim(target: Path) -> None:
        for old in dead_runs_folders(target.parent, f".{target.name}.old-"):
            if not target.exists():
                # Killed between moving the old result aside and putting the new one in place.
                (old / OWNER_FILE).unlink()
                os.rename(old, target)
            else:
                shutil.rmtree(old, ignore_errors=True)
        reclaim_folders(target.parent, f".{target.name}.partial")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        staging, target = self._staging, self._resolved
        self._staging = self._resolved = None
        if staging is None or target is None:
            return
        if exc_type is not None:
            shutil.rmtree(staging, ignore_errors=True)
            return
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            os.rename(target, old)
            claim_folder(old)
        try:
            (staging / OWNER_FILE).unlink()
            os.rename(staging, target)
        except BaseException:
            if old is not None:
                (old / OWNER_FILE).unlink(missing_ok=True)
                os.rename(old, target)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
