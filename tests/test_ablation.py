"""The ablation table in docs/RESULTS.md is written from the runs' CSVs."""
from __future__ import annotations

from samtrack.eval.ablation import Variant, write_table


def write_run(folder, scores: dict[str, tuple[float, float]], seconds: float) -> None:
    folder.mkdir(parents=True)
    rows = ["Sequence,J-Mean,F-Mean"] + [f"{s}_1,{j},{f}" for s, (j, f) in scores.items()]
    (folder / "per-sequence_results-dev.csv").write_text("\n".join(rows) + "\n")
    j = sum(v[0] for v in scores.values()) / len(scores)
    f = sum(v[1] for v in scores.values()) / len(scores)
    (folder / "global_results-dev.csv").write_text(f"J&F-Mean,J-Mean,F-Mean\n{(j + f) / 2},{j},{f}\n")
    (folder / "runs-dev.csv").write_text("Sequence,Frames,Seconds\n" + "".join(f"{s},10,{seconds}\n" for s in scores))


def test_table_places_each_variant_against_the_oracle(tmp_path):
    write_run(tmp_path / "ours", {"a": (0.6, 0.4), "b": (0.9, 0.9)}, seconds=2.0)
    write_run(tmp_path / "oracle_fast", {"a": (1.0, 1.0), "b": (1.0, 0.8)}, seconds=1.0)
    doc = tmp_path / "RESULTS.md"
    doc.write_text("intro\n<!-- ablation:start -->\nold table\n<!-- ablation:end -->\noutro\n")
    write_table([Variant("ours", "our loop", ()), Variant("oracle_fast", "ceiling", ())], tmp_path, "dev", doc)
    text = doc.read_text()
    assert text.startswith("intro\n<!-- ablation:start -->\n") and text.endswith("<!-- ablation:end -->\noutro\n")
    assert "old table" not in text
    assert "| `ours` | 0.700 | 0.750 | 0.650 | 200 | our loop |" in text  # 2 x 2 s / 20 frames
    assert "| a_1 | 0.500 | 1.000 |" in text and "| b_1 | 0.900 | 0.900 |" in text
    assert "- `ours` 0.737 (a_1 0.50)" in text  # 0.7 / 0.95; sequence a: 0.5 / 1.0


def test_detail_adds_j_and_f_per_sequence_and_the_best_oracle(tmp_path):
    write_run(tmp_path / "ours", {"a": (0.6, 0.4), "b": (0.9, 0.9)}, seconds=2.0)
    write_run(tmp_path / "oracle_fast", {"a": (1.0, 1.0), "b": (1.0, 0.8)}, seconds=1.0)
    write_run(tmp_path / "oracle_box", {"a": (0.5, 0.5), "b": (0.5, 0.5)}, seconds=1.0)
    doc = tmp_path / "RESULTS.md"
    variants = [Variant("ours", "our loop", ()), Variant("oracle_fast", "points", ()), Variant("oracle_box", "box", ())]
    write_table(variants, tmp_path, "dev", doc, marker="quality", detail=True)
    text = doc.read_text()
    assert "Per sequence (J):" in text and "| a_1 | 0.600 | 1.000 | 0.500 |" in text
    assert "Per sequence (F):" in text and "| a_1 | 0.400 | 1.000 | 0.500 |" in text
    assert "best oracle's (`oracle_fast`)" in text and "- `oracle_box` 0.526 (a_1 0.50)" in text  # 0.5 / 0.95


def test_the_quality_preset_is_the_measured_variant():
    """configs/quality.yaml is the q_collapse row of the quality ablation, knob for knob."""
    from samtrack.config import load_config
    from samtrack.eval.ablation import QUALITY_VARIANTS

    args = next(v.args for v in QUALITY_VARIANTS if v.name == "q_collapse")
    assert args[:2] == ("--config", "samtrack")
    overrides = [args[i + 1] for i in range(2, len(args), 2) if args[i] == "--set"]
    assert len(overrides) == (len(args) - 2) // 2
    assert load_config("quality") == load_config("samtrack", overrides)
    assert load_config("quality") != load_config("samtrack")


def test_the_samtrack_preset_is_pieces_and_the_rows_before_it_keep_their_meaning():
    from samtrack.config import load_config
    from samtrack.eval.ablation import QUALITY_VARIANTS

    def config(name):
        args = next(v.args for v in QUALITY_VARIANTS if v.name == name)
        return load_config(args[1], [args[i + 1] for i in range(2, len(args), 2) if args[i] == "--set"])

    assert config("pieces") == load_config("samtrack")
    assert config("collapse") == load_config("samtrack", ["redetect.piece_ratio=0"])
    new = ["redetect.collapse_fraction=0", "redetect.piece_ratio=0"]
    assert config("relearn4") == load_config("samtrack", new)
    assert config("hide") == load_config("samtrack", ["redetect.relearn_growth=0", *new])
    assert config("grow_trim") == load_config("samtrack", ["redetect.hide_fraction=0", "redetect.relearn_growth=0", *new])
    assert config("grow") == load_config("samtrack", ["decode.trim_fraction=0", "redetect.hide_fraction=0",
                                                      "redetect.relearn_growth=0", *new])
    assert config("km_grid400") == load_config("samtrack", ["decode.multimask=off", "decode.trim_fraction=0",
                                                            "redetect.hide_fraction=0", "redetect.relearn_growth=0", *new])
    assert config("q_hide") == load_config("quality", ["redetect.collapse_fraction=0"])
    assert config("q_grow") == load_config("quality", ["redetect.hide_fraction=0", "redetect.collapse_fraction=0"])
    assert config("q_grid_flow427") == load_config("quality", ["decode.multimask=off", "redetect.hide_fraction=0",
                                                               "redetect.collapse_fraction=0"])
    base = config("base")
    assert (base.sampling.kmedoids_subsample, base.sampling.kmedoids_max_pixels) == ("random", 1000)
