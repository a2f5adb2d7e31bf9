"""Scoring a results folder: DAVIS layout reading, the official CSVs, and input errors."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtrack.errors import InputError
from samtrack.eval import davis
from samtrack.eval.scoring import GLOBAL_COLUMNS, SEQUENCE_COLUMNS, format_table, score_results, write_csvs

FSEG_SEQUENCES = ["dog-agility", "rollerblade"]  # the two shortest of the shared 14


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


# ---------------------------------------------------------------- DAVIS 2016, real results


@pytest.fixture(scope="module")
def fseg_scores(davis16: Path, davis16_ref: Path):
    return score_results(davis16_ref / "fseg", davis16, FSEG_SEQUENCES, 2016)


def test_fseg_per_frame_scores_match_official(fseg_scores, davis16_ref: Path) -> None:
    reference = json.loads((davis16_ref / "fseg_per_frame.json").read_text())
    assert [o.name for o in fseg_scores.objects] == [f"{s}_1" for s in FSEG_SEQUENCES]
    for obj in fseg_scores.objects:
        ref = reference[obj.sequence]
        n = len(list((davis16_ref / "fseg" / obj.sequence).glob("*.png")))
        assert obj.frames == tuple(f"{i:05d}" for i in range(1, n - 1))
        np.testing.assert_allclose(obj.j, np.array(ref["J"], float), atol=0.0005 + 1e-9, rtol=0)
        np.testing.assert_allclose(obj.f, np.array(ref["F"], float), atol=0.0005 + 1e-9, rtol=0)


def test_fseg_csvs_have_official_format_and_values(fseg_scores, davis16_ref: Path, tmp_path: Path) -> None:
    reference = json.loads((davis16_ref / "fseg_per_frame.json").read_text())
    global_path, sequence_path = write_csvs(fseg_scores, tmp_path, "dev")
    assert global_path == tmp_path / "global_results-dev.csv"
    assert sequence_path == tmp_path / "per-sequence_results-dev.csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([global_path.name, sequence_path.name])

    text = global_path.read_text()
    assert text.splitlines()[0] == "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay"
    assert text.endswith("\n") and "\r" not in text
    header, row = _read_csv(global_path)
    assert all(re.fullmatch(r"-?\d\.\d{3}", v) for v in row)
    values = dict(zip(header, map(float, row)))

    rows = _read_csv(sequence_path)
    assert rows[0] == ["Sequence", "J-Mean", "F-Mean"]
    assert [r[0] for r in rows[1:]] == ["dog-agility_1", "rollerblade_1"]
    for name, j_mean, f_mean in rows[1:]:
        ref = reference[name.rsplit("_", 1)[0]]
        # Means of 3-decimal reference values: within rounding of ours.
        assert float(j_mean) == pytest.approx(np.mean(np.array(ref["J"], float)), abs=0.001)
        assert float(f_mean) == pytest.approx(np.mean(np.array(ref["F"], float)), abs=0.001)

    all_j = [np.mean(np.array(reference[s]["J"], float)) for s in FSEG_SEQUENCES]
    all_f = [np.mean(np.array(reference[s]["F"], float)) for s in FSEG_SEQUENCES]
    assert values["J-Mean"] == pytest.approx(np.mean(all_j), abs=0.001)
    assert values["F-Mean"] == pytest.approx(np.mean(all_f), abs=0.001)
    assert values["J&F-Mean"] == pytest.approx((np.mean(all_j) + np.mean(all_f)) / 2, abs=0.001)
    recall = np.mean([np.mean(np.array(reference[s]["J"], float) > 0.5) for s in FSEG_SEQUENCES])
    assert values["J-Recall"] == pytest.approx(recall, abs=0.001)

    table = format_table(fseg_scores)
    assert "dog-agility_1" in table and "J&F-Mean" in table


def test_csv_text_equals_what_pandas_writes(fseg_scores, tmp_path: Path) -> None:
    """The official script writes its CSVs with pandas; same bytes from ours."""
    pd = pytest.importorskip("pandas")
    global_path, sequence_path = write_csvs(fseg_scores, tmp_path, "dev")
    measures = fseg_scores.global_measures()
    table_g = pd.DataFrame([[measures[c] for c in GLOBAL_COLUMNS]], columns=list(GLOBAL_COLUMNS))
    table_seq = pd.DataFrame(fseg_scores.per_sequence(), columns=list(SEQUENCE_COLUMNS))
    assert global_path.read_text() == table_g.to_csv(index=False, float_format="%.3f")
    assert sequence_path.read_text() == table_seq.to_csv(index=False, float_format="%.3f")


def test_all_frames_when_first_last_not_excluded(davis16: Path, davis16_ref: Path) -> None:
    scores = score_results(davis16_ref / "fseg", davis16, ["dog-agility"], 2016, first_last_excluded=False)
    assert len(scores.objects[0].frames) == len(list((davis16 / "Annotations" / "480p" / "dog-agility").iterdir()))


# ---------------------------------------------------------------- DAVIS 2017, synthetic

SIZE = (48, 64)  # H, W


def _palette_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    image.save(path)


def _square(labels: np.ndarray, y: int, x: int, size: int, value: int) -> None:
    labels[y : y + size, x : x + size] = value


def _make_2017(root: Path) -> dict[str, list[np.ndarray]]:
    """Two sequences of 5 frames in the official 2017 layout; returns their annotations."""
    sequences: dict[str, list[np.ndarray]] = {}
    # "two": objects 1 and 2, a void band beside object 1, object 2 leaves in frame 3 and an
    # id 3 that only appears after the first frame (not an object for the evaluator).
    frames = []
    for t in range(5):
        labels = np.zeros(SIZE, np.uint8)
        _square(labels, 5, 5 + t, 10, 1)
        labels[5:15, 15 + t : 17 + t] = davis.VOID_LABEL
        if t != 3:
            _square(labels, 25, 30, 10, 2)
        if t >= 2:
            _square(labels, 40, 50, 4, 3)
        frames.append(labels)
    sequences["two"] = frames
    # "gap": first frame holds ids 1 and 3, so the evaluator counts objects 1, 2 and 3.
    frames = []
    for t in range(5):
        labels = np.zeros(SIZE, np.uint8)
        _square(labels, 5, 5, 8, 1)
        _square(labels, 30, 40, 8, 3)
        frames.append(labels)
    sequences["gap"] = frames
    for seq, seq_frames in sequences.items():
        for t, labels in enumerate(seq_frames):
            _palette_png(root / "Annotations" / "480p" / seq / f"{t:05d}.png", labels)
            jpg = root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg"
            jpg.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", SIZE[::-1]).save(jpg)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("two\ngap\n")
    return sequences


@pytest.fixture
def davis17(tmp_path: Path) -> tuple[Path, Path, dict[str, list[np.ndarray]]]:
    root = tmp_path / "DAVIS"
    annotations = _make_2017(root)
    results = tmp_path / "results"
    for seq, frames in annotations.items():
        for t, labels in enumerate(frames):
            res = labels.copy()
            res[res == davis.VOID_LABEL] = 0
            res[res == 3] = 0 if seq == "two" else 3
            if seq == "two":
                # Object 1 also claims the void band: void is background in this protocol.
                res[5:15, 15 + t : 17 + t] = 1
                # Object 2 predicted 2 px to the right in every frame, also where it is absent.
                res[res == 2] = 0
                _square(res, 25, 32, 10, 2)
            _palette_png(results / seq / f"{t:05d}.png", res)
    return root, results, annotations


def test_2017_synthetic_end_to_end(davis17, tmp_path: Path) -> None:
    root, results, _ = davis17
    sequences = davis.list_sequences(root, 2017, "val")
    assert sequences == ["two", "gap"]
    scores = score_results(results, root, sequences, 2017)
    by_name = {o.name: o for o in scores.objects}
    assert list(by_name) == ["two_1", "two_2", "gap_1", "gap_2", "gap_3"]
    for obj in scores.objects:
        assert obj.frames == ("00001", "00002", "00003")

    # two_1: 10x10 square plus the 10x2 void band predicted as object: J = 100 / 120.
    np.testing.assert_allclose(by_name["two_1"].j, [100 / 120] * 3)
    assert (by_name["two_1"].f < 1).all()
    # two_2: 10x10 squares 2 px apart in frames 1 and 2: J = 80 / 120, and F between 0 and 1
    # (the vertical edges are 2 px apart, beyond the ceil(0.008 * 80) = 1 px tolerance of a
    # 48x64 frame). In frame 3 the object is absent but predicted: J = F = 0.
    np.testing.assert_allclose(by_name["two_2"].j, [80 / 120, 80 / 120, 0.0])
    assert by_name["two_2"].f[2] == 0.0 and (by_name["two_2"].f[:2] > 0).all()
    # gap: exact predictions; the missing id 2 is empty in both, which counts as perfect.
    for name in ("gap_1", "gap_2", "gap_3"):
        np.testing.assert_array_equal(by_name[name].j, [1.0, 1.0, 1.0])
        np.testing.assert_array_equal(by_name[name].f, [1.0, 1.0, 1.0])

    _, sequence_path = write_csvs(scores, tmp_path / "out", "val")
    rows = _read_csv(sequence_path)
    assert [r[0] for r in rows[1:]] == ["two_1", "two_2", "gap_1", "gap_2", "gap_3"]
    assert rows[1][1] == f"{100 / 120:.3f}"
    assert rows[2][1] == f"{(2 * 80 / 120) / 3:.3f}"
    header, values = _read_csv(tmp_path / "out" / "global_results-val.csv")
    j_mean = np.mean([100 / 120, (2 * 80 / 120) / 3, 1, 1, 1])
    assert dict(zip(header, values))["J-Mean"] == f"{j_mean:.3f}"


def test_2017_result_size_mismatch_names_file(davis17) -> None:
    root, results, _ = davis17
    bad = results / "two" / "00002.png"
    _palette_png(bad, np.zeros((SIZE[0] + 1, SIZE[1]), np.uint8))
    with pytest.raises(InputError, match="00002.png") as info:
        score_results(results, root, ["two"], 2017)
    assert "64x49" in str(info.value) and "64x48" in str(info.value)


def test_missing_result_png_names_file(davis17) -> None:
    root, results, _ = davis17
    (results / "gap" / "00003.png").unlink()
    with pytest.raises(InputError, match=r"gap/00003\.png"):
        score_results(results, root, ["gap"], 2017)
    with pytest.raises(InputError, match="no results"):
        score_results(results / "nowhere", root, ["gap"], 2017)


def test_result_label_without_object_is_rejected(davis17) -> None:
    root, results, _ = davis17
    labels = davis.read_label_png(results / "two" / "00001.png")
    labels[0, 0] = 7
    _palette_png(results / "two" / "00001.png", labels)
    with pytest.raises(InputError, match=r"label 7 .* 2 object"):
        score_results(results, root, ["two"], 2017)


def test_write_csvs_replaces_existing_files(davis17, tmp_path: Path) -> None:
    root, results, _ = davis17
    out = tmp_path / "out"
    out.mkdir()
    (out / "global_results-val.csv").write_text("stale\n")
    write_csvs(score_results(results, root, ["gap"], 2017), out, "val")
    assert (out / "global_results-val.csv").read_text().startswith("J&F-Mean,")
    assert sorted(p.name for p in out.iterdir()) == ["global_results-val.csv", "per-sequence_results-val.csv"]


# ---------------------------------------------------------------- layout reading


def test_load_annotations_2017(davis17) -> None:
    root, _, annotations = davis17
    labels, ids = davis.load_annotations(root, "two", 2017)
    assert ids == [1, 2]
    assert labels.dtype == np.uint8 and labels.shape == (5, *SIZE)
    np.testing.assert_array_equal(labels, np.stack(annotations["two"]))
    assert davis.load_annotations(root, "gap", 2017)[1] == [1, 2, 3]
    assert [p.name for p in davis.frame_paths(root, "two")] == [f"{t:05d}.jpg" for t in range(5)]


def test_list_sequences_sources_and_errors(davis17, tmp_path: Path) -> None:
    root, _, _ = davis17
    listing = tmp_path / "mine.txt"
    listing.write_text("gap\n\n")
    assert davis.list_sequences(root, 2017, listing) == ["gap"]
    assert davis.list_sequences(root, 2017) == ["gap", "two"]
    listing.write_text("gap\nmissing\n")
    with pytest.raises(InputError, match="missing"):
        davis.list_sequences(root, 2017, listing)
    with pytest.raises(InputError, match="test-dev"):
        davis.list_sequences(root, 2017, "test-dev")
    with pytest.raises(InputError, match="not found"):
        davis.list_sequences(root, 2017, tmp_path / "absent.txt")
    with pytest.raises(InputError, match="Annotations"):
        davis.list_sequences(tmp_path / "results", 2017)
    with pytest.raises(InputError, match="not found"):
        davis.list_sequences(tmp_path / "no-such-root", 2017)


def test_generic_layout_2016_and_la_masks(tmp_path: Path) -> None:
    """A folder without the 480p level, 2016-style binary masks, one saved as mode LA, and the
    original 2016 ImageSets format whose lines are frame paths."""
    root = tmp_path / "generic"
    seq_dir = root / "Annotations" / "clip"
    seq_dir.mkdir(parents=True)
    for t in range(3):
        mask = np.zeros(SIZE, np.uint8)
        mask[10:20, 10 + t : 20 + t] = 255
        image = Image.fromarray(mask)
        (image.convert("LA") if t == 1 else image).save(seq_dir / f"{t:05d}.png")
    labels, ids = davis.load_annotations(root, "clip", 2016)
    assert ids == [1] and set(np.unique(labels)) == {0, 1}
    assert labels[1].sum() == 100
    with pytest.raises(InputError, match="JPEGImages"):
        davis.frame_paths(root, "clip")

    (root / "ImageSets" / "480p").mkdir(parents=True)
    (root / "ImageSets" / "480p" / "val.txt").write_text(
        "".join(f"/JPEGImages/480p/clip/{t:05d}.jpg /Annotations/480p/clip/{t:05d}.png\n" for t in range(3))
    )
    assert davis.list_sequences(root, 2016, "val") == ["clip"]

    results = tmp_path / "res" / "clip"
    results.mkdir(parents=True)
    for t in range(3):
        Image.fromarray((labels[t] * 255).astype(np.uint8)).save(results / f"{t:05d}.png")
    scores = score_results(tmp_path / "res", root, ["clip"], 2016)
    np.testing.assert_array_equal(scores.objects[0].j, [1.0])


def test_2016_annotations_of_shared_data(davis16: Path) -> None:
    assert davis.list_sequences(davis16, 2016, davis16 / "dev.txt")[:2] == ["bear", "bmx-bumps"]
    labels, ids = davis.load_annotations(davis16, "dog-agility", 2016)
    assert ids == [1] and labels.shape == (25, 480, 854) and labels.max() == 1


def test_unpadded_frame_names_keep_time_order(tmp_path: Path) -> None:
    """Generic layouts may number frames 1, 2, ..., 10: they must pair with the frame reader's
    (numeric) order, or results would be written under other frames' names."""
    from samtrack.video import FrameFolderReader

    folder = tmp_path / "JPEGImages" / "clip"
    folder.mkdir(parents=True)
    for t in (1, 2, 10):
        Image.new("RGB", (4, 4)).save(folder / f"{t}.jpg")
    assert [p.name for p in davis.frame_paths(tmp_path, "clip")] == ["1.jpg", "2.jpg", "10.jpg"]
    assert davis.frame_paths(tmp_path, "clip") == FrameFolderReader(folder).files


