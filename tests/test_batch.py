"""`samtrack batch MANIFEST --out DIR`: the manifest's schema and checks, and that a row's folder
is what `samtrack run` writes for the same video and prompts (same code path, same bytes)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from samtrack.cli import main
from samtrack.eval.batch import load_manifest
from samtrack.errors import InputError

REPO = Path(__file__).resolve().parents[1]
CLICKS = REPO / "examples" / "clicks.json"
N_FRAMES = 3


@pytest.fixture
def inputs(tmp_path: Path, davis16: Path) -> Path:
    """bear's first frames as a folder, its first annotation as a mask, the example clicks."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(N_FRAMES):
        (frames / f"{i:05d}.jpg").symlink_to(davis16 / "JPEGImages" / "480p" / "bear" / f"{i:05d}.jpg")
    (tmp_path / "mask.png").write_bytes((davis16 / "Annotations" / "480p" / "bear" / "00000.png").read_bytes())
    (tmp_path / "clicks.json").write_bytes(CLICKS.read_bytes())
    return tmp_path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_jsonl_and_csv_manifests_read_alike(inputs: Path) -> None:
    jsonl = write_jsonl(inputs / "m.jsonl", [{"video": "frames", "points": "clicks.json", "out": "a"},
                                             {"video": "frames", "mask": "mask.png", "mask_frame": 0, "out": "b/c"}])
    csv = inputs / "m.csv"
    csv.write_text("video,points,mask,mask_frame,out\nframes,clicks.json,,,a\n\nframes,,mask.png,0,b/c\n")
    for manifest, lines in ((jsonl, [1, 2]), (csv, [2, 4])):  # a CSV's header is its line 1
        items = load_manifest(manifest)
        assert [i.line for i in items] == lines
        assert (items[0].video, items[0].prompt, items[0].out) == (inputs / "frames", inputs / "clicks.json", "a")
        assert [i.out for i in items] == ["a", "b/c"] and items[1].prompt == inputs / "mask.png"
        assert [o.obj_id for o in items[0].objects] == [1] and items[0].objects[0].name == "bear"


@pytest.mark.parametrize("rows, problem", [
    ([{"video": "frames", "mask": "mask.png", "out": "a", "frames": 3}],
     "line 1: unknown key 'frames' (allowed: video, points, mask, mask_frame, out)"),
    ([{"video": "frames", "mask": "mask.png"}], "line 1: missing key 'out'"),
    ([{"video": "frames", "mask": "mask.png", "points": "clicks.json", "out": "a"}],
     "line 1: needs exactly one of 'points' (a clicks.json) and 'mask' (a PNG)"),
    ([{"video": "frames", "out": "a"}], "line 1: needs exactly one of 'points' (a clicks.json) and 'mask' (a PNG)"),
    ([{"video": "nothing.mp4", "mask": "mask.png", "out": "a"}], "line 1: video: no such file or folder: {root}/nothing.mp4"),
    ([{"video": "frames", "points": "clicks.json", "mask_frame": 2, "out": "a"}],
     "line 1: mask_frame: goes with 'mask'; a clicks.json gives each prompt's frame itself"),
    ([{"video": "frames", "mask": "mask.png", "mask_frame": -1, "out": "a"}],
     "line 1: mask_frame: must be an integer >= 0, got -1"),
    ([{"video": 3, "mask": "mask.png", "out": "a"}], "line 1: video: must be a non-empty string, got 3"),
    ([{"video": "frames", "mask": "mask.png", "out": "../a"}],
     "line 1: out: must be a relative folder name without '..' or hidden parts, got '../a'"),
    ([{"video": "frames", "mask": "mask.png", "out": "a"}, {"video": "frames", "mask": "mask.png", "out": "a"}],
     "line 2: out: 'a' is also line 1's"),
    ([{"video": "frames", "mask": "mask.png", "out": "a/b"}, {"video": "frames", "mask": "mask.png", "out": "a"}],
     "line 1: out: 'a/b' is inside line 2's 'a'"),
    ([{"video": "frames", "points": "bad.json", "out": "a"}],
     "line 1: points: {root}/bad.json: objects[0].id: must be an integer, got \"one\""),
])
def test_a_bad_row_is_one_line_naming_manifest_line_and_field(inputs: Path, rows, problem, capsys) -> None:
    (inputs / "bad.json").write_text(json.dumps({"version": 1, "objects": [{"id": "one", "prompts": []}]}))
    manifest = write_jsonl(inputs / "m.jsonl", rows)
    code = main(["batch", str(manifest), "--out", str(inputs / "out")])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [f"samtrack: error: {manifest}: {problem.format(root=inputs)}"]
    assert not (inputs / "out").exists()


