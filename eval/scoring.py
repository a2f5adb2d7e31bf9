"""Scoring a folder of results on DAVIS, semi-supervised protocol, with the official CSVs.

What is scored and how matches the official evaluator (davis2017-evaluation,
``evaluation_method.py --task semi-supervised``):

- Results are ``<results_dir>/<seq>/<frame>.png``, one per annotated frame, named like the
  annotations; palette, grey or 1-bit PNGs whose value is the object id.
- The first frame (given to the method) and the last frame are left out.
- 2017: the objects are ids ``1 .. max`` of the first annotation; void (255) pixels count as
  background (the official semi-supervised path passes no void mask). 2016: one object, every
  nonzero pixel of the annotation and of the result.
- Each object gets J and F per frame, then mean / recall / decay
  (:func:`~samtrack.eval.metrics.db_statistics`). Global numbers are means over all objects
  of all sequences; ``J&F-Mean`` is the mean of ``J-Mean`` and ``F-Mean``.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..outputs import atomic_write
from . import davis
from .metrics import Statistics, boundary_f, db_statistics, region_similarity

GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")


@dataclass(frozen=True)
class ObjectScores:
    """Per-frame scores of one object of one sequence.

    Attributes:
        sequence: sequence name.
        object_id: the object's label (1 for DAVIS 2016).
        frames: names (file stems) of the scored frames, in order.
        j: float64 ``[len(frames)]`` region similarity per frame.
        f: float64 ``[len(frames)]`` boundary F per frame.
    """

    sequence: str
    object_id: int
    frames: tuple[str, ...]
    j: np.ndarray
    f: np.ndarray

    @property
    def name(self) -> str:
        """Row name in the per-sequence CSV: ``<seq>_<object id>``."""
        return f"{self.sequence}_{self.object_id}"

    @property
    def j_stats(self) -> Statistics:
        return db_statistics(self.j)

    @property
    def f_stats(self) -> Statistics:
        return db_statistics(self.f)


@dataclass(frozen=True)
class ScoreResult:
    """Scores of every object of every evaluated sequence, in sequence then object order."""

    year: int
    objects: tuple[ObjectScores, ...]

    def global_measures(self) -> dict[str, float]:
        """The official global row, keyed by :data:`GLOBAL_COLUMNS`."""
        j = np.array([o.j_stats for o in self.objects], dtype=np.float64).reshape(-1, 3)
        f = np.array([o.f_stats for o in self.objects], dtype=np.float64).reshape(-1, 3)
        j_mean, j_recall, j_decay = _column_means(j)
        f_mean, f_recall, f_decay = _column_means(f)
        values = ((j_mean + f_mean) / 2, j_mean, j_recall, j_decay, f_mean, f_recall, f_decay)
        return dict(zip(GLOBAL_COLUMNS, values))

    def per_sequence(self) -> list[tuple[str, float, float]]:
        """The official per-sequence rows: ``(<seq>_<obj>, J mean, F mean)`` per object."""
        return [(o.name, o.j_stats.mean, o.f_stats.mean) for o in self.objects]


def score_results(
    results_dir: str | Path,
    root: str | Path,
    sequences: Sequence[str],
    year: int,
    *,
    first_last_excluded: bool = True,
) -> ScoreResult:
    """Score the results in ``results_dir`` against the annotations under ``root``.

    Args:
        results_dir: folder with one sub-folder of PNG masks per sequence.
        root: dataset root in the DAVIS layout (see :mod:`samtrack.eval.davis`).
        sequences: sequence names, e.g. from :func:`samtrack.eval.davis.list_sequences`.
        year: 2016 (single object) or 2017 (multi-object).
        first_last_excluded: leave out the first and last frame (the official protocol);
            False scores every frame.

    Raises:
        InputError: a result folder or PNG is missing, a result's size differs from its
            annotation, or a result holds a label above the sequence's number of objects.
    """
    results_dir = Path(results_dir)
    objects: list[ObjectScores] = []
    for seq in sequences:
        labels, object_ids = davis.load_annotations(root, seq, year)
        frames = [p.stem for p in davis.annotation_paths(root, seq)]
        if first_last_excluded:
            labels, frames = labels[1:-1], frames[1:-1]
        results = _read_results(results_dir / seq, frames, labels.shape[1:])
        if year == 2016:
            results = (results > 0).astype(np.uint8)
        else:
            _check_labels(results_dir / seq, frames, results, len(object_ids))
        for obj in object_ids:
            gt, pred = labels == obj, results == obj
            objects.append(
                ObjectScores(seq, obj, tuple(frames), region_similarity(gt, pred), boundary_f(gt, pred))
            )
    return ScoreResult(year, tuple(objects))


def write_csvs(result: ScoreResult, out_dir: str | Path, split: str) -> tuple[Path, Path]:
    """Write ``global_results-<split>.csv`` and ``per-sequence_results-<split>.csv``.

    Byte for byte what the official ``evaluation_method.py`` writes through pandas on POSIX:
    a header row, values as ``%.3f`` (NaN as an empty field), ``\\n`` line ends, minimal
    quoting. Each file is written to a temporary file beside it and renamed into place, so a
    reader never sees half a file.

    Returns:
        The paths of the global and the per-sequence CSV.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    measures = result.global_measures()
    global_rows = [GLOBAL_COLUMNS, [_fmt(measures[c]) for c in GLOBAL_COLUMNS]]
    sequence_rows = [SEQUENCE_COLUMNS, *[(name, _fmt(j), _fmt(f)) for name, j, f in result.per_sequence()]]
    global_path = out_dir / f"global_results-{split}.csv"
    sequence_path = out_dir / f"per-sequence_results-{split}.csv"
    for path, rows in ((global_path, global_rows), (sequence_path, sequence_rows)):
        with atomic_write(path, "w") as handle:
            handle.write(_csv_text(rows))
    return global_path, sequence_path


