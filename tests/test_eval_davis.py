"""`samtrack eval davis` end to end on a small DAVIS root: official CSVs, report, and --resume.

The root holds two real DAVIS 2016 sequences cut to their first frames (symlinks into
../shared), listed in a split file; the runs use the real MobileSAM weights.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from samtrack import api
from samtrack.cli import main
from samtrack.eval import runner
from samtrack.eval.scoring import GLOBAL_COLUMNS, SEQUENCE_COLUMNS

from .conftest import davis_slice
from .fakes import left_by_killed_run

SEQUENCES = ("bear", "boat")
N_FRAMES = 10
SPLIT = "tiny"


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def result_files(out: Path) -> tuple[str, str]:
    return ((out / f"global_results-{SPLIT}.csv").read_text(), (out / f"per-sequence_results-{SPLIT}.csv").read_text())


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory, davis16: Path) -> Path:
    """A DAVIS root in the official layout with SEQUENCES cut to N_FRAMES, and a split file."""
    return davis_slice(tmp_path_factory.mktemp("davis"), davis16, SEQUENCES, N_FRAMES, SPLIT)


def eval_args(root: Path, out: Path, checkpoint: Path, *extra: str) -> list[str]:
    return ["eval", "davis", "--root", str(root), "--year", "2016", "--split", str(root / f"{SPLIT}.txt"),
            "--out", str(out), "--config", "fast", "--checkpoint", str(checkpoint), "--quiet", *extra]


@pytest.fixture(scope="module")
def full_run(davis_root: Path, mobilesam_checkpoint: Path, tmp_path_factory) -> Path:
    """One uninterrupted run, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("eval") / "out"
    assert main(eval_args(davis_root, out, mobilesam_checkpoint)) == 0
    return out


def test_eval_writes_official_csvs(full_run: Path) -> None:
    rows = read_csv(full_run / f"global_results-{SPLIT}.csv")
    assert rows[0] == list(GLOBAL_COLUMNS) and len(rows) == 2
    measures = dict(zip(rows[0], map(float, rows[1])))
    assert 0.6 <= measures["J-Mean"] <= 1.0, measures
    assert 0.0 <= measures["F-Mean"] <= 1.0
    assert measures["J&F-Mean"] == pytest.approx((measures["J-Mean"] + measures["F-Mean"]) / 2, abs=1e-3)
    rows = read_csv(full_run / f"per-sequence_results-{SPLIT}.csv")
    assert rows[0] == list(SEQUENCE_COLUMNS)
    assert [r[0] for r in rows[1:]] == [f"{seq}_1" for seq in SEQUENCES]
    per_sequence_j = [float(r[1]) for r in rows[1:]]
    assert measures["J-Mean"] == pytest.approx(sum(per_sequence_j) / len(per_sequence_j), abs=1e-3)


def test_eval_writes_results_runs_and_report(full_run: Path) -> None:
    for seq in SEQUENCES:
        folder = full_run / "results" / seq
        assert sorted(p.name for p in folder.glob("*.png")) == [f"{i:05d}.png" for i in range(N_FRAMES)]
        record = runner.read_run(folder)
        assert record is not None and record.frames == N_FRAMES and record.seconds > 0
    assert sorted(p.name for p in (full_run / "results").iterdir()) == sorted(SEQUENCES)  # no staging left
    runs = read_csv(full_run / f"runs-{SPLIT}.csv")
    assert runs[0][:5] == ["Sequence", "Frames", "Seconds", "FPS", "PeakRSS-MB"]
    assert "encoder-ms/frame" in runs[0]
    assert [(r[0], r[1]) for r in runs[1:]] == [(seq, str(N_FRAMES)) for seq in SEQUENCES]
    assert all(float(r[3]) > 0 and float(r[4]) > 0 for r in runs[1:])
    report = (full_run / f"report-{SPLIT}.md").read_text()
    for seq in SEQUENCES:
        assert f"| {seq}_1 |" in report
        assert (full_run / f"report-{SPLIT}-plots" / f"{seq}.png").stat().st_size > 0


def test_eval_score_agrees_with_eval_davis(full_run: Path, davis_root: Path, tmp_path: Path) -> None:
    # Scoring the written PNGs again from scratch gives the very same CSVs.
    code = main(["eval", "score", "--results", str(full_run / "results"), "--root", str(davis_root),
                 "--year", "2016", "--split", str(davis_root / f"{SPLIT}.txt"), "--out", str(tmp_path)])
    assert code == 0
    assert result_files(tmp_path) == result_files(full_run)


def test_resume_after_interruption(full_run: Path, davis_root: Path, mobilesam_checkpoint: Path, tmp_path: Path,
                                   monkeypatch, capsys) -> None:
    first, second = SEQUENCES
    out = tmp_path / "out"
    results = out / "results"
    write = runner.write_label_png
    written: list[Path] = []

    def interrupted(path, label_map):
        if Path(path).parent.name == f".{second}.partial":
            if len(written) == 2:
                raise KeyboardInterrupt  # Ctrl-C on the 3rd frame of the second sequence
            written.append(Path(path))
        write(path, label_map)

    monkeypatch.setattr(runner, "write_label_png", interrupted)
    assert main(eval_args(davis_root, out, mobilesam_checkpoint)) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "samtrack: interrupted"
    assert len(written) == 2
    assert runner.read_run(results / first) is not None
    assert sorted(p.name for p in results.iterdir()) == [first]  # no half sequence, no staging folder
    assert not (out / f"global_results-{SPLIT}.csv").exists()
    monkeypatch.undo()
    # What a SIGKILL would have left instead: the second sequence's staging folder.
    left_by_killed_run(results / f".{second}.partial")
    write(results / f".{second}.partial" / "00000.png", np.zeros((480, 854), np.uint8))

    finished = {p.name: p.stat().st_mtime_ns for p in (results / first).iterdir()}
    assert main([*eval_args(davis_root, out, mobilesam_checkpoint), "--resume"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (results / first).iterdir()} == finished
    assert runner.read_run(results / second) is not None
    assert sorted(p.name for p in results.iterdir()) == sorted(SEQUENCES)
    assert result_files(out) == result_files(full_run)
    runs = read_csv(out / f"runs-{SPLIT}.csv")
    assert [r[0] for r in runs[1:]] == list(SEQUENCES)


def test_resume_with_another_config_is_refused(full_run: Path, davis_root: Path, mobilesam_checkpoint: Path,
                                               tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    def refuse(cls, *args, **kwargs):
        raise AssertionError("the model was loaded for a run that cannot resume")

    monkeypatch.setattr(api.VideoPredictor, "from_config", classmethod(refuse))
    code = main([*eval_args(davis_root, out, mobilesam_checkpoint), "--resume", "--set", "reinit.every=4"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("samtrack: error: ") and "another config" in lines[0], err
    assert str(out / "results") in lines[0]
    # Refused before anything was touched: earlier results and scores are all still there.
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