@pytest.mark.parametrize("command", ["score", "davis"])
def test_out_that_is_a_file_is_a_one_line_error(davis17, tmp_path: Path, capsys, command) -> None:
    from samtrack.cli import main

    root, results, _ = davis17
    taken = tmp_path / "taken.txt"
    taken.write_text("mine\n")
    argv = ["eval", command, "--root", str(root), "--year", "2017", "--split", "val", "--out", str(taken)]
    argv += ["--results", str(results)] if command == "score" else ["--method", "copy", "--quiet"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"samtrack: error: {taken}: exists and is not a folder"
    assert taken.read_text() == "mine\n"


def test_unreadable_split_file_is_a_one_line_error(davis17, tmp_path: Path) -> None:
    root, _, _ = davis17
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="list.txt: not UTF-8 text"):
        davis.list_sequences(root, 2017, listing)


def test_davis_refuses_frame_selection_before_running(davis17, tmp_path: Path, capsys) -> None:
    from samtrack.cli import main

    root, _, _ = davis17
    argv = ["eval", "davis", "--root", str(root), "--year", "2017", "--split", "val", "--out", str(tmp_path / "o"),
            "--method", "copy", "--quiet", "--set", "video.stride=2"]
    assert main(argv) == 2
    assert "DAVIS scores every frame" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
