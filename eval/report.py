"""A readable benchmark report: markdown tables and one per-frame J plot per sequence."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import SamtrackError
from ..outputs import atomic_write
from .runner import SequenceRun
from .scoring import GLOBAL_COLUMNS, ScoreResult


def check_plotting() -> None:
    """Fail at once when the report's plots cannot be drawn (matplotlib is an optional extra)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise SamtrackError("the report's plots need matplotlib: pip install 'samtrack[report]'")


def runs_table(runs: Sequence[SequenceRun]) -> str:
    """Speed and memory per sequence and overall, as aligned text."""
    rows = [f"{'Sequence':20s} {'Frames':>6s} {'FPS':>6s} {'PeakMB':>7s}"]
    for r in runs:
        rows.append(f"{r.sequence:20s} {r.frames:6d} {r.fps:6.2f} {r.peak_rss_mb:7.0f}")
    frames = sum(r.frames for r in runs)
    seconds = sum(r.seconds for r in runs)
    peak = max((r.peak_rss_mb for r in runs), default=0.0)
    rows.append(f"{'all':20s} {frames:6d} {frames / seconds if seconds else float('nan'):6.2f} {peak:7.0f}")
    return "\n".join(rows)


def write_report(result: ScoreResult, runs: Sequence[SequenceRun], path: str | Path, title: str,
                 failed: Mapping[str, str] | None = None) -> Path:
    """Write ``path`` (markdown) and ``<stem>-plots/<seq>.png`` (per-frame J and F); sequences in
    ``failed`` (name -> reason) are listed as failed, not scored."""
    path = Path(path)
    plots = path.with_name(path.stem + "-plots")
    plots.mkdir(parents=True, exist_ok=True)
    speed = {r.sequence: r for r in runs}
    measures = result.global_measures()
    lines = [f"# {title}", "", "| " + " | ".join(GLOBAL_COLUMNS) + " |", "|" + "---|" * len(GLOBAL_COLUMNS),
             "| " + " | ".join(f"{measures[c]:.3f}" for c in GLOBAL_COLUMNS) + " |", "",
             "| Sequence | J&F | J | F | J-Decay | frames | FPS | peak MB |", "|---|---|---|---|---|---|---|---|"]
    for obj in result.objects:
        j, f = obj.j_stats, obj.f_stats
        run = speed.get(obj.sequence)
        fps = f"{run.fps:.2f}" if run else ""
        mem = f"{run.peak_rss_mb:.0f}" if run else ""
        lines.append(f"| {obj.name} | {(j.mean + f.mean) / 2:.3f} | {j.mean:.3f} | {f.mean:.3f} | {j.decay:.3f} | "
                     f"{len(obj.frames)} | {fps} | {mem} |")
    if failed:
        lines += ["", f"Failed, not scored ({len(failed)}; the scores above leave them out):", ""]
        lines += [f"- {name}: {reason}" for name, reason in failed.items()]
    lines += ["", "Per-frame J and F (first and last frame excluded, as in the official protocol):", ""]
    for seq in dict.fromkeys(o.sequence for o in result.objects):
        image = _plot_sequence(result, seq, plots / f"{seq}.png")
        lines.append(f"![{seq}]({image.relative_to(path.parent).as_posix()})")
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _plot_sequence(result: ScoreResult, seq: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.4), dpi=100)
    for obj in (o for o in result.objects if o.sequence == seq):
        x = np.arange(1, len(obj.j) + 1)
        ax.plot(x, obj.j, label=f"J obj {obj.object_id}")
        ax.plot(x, obj.f, "--", alpha=0.6, label=f"F obj {obj.object_id}")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("frame")
    ax.set_title(seq)
    ax.legend(loc="lower left", fontsize=7, ncol=4)
    fig.tight_layout()
    with atomic_write(out) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return out
