"""Reading a dataset in the DAVIS layout: sequence lists, frame paths and annotations.

Official layout (DAVIS 2016 and 2017)::

    <root>/JPEGImages/480p/<seq>/00000.jpg ...
    <root>/Annotations/480p/<seq>/00000.png ...
    <root>/ImageSets/<year>/<split>.txt        one sequence name a line

A generic folder without the ``480p`` level (``<root>/JPEGImages/<seq>/``,
``<root>/Annotations/<seq>/``) is read the same way. DAVIS 2016 annotations are binary
(0 background, anything else the one object); DAVIS 2017 annotations are palette PNGs whose
index is the object id, 0 background and 255 void.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import outputs
from ..errors import InputError
from ..fileio import list_folder, os_errors, read_input_text
from ..video import natural_key

YEARS = (2016, 2017)
VOID_LABEL = 255
RESOLUTION = "480p"


def images_dir(root: str | Path) -> Path:
    """Folder holding one sub-folder of JPEG frames per sequence."""
    return _data_dir(root, "JPEGImages")


def annotations_dir(root: str | Path) -> Path:
    """Folder holding one sub-folder of PNG annotations per sequence."""
    return _data_dir(root, "Annotations")


def list_sequences(root: str | Path, year: int, split_or_file: str | Path | None = None) -> list[str]:
    """Names of the sequences to evaluate, checked to have annotations.

    Args:
        root: dataset root.
        year: 2016 or 2017 (picks ``ImageSets/<year>/``).
        split_or_file: a split name (``train``, ``val``, ...) read from
            ``ImageSets/<year>/<split>.txt`` (for 2016 also the original release's
            ``ImageSets/480p/<split>.txt``, whose lines are frame paths); or a path to a text
            file with one sequence name a line; or None for every annotated sequence, sorted.

    Raises:
        InputError: the list file is missing or empty, or a listed sequence has no
            annotation folder.
    """
    _check_year(year)
    annotations = annotations_dir(root)
    if split_or_file is None:
        with os_errors(annotations):
            names = sorted(p.name for p in list_folder(annotations) if p.is_dir())
    else:
        names = _read_sequence_list(_sequence_list_path(Path(root), year, split_or_file))
    if not names:
        raise InputError("no sequences to evaluate", annotations if split_or_file is None else split_or_file)
    for name in names:
        if not (annotations / name).is_dir():
            raise InputError(f"sequence {name!r} has no annotations", annotations / name)
    return names


def frame_paths(root: str | Path, seq: str) -> list[Path]:
    """The sequence's frames (JPEG as in DAVIS, or PNG in generic layouts) in file name order
    (numbers compared as numbers)."""
    folder = images_dir(root) / seq
    if folder.is_dir() and not _sequence_files(folder, ".jpg", required=False) and _sequence_files(folder, ".png", required=False):
        return _sequence_files(folder, ".png")
    return _sequence_files(folder, ".jpg")


def annotation_paths(root: str | Path, seq: str) -> list[Path]:
    """The sequence's PNG annotations in time (file name) order; their stems name the frames."""
    return _sequence_files(annotations_dir(root) / seq, ".png")


def read_label_png(path: str | Path) -> np.ndarray:
    """A label PNG as the official evaluator reads it: palette indices, or grey values, as ids.

    Raises:
        InputError: the file is missing, unreadable, or not a PNG of labels.
    """
    return outputs.read_label_png(path, grey_values_are_ids=True)


def load_annotations(root: str | Path, seq: str, year: int) -> tuple[np.ndarray, list[int]]:
    """All annotations of a sequence and the ids of the objects to evaluate.

    Returns:
        labels: uint8 ``[T, H, W]`` label maps, one per annotated frame in time order. For
            2016, 0 background and 1 the object; for 2017, the palette indices as stored
            (0 background, ``VOID_LABEL`` void).
        object_ids: ``[1]`` for 2016; for 2017 ``1 .. max`` of the first frame's labels
            (void excluded), as the official evaluator counts objects, so an id missing from
            the first frame is still an (empty) object.

    Raises:
        InputError: no annotations, or frames of different sizes.
    """
    _check_year(year)
    paths = annotation_paths(root, seq)
    labels = _stack(paths, [read_label_png(p) for p in paths])
    if year == 2016:
        return (labels > 0).astype(np.uint8), [1]
    first = labels[0]
    n_objects = int(first[first != VOID_LABEL].max(initial=0))
    return labels, list(range(1, n_objects + 1))


def _stack(paths: list[Path], frames: list[np.ndarray]) -> np.ndarray:
    """Stack same-size frames ``[H, W]`` into ``[T, H, W]``, naming the first odd one out."""
    for path, frame in zip(paths, frames):
        if frame.shape != frames[0].shape:
            raise InputError(
                f"mask is {frame.shape[1]}x{frame.shape[0]}, the sequence's first is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}",
                path,
            )
    return np.stack(frames)


def _data_dir(root: str | Path, kind: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise InputError("dataset folder not found", root)
    for candidate in (root / kind / RESOLUTION, root / kind):
        if candidate.is_dir():
            return candidate
    raise InputError(f"no {kind}/ folder (expected {kind}/{RESOLUTION}/<seq>/ or {kind}/<seq>/)", root)


def _sequence_files(folder: Path, suffix: str, required: bool = True) -> list[Path]:
    if not folder.is_dir():
        raise InputError("sequence folder not found", folder)
    # Numeric order, as the frame reader uses: "2.jpg" comes before "10.jpg".
    files = sorted((p for p in list_folder(folder) if p.suffix == suffix and not p.name.startswith(".")), key=lambda p: natural_key(p.name))
    if not files and required:
        raise InputError(f"no *{suffix} files", folder)
    return files


def _sequence_list_path(root: Path, year: int, split_or_file: str | Path) -> Path:
    """Resolve a split name or list-file path to an existing file."""
    given = Path(split_or_file)
    if given.is_file():
        return given
    if given.suffix == ".txt" or len(given.parts) > 1:
        raise InputError("sequence list file not found", given)
    candidates = [root / "ImageSets" / str(year) / f"{given}.txt"]
    if year == 2016:
        candidates.append(root / "ImageSets" / RESOLUTION / f"{given}.txt")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"no list for split {str(given)!r} (give a split with ImageSets/ or a list file)", candidates[0])


def _read_sequence_list(path: Path) -> list[str]:
    """Sequence names from a list file, in order, each once.

    A line is either a bare name or, as in the original DAVIS 2016 release, frame paths such as
    ``/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png``.
    """
    text = read_input_text(path, 2**24, "sequence list")
    names: dict[str, None] = {}
    for line in text.splitlines():
        fields = line.split()
        if fields:
            first = Path(fields[0])
            names[first.parent.name if len(first.parts) > 1 else fields[0]] = None
    return list(names)


def _check_year(year: int) -> None:
    if year not in YEARS:
        raise ValueError(f"year must be one of {YEARS}, got {year!r}")
