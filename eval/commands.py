"""``samtrack eval``: run and score benchmarks from the command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from ..errors import InputError


def add_eval_parser(sub: argparse._SubParsersAction, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("eval", help="run and score benchmarks (DAVIS 2016/2017)")
    esub = p.add_subparsers(metavar="BENCHMARK", required=True)

    d = esub.add_parser("davis", help="semi-supervised DAVIS: run, score, write the official CSVs",
                        description="Run the pipeline on DAVIS sequences prompted by their first-frame "
                                    "annotation, then score the results as the official evaluator does.")
    _dataset_args(d)
    d.add_argument("--out", required=True, metavar="DIR", help="results/ PNGs, CSVs, runs.csv go here")
    d.add_argument("--resume", action="store_true", help="skip sequences already finished with the same config")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_args(d)
    d.set_defaults(handler=_davis)

    s = esub.add_parser("score", help="score any results folder (<DIR>/<seq>/%%05d.png) on DAVIS")
    s.add_argument("--results", required=True, metavar="DIR")
    _dataset_args(s)
    s.add_argument("--out", metavar="DIR", help="where to write the CSVs [the results folder]")
    s.set_defaults(handler=_score)


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, metavar="PATH", help="DAVIS root (JPEGImages/, Annotations/, ImageSets/)")
    p.add_argument("--year", type=int, choices=(2016, 2017), default=2017)
    p.add_argument("--split", default="val", metavar="val|train|FILE",
                   help="ImageSets split, or a text file with one sequence per line [val]")
    p.add_argument("--sequences", nargs="+", metavar="SEQ", help="only these sequences (after --split)")


def _sequences(args: argparse.Namespace) -> list[str]:
    from . import davis

    names = davis.list_sequences(args.root, args.year, args.split)
    if args.sequences:
        unknown = sorted(set(args.sequences) - set(names))
        if unknown:
            raise InputError(f"sequence {unknown[0]!r} is not in split {args.split!r}", args.root)
        names = [n for n in names if n in args.sequences]
    return names


def _split_name(split: str) -> str:
    return Path(split).stem if Path(split).suffix else split


def _davis(args: argparse.Namespace) -> int:
    from ..api import VideoPredictor
    from ..cli import config_from_args
    from . import report, scoring
    from .runner import run_davis, write_runs_csv

    config = config_from_args(args)
    sequences = _sequences(args)
    out = Path(args.out)
    split = _split_name(args.split)
    # Scores are always recomputed from the PNGs, so old CSVs can never be mistaken for new ones.
    for stale in (out / f"global_results-{split}.csv", out / f"per-sequence_results-{split}.csv"):
        stale.unlink(missing_ok=True)
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    predictor = VideoPredictor.from_config(config, log=log)

    def progress(seq: str, n: int):
        bar = tqdm(total=n, desc=seq, unit="frame", file=sys.stderr, disable=args.quiet, leave=False)
        return lambda: bar.update(1)

    runs = run_davis(predictor, args.root, sequences, args.year, out / "results", resume=args.resume,
                     log=log, progress=progress)
    write_runs_csv(runs, out / f"runs-{split}.csv")
    result = scoring.score_results(out / "results", args.root, sequences, args.year)
    scoring.write_csvs(result, out, split)
    report.write_report(result, runs, out / f"report-{split}.md", title=f"DAVIS {args.year} {split}")
    print(scoring.format_table(result))
    print(report.runs_table(runs))
    print(f"-> {out}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from . import scoring

    sequences = _sequences(args)
    result = scoring.score_results(args.results, args.root, sequences, args.year)
    paths = scoring.write_csvs(result, args.out or args.results, _split_name(args.split))
    print(scoring.format_table(result))
    print("-> " + ", ".join(map(str, paths)))
    return 0