@pytest.mark.parametrize("name, text, problem", [
    ("m.jsonl", '{"video": "frames", "mask": "mask.png", "out": "a"}\n\n{"video": \n', "line 3: not valid JSON: Expecting value at column 11"),
    ("m.jsonl", '["frames"]\n', 'line 1: must be a JSON object, got ["frames"]'),
    ("m.jsonl", "\n\n", "no rows"),
    ("m.csv", "video,mask,out,when\n", "line 1: unknown column 'when' (allowed: video, points, mask, mask_frame, out)"),
    ("m.csv", "video,mask,out\nframes,mask.png\n", "line 2: 2 cells, the header has 3"),
    ("m.csv", "video,mask,mask_frame,out\nframes,mask.png,x,a\n", 'line 2: mask_frame: must be an integer >= 0, got "x"'),
    ("m.txt", "frames mask.png a\n", "a manifest is .jsonl (JSON Lines) or .csv"),
])
def test_a_bad_manifest_file_is_one_line(inputs: Path, name: str, text: str, problem: str) -> None:
    manifest = inputs / name
    manifest.write_text(text)
    with pytest.raises(InputError) as error:
        load_manifest(manifest)
    assert str(error.value) == f"{manifest}: {problem}"


def test_an_out_holding_other_files_is_refused(inputs: Path, capsys) -> None:
    manifest = write_jsonl(inputs / "m.jsonl", [{"video": "frames", "mask": "mask.png", "out": "a"}])
    (inputs / "out" / "a").mkdir(parents=True)
    (inputs / "out" / "a" / "notes.txt").write_text("mine")
    assert main(["batch", str(manifest), "--out", str(inputs / "out")]) == 2
    err = capsys.readouterr().err
    assert "holds 'notes.txt', which samtrack did not write" in err and len(err.splitlines()) == 1
    assert (inputs / "out" / "a" / "notes.txt").read_text() == "mine"


def test_a_row_gives_the_files_of_samtrack_run(inputs: Path, mobilesam_checkpoint: Path, capsys) -> None:
    options = ["--config", "fast", "--checkpoint", str(mobilesam_checkpoint), "--set", "output.overlay=false", "--quiet"]
    manifest = write_jsonl(inputs / "m.jsonl", [{"video": "frames", "points": "clicks.json", "out": "clicks"},
                                               {"video": "frames", "mask": "mask.png", "out": "masked/bear"}])
    assert main(["batch", str(manifest), "--out", str(inputs / "out"), *options]) == 0
    for row, prompt in (("clicks", ["--points", str(inputs / "clicks.json")]), ("masked/bear", ["--mask", str(inputs / "mask.png")])):
        single = inputs / f"single-{row.replace('/', '-')}"
        assert main(["run", str(inputs / "frames"), *prompt, "--out", str(single), *options]) == 0
        batch = inputs / "out" / row
        assert sorted(p.name for p in batch.iterdir()) == ["config.yaml", "masks", "run.json", "tracks.json"]
        files = sorted(str(p.relative_to(single)) for p in single.rglob("*") if p.is_file())
        assert len(files) == N_FRAMES + 2
        for name in files:
            assert (batch / name).read_bytes() == (single / name).read_bytes(), name
    rows = (inputs / "out" / "batch-runs.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["clicks", "masked/bear"]
    capsys.readouterr()
    # --resume skips the finished rows; a row whose prompts changed is refused, not mixed in.
    stamps = {p: p.stat().st_mtime_ns for p in (inputs / "out").rglob("*.png")}
    assert main(["batch", str(manifest), "--out", str(inputs / "out"), *options, "--resume"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (inputs / "out").rglob("*.png")} == stamps
    clicks = json.loads((inputs / "clicks.json").read_text())
    clicks["objects"][0]["prompts"][0]["positive"].pop()
    (inputs / "clicks.json").write_text(json.dumps(clicks))
    assert main(["batch", str(manifest), "--out", str(inputs / "out"), *options, "--resume"]) == 2
    assert "clicks was run with another config" in capsys.readouterr().err