def format_table(result: ScoreResult) -> str:
    """The global and per-sequence results as two right-aligned text tables, 3 decimals."""
    measures = result.global_measures()
    global_rows = [list(GLOBAL_COLUMNS), [_fmt(measures[c]) for c in GLOBAL_COLUMNS]]
    sequence_rows = [list(SEQUENCE_COLUMNS), *[[n, _fmt(j), _fmt(f)] for n, j, f in result.per_sequence()]]
    return "\n".join(
        ["Global results", _aligned(global_rows), "", "Per-sequence results", _aligned(sequence_rows)]
    )


def _read_results(folder: Path, frames: Sequence[str], shape: tuple[int, ...]) -> np.ndarray:
    """Result label maps uint8 ``[T, H, W]`` for ``frames``, each checked against ``shape``."""
    if not folder.is_dir():
        raise InputError("no results for this sequence", folder)
    out = np.empty((len(frames), *shape), np.uint8)
    for i, name in enumerate(frames):
        path = folder / f"{name}.png"
        if not path.is_file():
            raise InputError("result mask missing (one PNG is needed per annotated frame)", path)
        mask = davis.read_label_png(path)
        if mask.shape != shape:
            raise InputError(
                f"result is {mask.shape[1]}x{mask.shape[0]} but the annotation is {shape[1]}x{shape[0]}", path
            )
        out[i] = mask
    return out


def _check_labels(folder: Path, frames: Sequence[str], results: np.ndarray, n_objects: int) -> None:
    """Reject a result label with no object behind it (the official evaluator stops there too)."""
    too_high = (results > n_objects).any(axis=(1, 2))
    if too_high.any():
        i = int(np.argmax(too_high))
        raise InputError(
            f"result holds label {int(results[i].max())} but the sequence has {n_objects} object(s)",
            folder / f"{frames[i]}.png",
        )


def _column_means(stats: np.ndarray) -> tuple[float, float, float]:
    if stats.shape[0] == 0:
        return (np.nan, np.nan, np.nan)
    mean, recall, decay = stats.mean(axis=0)
    return float(mean), float(recall), float(decay)


def _fmt(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.3f}"


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _aligned(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return "\n".join(" ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows)
