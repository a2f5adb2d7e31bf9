"""The ablation behind docs/RESULTS.md: every variant of the loop on the same DAVIS sequences,
placed between the copy-first-mask floor and the oracle ceiling.

    python -m samtrack.eval.ablation --root ../shared/data/davis2016 --year 2016 \\
        --split ../shared/data/davis2016/dev.txt --out runs/ablation --doc docs/RESULTS.md

Each variant is a ``samtrack eval davis`` run into ``<out>/<variant>/`` with ``--resume``, so a
re-run only computes what is missing and rewrites the table. ``--group segmenters`` runs the
segmenter variants instead (our PyTorch MobileSAM on the converted weights, unpadded frames,
multimask selection; needs the torch extra) into their own table. Frame embeddings are cached in
``<out>/embeddings`` (the encoder then runs once per frame for all variants), so the
ms/frame column excludes the encoder after the first variant.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cli import run_command
from ..errors import InputError, SamtrackError
from ..outputs import atomic_write
from .commands import split_name


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    args: tuple[str, ...]


VARIANTS = (
    Variant("copy", "copy the first-frame mask to every frame (floor)", ("--method", "copy")),
    Variant("sam_pt", "SAM-PT preset: LK, 12 refinement passes, IoU >= 0.7, no reinit", ("--config", "sam_pt")),
    Variant("sam_pt_reinit", "SAM-PT preset with reinit every 8 frames", ("--config", "sam_pt_reinit")),
    Variant("fast", "fast preset: no refinement passes, reinit every 8", ("--config", "fast")),
    Variant("fast_h1", "fast, points re-sampled from the mask every frame", ("--config", "fast", "--set", "reinit.every=1")),
    Variant("fast_nofb", "fast, no forward-backward check (threshold 1000 px)",
            ("--config", "fast", "--set", "tracker.lk.fb_threshold=1000")),
    Variant("fast_h1_nofb", "fast, re-sampled every frame, no forward-backward check",
            ("--config", "fast", "--set", "reinit.every=1", "--set", "tracker.lk.fb_threshold=1000")),
    Variant("fast_lk5", "fast, LK with 5 pyramid levels and a 31 px window",
            ("--config", "fast", "--set", "tracker.lk.max_level=5", "--set", "tracker.lk.win_size=31")),
    Variant("redetect", "fast_h1_nofb + re-detection by encoder features (the default before part points)",
            ("--config", "samtrack", "--set", "redetect.grow_points=0")),
    Variant("redetect_1pass", "redetect with one positives+negatives decoder pass instead of two",
            ("--config", "samtrack", "--set", "redetect.grow_points=0", "--set", "decode.use_negative_pass=false")),
    Variant("redetect_memory", "redetect, one pass prompted with the previous frame's low-res logits",
            ("--config", "samtrack", "--set", "redetect.grow_points=0", "--set", "decode.mask_memory=true")),
    Variant("redetect_guard", "redetect + area guard: a mask over 3x the last one is replaced by it, moved",
            ("--config", "samtrack", "--set", "redetect.grow_points=0", "--set", "decode.max_growth=3")),
    Variant("samtrack", "samtrack preset (default): redetect + a positive on the most object-like cell next to the mask",
            ("--config", "samtrack")),
    Variant("samtrack_seed1", "samtrack with sampling seed 1 (run-to-run spread of the loop)",
            ("--config", "samtrack", "--set", "sampling.seed=1")),
    Variant("samtrack_seed2", "samtrack with sampling seed 2", ("--config", "samtrack", "--set", "sampling.seed=2")),
    Variant("samtrack_km500", "samtrack, K-Medoids on 500 mask pixels instead of 1000 (cheaper sampling)",
            ("--config", "samtrack", "--set", "sampling.kmedoids_max_pixels=500")),
    Variant("samtrack_2grow", "samtrack with 2 part points, only on cells scoring above 0.05",
            ("--config", "samtrack", "--set", "redetect.grow_points=2", "--set", "redetect.grow_margin=0.05")),
    Variant("oracle_fast", "ORACLE: points sampled every frame from that frame's ground truth, fast decoding",
            ("--config", "fast", "--method", "oracle")),
    Variant("oracle_reinit", "ORACLE with sam_pt_reinit decoding (12 refinement passes)",
            ("--config", "sam_pt_reinit", "--method", "oracle")),
)

_TORCH = ("--config", "samtrack", "--segmenter", "mobilesam", "--set", "segmenter.unpadded=false")
SEGMENTER_VARIANTS = (
    Variant("samtrack", "samtrack preset, MobileSAM ONNX on onnxruntime (the default)", ("--config", "samtrack")),
    Variant("torch", "samtrack preset, our PyTorch MobileSAM (weights converted from the ONNX pair), frames padded to the square", _TORCH),
    Variant("torch_unpadded", "torch, frames encoded at 1024x576 (64x36 embedding): the PyTorch default",
            (*_TORCH, "--set", "segmenter.unpadded=true")),
    Variant("torch_multimask_iou", "torch, each object's final mask the multimask output with the highest predicted IoU",
            (*_TORCH, "--set", "decode.multimask=best_iou")),
    Variant("torch_multimask_consistent", "torch, each object's final mask the output overlapping its last mask best",
            (*_TORCH, "--set", "decode.multimask=consistent")),
    # The loop feeds each mask back into the next frame's points, so differences of 1e-4 in the
    # logits can grow into other trajectories: the seeds show that spread, and the oracle (points
    # from each frame's ground truth, no feedback) compares the two models frame by frame.
    Variant("samtrack_seed1", "samtrack with sampling seed 1", ("--config", "samtrack", "--set", "sampling.seed=1")),
    Variant("torch_seed1", "torch with sampling seed 1", (*_TORCH, "--set", "sampling.seed=1")),
    Variant("samtrack_seed2", "samtrack with sampling seed 2", ("--config", "samtrack", "--set", "sampling.seed=2")),
    Variant("torch_seed2", "torch with sampling seed 2", (*_TORCH, "--set", "sampling.seed=2")),
    Variant("torch_unpadded_seed1", "torch_unpadded with sampling seed 1",
            (*_TORCH, "--set", "segmenter.unpadded=true", "--set", "sampling.seed=1")),
    Variant("torch_unpadded_seed2", "torch_unpadded with sampling seed 2",
            (*_TORCH, "--set", "segmenter.unpadded=true", "--set", "sampling.seed=2")),
    Variant("oracle_fast", "ORACLE (no feedback loop): points from each frame's ground truth, fast decoding, ONNX",
            ("--config", "fast", "--method", "oracle")),
    Variant("torch_oracle_fast", "the same oracle with our PyTorch MobileSAM",
            ("--config", "fast", "--method", "oracle", "--segmenter", "mobilesam", "--set", "segmenter.unpadded=false")),
)
# The samtrack preset as issue 13's rows measured it, before it took km_grid400's K-Medoids
# subsample and multimask=grow: its rows keep their meaning (and their runs' config fingerprints).
_OFF = ("--set", "decode.multimask=off", "--set", "decode.trim_fraction=0", "--set", "redetect.hide_fraction=0",
        "--set", "redetect.relearn_growth=0", "--set", "redetect.collapse_fraction=0",
        "--set", "redetect.piece_ratio=0")
_SAMTRACK_1000 = ("--config", "samtrack", "--set", "sampling.kmedoids_subsample=random",
                  "--set", "sampling.kmedoids_max_pixels=1000", *_OFF)
_FLOW = (*_SAMTRACK_1000, "--set", "flow.enabled=true")
# The flow candidate chosen by predicted IoU (f_mask_iou), + a shrink negative (c_mi_shrink), + the
# look check (c_mi_shrink_look10), + 16 positives (c_mi_look_p16): the combinations the rows build on.
_MI = (*_FLOW, "--set", "flow.mask_prompt=true", "--set", "flow.select=iou")
_MI_SHRINK = (*_MI, "--set", "redetect.shrink_points=1")
_NEW = (*_MI_SHRINK, "--set", "redetect.verify_fraction=0.1")
_CANDIDATE = (*_NEW, "--set", "sampling.n_positive=16")
_C1PASS = (*_NEW, "--set", "flow.longest_side=427", "--set", "decode.use_negative_pass=false")
_GRID = ("--set", "sampling.kmedoids_subsample=grid", "--set", "sampling.kmedoids_max_pixels=400")
_GROW = (*_SAMTRACK_1000, *_GRID, "--set", "decode.multimask=grow")
_Q_GROW = (*_CANDIDATE, *_GRID, "--set", "flow.longest_side=427", "--set", "decode.multimask=grow")
_HIDE = (*_GROW, "--set", "decode.trim_fraction=0.3", "--set", "redetect.hide_fraction=0.8")
_COLLAPSE = (*_HIDE, "--set", "redetect.relearn_growth=4", "--set", "redetect.collapse_fraction=0.2")
_Q_HIDE = (*_Q_GROW, "--set", "redetect.hide_fraction=0.8")
_Q_COLLAPSE = (*_Q_HIDE, "--set", "redetect.collapse_fraction=0.2")
_LOOP_VARIANTS = (
    Variant("base", "samtrack preset as issue 13 found it (K-Medoids on 1000 random pixels): MobileSAM ONNX unpadded, "
            "OpenVINO", _SAMTRACK_1000),
    Variant("f_mask_iou", "flow candidate: points + moved low-res logits, chosen by predicted IoU",
            _MI),
    Variant("f_mask_look", "flow candidate: points + moved low-res logits, chosen by mean appearance score",
            (*_FLOW, "--set", "flow.mask_prompt=true", "--set", "flow.select=look")),
    Variant("f_box_iou", "flow candidate: points + box of the moved mask, chosen by predicted IoU",
            (*_FLOW, "--set", "flow.box=true", "--set", "flow.select=iou")),
    Variant("f_guard2", "area guard against the flow-moved mask: a mask over 2x its area is replaced by it",
            (*_FLOW, "--set", "flow.max_growth=2")),
    Variant("f_fallback3", "a dropped mask (IoU < 0.7) replaced by the flow-moved one, up to 3 frames in a row",
            (*_FLOW, "--set", "flow.fallback_frames=3")),
    Variant("r_shrink1", "samtrack + a negative on the most background-like cell inside the last mask",
            (*_SAMTRACK_1000, "--set", "redetect.shrink_points=1")),
    Variant("c_mi_shrink", "f_mask_iou + r_shrink1", _MI_SHRINK),
    Variant("f_bin_iou", "flow candidate: points + the previous mask moved by the flow as the mask prompt (+-10 logits, "
            "as the oracle's), chosen by predicted IoU",
            (*_MI, "--set", "flow.prior=mask")),
    Variant("f_bin_flow", "one pass: points + the previous mask moved by the flow as the mask prompt, always taken",
            (*_FLOW, "--set", "flow.mask_prompt=true", "--set", "flow.prior=mask", "--set", "flow.select=flow")),
    Variant("v_look10", "samtrack + a mask of 40 cells or more with under 10% object-like cells is rejected (object empty)",
            (*_SAMTRACK_1000, "--set", "redetect.verify_fraction=0.1")),
    Variant("v_look20", "v_look10 with 20%", (*_SAMTRACK_1000, "--set", "redetect.verify_fraction=0.2")),
    Variant("c_mi_shrink_look10", "c_mi_shrink + v_look10", _NEW),
    Variant("f_mask_iou_look10", "f_mask_iou + v_look10",
            (*_MI, "--set", "redetect.verify_fraction=0.1")),
    Variant("p16", "samtrack with 16 positive points instead of 8", (*_SAMTRACK_1000, "--set", "sampling.n_positive=16")),
    Variant("iou50", "samtrack keeping masks of predicted IoU 0.5 or more (0.7)",
            (*_SAMTRACK_1000, "--set", "decode.iou_threshold=0.5")),
    Variant("thin2", "samtrack + 2 positives on the mask's thin parts (narrower than 9 px)",
            (*_SAMTRACK_1000, "--set", "sampling.thin_points=2")),
    Variant("c_1pass", "one pass with all points, against the flow candidate (all points + moved low-res logits, flow "
            "on frames shrunk to 427 px) by predicted IoU, + one shrink negative, + v_look10: two decoder calls, as base",
            _C1PASS),
    Variant("f_points_lost", "points the tracker lost carried on by the flow", (*_FLOW, "--set", "flow.points=lost")),
    Variant("c_1pass_p16", "c_1pass with 16 positive points", (*_C1PASS, "--set", "sampling.n_positive=16")),
    Variant("c_mi_look_p16", "c_mi_shrink_look10 with 16 positive points: the quality preset before q_grid_flow427", _CANDIDATE),
    Variant("neg3band", "samtrack with 3 negatives, K-Medoids in the 32 px band around the mask (1, anywhere outside)",
            (*_SAMTRACK_1000, "--set", "sampling.n_negative=3", "--set", "sampling.negative_method=kmedoids")),
    Variant("shrink3", "samtrack + negatives on the 3 most background-like cells inside the last mask",
            (*_SAMTRACK_1000, "--set", "redetect.shrink_points=3")),
    Variant("v_parts30", "c_mi_shrink_look10, each connected piece of the mask checked on its own, at 30%",
            (*_MI_SHRINK, "--set", "redetect.verify_fraction=0.3", "--set", "redetect.verify_parts=true")),
    Variant("c_upd", "c_mi_shrink_look10 + the object's look relearnt every 5 frames from a trusted mask",
            (*_NEW, "--set", "redetect.update_every=5")),
    Variant("km_grid400", "samtrack, K-Medoids on 400 mask pixels on a grid (1000 at random): 6x cheaper sampling; the "
            "samtrack preset before grow", (*_SAMTRACK_1000, *_GRID)),
    Variant("km_grid600", "samtrack, K-Medoids on 600 mask pixels on a grid",
            (*_SAMTRACK_1000, *_GRID, "--set", "sampling.kmedoids_max_pixels=600")),
    Variant("q_grid_flow427", "c_mi_look_p16 with km_grid400 and the flow on frames shrunk to 427 px (cheaper): the "
            "quality preset before grow", (*_CANDIDATE, *_GRID, "--set", "flow.longest_side=427")),
    Variant("holes2", "samtrack (km_grid400) + a negative in each of the mask's 2 largest holes (150 px or more)",
            ("--config", "samtrack", *_OFF, "--set", "sampling.hole_negatives=2")),
    Variant("q_holes2", "quality (q_grid_flow427) + holes2",
            ("--config", "quality", *_OFF, "--set", "sampling.hole_negatives=2")),
    Variant("grow", "km_grid400 + of SAM's four outputs, one that keeps the mask and adds object-like cells "
            "(decode.multimask=grow)", _GROW),
    Variant("q_grow", "q_grid_flow427 + decode.multimask=grow", _Q_GROW),
    Variant("grow_trim", "grow, else an output inside the mask that drops cells under 30% object-like "
            "(decode.trim_fraction=0.3): the samtrack preset before hide", (*_GROW, "--set", "decode.trim_fraction=0.3")),
    Variant("q_grow_trim", "q_grow + decode.trim_fraction=0.3", (*_Q_GROW, "--set", "decode.trim_fraction=0.3")),
    Variant("hide", "grow_trim + an object whose tracker kept under 3 positives is reported hidden unless 80% of "
            "its mask's cells look like it (redetect.hide_fraction=0.8): the samtrack preset before relearn4",
            _HIDE),
    Variant("q_hide", "q_grow + redetect.hide_fraction=0.8", _Q_HIDE),
    Variant("relearn4", "hide + the object's look learnt again each time its mask covers 4x the area it had when "
            "last learnt (redetect.relearn_growth=4): the samtrack preset before collapse",
            (*_HIDE, "--set", "redetect.relearn_growth=4")),
    Variant("collapse", "relearn4 + a mask under 20% of the one re-detection searches around leaves the search where "
            "it was, for up to 2 such masks in a row (redetect.collapse_fraction=0.2): the samtrack preset before pieces",
            _COLLAPSE),
    Variant("q_collapse", "q_hide + redetect.collapse_fraction=0.2: the quality preset now", _Q_COLLAPSE),
    Variant("pieces", "collapse + a piece of the mask far from its most object-like piece and under half as "
            "object-like is dropped (redetect.piece_ratio=0.5): the samtrack preset now",
            (*_COLLAPSE, "--set", "redetect.piece_ratio=0.5")),
    Variant("q_pieces", "q_collapse + redetect.piece_ratio=0.5", (*_Q_COLLAPSE, "--set", "redetect.piece_ratio=0.5")),
    Variant("relearn2", "relearn4 at 2x (redetect.relearn_growth=2)",
            (*_HIDE, "--set", "redetect.relearn_growth=2")),
    Variant("q_relearn4", "q_hide + redetect.relearn_growth=4", (*_Q_HIDE, "--set", "redetect.relearn_growth=4")),
)
# Rows also run at sampling seeds 1 and 2 (the loop's run-to-run spread).
_SEEDED = ("base", "c_mi_look_p16", "c_upd", "km_grid400", "km_grid600", "q_grid_flow427", "holes2", "q_holes2", "grow",
           "q_grow", "grow_trim", "q_grow_trim", "hide", "q_hide", "relearn4", "q_relearn4", "relearn2",
           "collapse", "q_collapse", "pieces", "q_pieces")
QUALITY_VARIANTS = (
    *_LOOP_VARIANTS,
    *(Variant(f"{v.name}_seed{seed}", f"{v.name} with sampling seed {seed}", (*v.args, "--set", f"sampling.seed={seed}"))
      for v in _LOOP_VARIANTS if v.name in _SEEDED for seed in (1, 2)),
    Variant("oracle_fast", "ORACLE: points sampled from each frame's ground truth (as issue 4's oracle)",
            ("--config", "fast", "--method", "oracle")),
    Variant("oracle_box", "ORACLE: the ground truth's box alone", ("--config", "fast", "--method", "oracle", "--oracle-prompt", "box")),
    Variant("oracle_boxpts", "ORACLE: box + points", ("--config", "fast", "--method", "oracle", "--oracle-prompt", "box+points")),
    Variant("oracle_ptsmask", "ORACLE: points + the previous frame's ground truth as the mask prompt",
            ("--config", "fast", "--method", "oracle", "--oracle-prompt", "points+mask")),
    Variant("oracle_all", "ORACLE: box + points + previous ground truth as mask prompt",
            ("--config", "fast", "--method", "oracle", "--oracle-prompt", "box+points+mask")),
    Variant("oracle_multimask", "ORACLE: points, the best of SAM's 4 outputs by IoU with the truth (PyTorch MobileSAM)",
            ("--config", "fast", "--method", "oracle", "--oracle-prompt", "multimask", "--segmenter", "mobilesam")),
)
GROUPS = {"loop": (VARIANTS, "ablation"), "segmenters": (SEGMENTER_VARIANTS, "segmenters"),
          "quality": (QUALITY_VARIANTS, "quality")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samtrack.eval.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--year", type=int, default=2016)
    parser.add_argument("--split", required=True)
    parser.add_argument("--out", required=True, help="one folder per variant goes here")
    parser.add_argument("--doc", required=True, help="the markdown file to write")
    parser.add_argument("--group", choices=GROUPS, default="loop", help="which table: the loop's variants, or the segmenters'")
    parser.add_argument("--variants", nargs="+", choices=sorted({v.name for g, _ in GROUPS.values() for v in g}),
                        help="only these (of the group)")
    parser.add_argument("--table-only", action="store_true", help="only rewrite the table from finished runs")
    parser.add_argument("--marker", help="write between <!-- MARKER:start --> and <!-- MARKER:end --> (default: the group's; "
                                         "e.g. a second table of the same group on another split)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    variants, marker = GROUPS[args.group]
    marker = args.marker or marker
    chosen = [v for v in variants if not args.variants or v.name in args.variants]
    for variant in [] if args.table_only else chosen:
        command = [sys.executable, "-m", "samtrack.cli", "eval", "davis", "--root", args.root, "--year", str(args.year),
                   "--split", args.split, "--out", str(out / variant.name), "--resume", "--quiet",
                   "--set", f"segmenter.embedding_cache={out / 'embeddings'}", *variant.args]
        print("+", " ".join(command[1:]), file=sys.stderr)
        code = subprocess.run(command, stdout=subprocess.DEVNULL).returncode
        if code:  # its own error line is already on stderr
            raise SamtrackError(f"variant {variant.name}: samtrack eval davis failed (exit code {code})")
    write_table(chosen, out, split_name(args.split), Path(args.doc), marker, detail=args.group == "quality")
    print(f"-> {args.doc}")
    return 0


def write_table(variants: list[Variant], out: Path, split: str, doc: Path, marker: str = "ablation",
                detail: bool = False) -> None:
    """Per-sequence J&F of every variant, means, J and F, and ms/frame, as markdown, written
    between ``<!-- {marker}:start -->`` and ``<!-- {marker}:end -->`` in ``doc``; ``detail`` adds
    per-sequence J and F and the fraction of the best oracle variant."""
    per_seq: dict[str, dict[str, float]] = {}
    per_seq_j: dict[str, dict[str, float]] = {}
    per_seq_f: dict[str, dict[str, float]] = {}
    rows = []
    for v in variants:
        scores = _read_csv(out / v.name / f"per-sequence_results-{split}.csv")
        glob = _read_csv(out / v.name / f"global_results-{split}.csv")[0]
        runs = _read_csv(out / v.name / f"runs-{split}.csv")
        per_seq[v.name] = {r["Sequence"]: (float(r["J-Mean"]) + float(r["F-Mean"])) / 2 for r in scores}
        per_seq_j[v.name] = {r["Sequence"]: float(r["J-Mean"]) for r in scores}
        per_seq_f[v.name] = {r["Sequence"]: float(r["F-Mean"]) for r in scores}
        frames = sum(int(r["Frames"]) for r in runs)
        ms = 1000 * sum(float(r["Seconds"]) for r in runs) / max(frames, 1)
        rows.append((v, float(glob["J&F-Mean"]), float(glob["J-Mean"]), float(glob["F-Mean"]), ms))
    sequences = sorted({s for scores in per_seq.values() for s in scores})
    oracle = per_seq.get("oracle_fast", {})
    lines = ["| variant | J&F | J | F | ms/frame* | what |", "|---|---|---|---|---|---|"]
    lines += [f"| `{v.name}` | {jf:.3f} | {j:.3f} | {f:.3f} | {ms:.0f} | {v.description} |" for v, jf, j, f, ms in rows]
    lines += ["", "Per sequence (J&F):", "", "| sequence | " + " | ".join(v.name for v in variants) + " |",
              "|---|" + "---|" * len(variants)]
    for seq in sequences:
        lines.append(f"| {seq} | " + " | ".join(f"{per_seq[v.name].get(seq, float('nan')):.3f}" for v in variants) + " |")
    for title, table in [("J", per_seq_j), ("F", per_seq_f)] if detail else []:
        lines += ["", f"Per sequence ({title}):", "", "| sequence | " + " | ".join(v.name for v in variants) + " |",
                  "|---|" + "---|" * len(variants)]
        for seq in sequences:
            lines.append(f"| {seq} | " + " | ".join(f"{table[v.name].get(seq, float('nan')):.3f}" for v in variants) + " |")
    oracles = [v.name for v in variants if v.name.startswith("oracle")]
    if detail and oracles:
        # The second ceiling: the oracle prompt variant with the best mean.
        best = max(oracles, key=lambda name: np.mean([per_seq[name][s] for s in sequences]))
        lines += ["", f"Fraction of the best oracle's (`{best}`) mean J&F, and in brackets the lowest fraction of its "
                  "per-sequence J&F:", ""]
        for v in variants:
            mean = np.mean([per_seq[v.name][s] for s in sequences]) / np.mean([per_seq[best][s] for s in sequences])
            lowest = min(sequences, key=lambda s: per_seq[v.name][s] / per_seq[best][s])
            lines.append(f"- `{v.name}` {mean:.3f} ({lowest} {per_seq[v.name][lowest] / per_seq[best][lowest]:.2f})")
    if oracle:
        lines += ["", "Fraction of the oracle's (`oracle_fast`) mean J&F, and in brackets the lowest fraction of "
                  "its per-sequence J&F:", ""]
        for v in variants:
            mean = np.mean([per_seq[v.name][s] for s in sequences]) / np.mean([oracle[s] for s in sequences])
            lowest = min(sequences, key=lambda s: per_seq[v.name][s] / oracle[s])
            lines.append(f"- `{v.name}` {mean:.3f} ({lowest} {per_seq[v.name][lowest] / oracle[lowest]:.2f})")
    table = "\n".join(lines) + "\n"
    text = doc.read_text() if doc.exists() else ""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start in text and end in text:
        text = text[: text.index(start) + len(start)] + "\n" + table + text[text.index(end):]
    else:
        text += f"\n{start}\n{table}{end}\n"
    with atomic_write(doc, "w") as f:
        f.write(text)


def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.is_file():
        raise InputError("missing: run this variant first (without --table-only)", path)
    with open(path) as f:
        return list(csv.DictReader(f))


if __name__ == "__main__":
    sys.exit(run_command(main, prog="samtrack.eval.ablation"))
