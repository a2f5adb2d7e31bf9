"""``samtrack eval`` (run and score benchmarks) and ``samtrack batch`` (many videos with their prompts)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, InputError
from .baselines import ORACLE_PROMPTS
from .jobs import add_runner_args


def add_eval_parser(sub: argparse._SubParsersAction, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("eval", help="run and score benchmarks (DAVIS 2016/2017; YouTube-VOS, MOSE submissions)")
    esub = p.add_subparsers(metavar="BENCHMARK", required=True)

    d = esub.add_parser("davis", help="semi-supervised DAVIS: run, score, write the official CSVs",
                        description="Run the pipeline on DAVIS sequences prompted by their first-frame "
                                    "annotation, then score the results as the official evaluator does.")
    _dataset_args(d)
    d.add_argument("--out", required=True, metavar="DIR", help="results/ PNGs, CSVs, runs.csv go here")
    d.add_argument("--resume", action="store_true", help="skip sequences already finished with the same config")
    d.add_argument("--method", choices=("samtrack", "oracle", "copy", "everything"), default="samtrack",
                   help="samtrack (the pipeline), or a reference point: oracle (prompts sampled from every "
                        "frame's ground truth, same sampler and decoding) or copy (the first mask on every frame); "
                        "or everything: DAVIS 2017 unsupervised (automatic masks of the first frame, at most 20 "
                        "objects; results for the official unsupervised evaluation, not scored here)")
    d.add_argument("--oracle-prompt", choices=ORACLE_PROMPTS, default="points",
                   help="with --method oracle, what is drawn from each frame's ground truth: points (the "
                        "sampler's), box (its box alone), box+points, points+mask (points and the previous "
                        "frame's ground truth as the mask prompt), box+points+mask, or multimask (points; the "
                        "best of SAM's outputs by IoU with the truth; needs --segmenter mobilesam) [points]")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    add_runner_args(d)
    add_config_args(d)
    d.set_defaults(handler=_davis)

    s = esub.add_parser("score", help="score any results folder (<DIR>/<seq>/%%05d.png) on DAVIS")
    s.add_argument("--results", required=True, metavar="DIR")
    _dataset_args(s)
    s.add_argument("--out", metavar="DIR", help="where to write the CSVs [the results folder]")
    s.set_defaults(handler=_score)

    y = esub.add_parser("youtubevos", help="YouTube-VOS 2018/2019: run and write the CodaLab submission zip",
                        description="Run the pipeline on a YouTube-VOS split, each object prompted by its mask "
                                    "where it is first annotated, and zip the results as the server expects.")
    y.add_argument("--root", required=True, metavar="PATH",
                   help="YouTube-VOS root (<split>/JPEGImages, <split>/Annotations, <split>/meta.json)")
    y.add_argument("--year", type=int, choices=(2018, 2019), default=2019, help="which release (names the zip) [2019]")
    y.add_argument("--all-frames", metavar="DIR",
                   help="folder of <video>/ with every frame (valid_all_frames/JPEGImages) to track on; "
                        "only the split's frames are written")
    _submission_args(y, add_config_args)
    y.set_defaults(handler=_submission, dataset="youtubevos")

    m = esub.add_parser("mose", help="MOSE: run and write the CodaLab submission zip",
                        description="Run the pipeline on a MOSE split, each object prompted by its first-frame "
                                    "mask, and zip the results as the server expects.")
    m.add_argument("--root", required=True, metavar="PATH", help="MOSE root (<split>/JPEGImages, <split>/Annotations)")
    _submission_args(m, add_config_args)
    m.set_defaults(handler=_submission, dataset="mose", year=None, all_frames=None)

    u = esub.add_parser("uvo", help="UVO v1.0 dense video: track everything, write YouTube-VIS results, score AP/AR",
                        description="Track everything (SAM's automatic masks on the first frame) on each UVO video, "
                                    "write the YouTube-VIS results and score them with the official video AP/AR.")
    u.add_argument("--annotations", required=True, metavar="JSON", help="UVO_video_val_dense.json (or any YouTube-VIS file)")
    u.add_argument("--frames", required=True, metavar="DIR", help="extracted frames: DIR/<file_names[i]> for every video")
    u.add_argument("--out", required=True, metavar="DIR", help="videos/<id>/, results.json, metrics.json, runs.csv")
    u.add_argument("--videos", nargs="+", metavar="ID", help="only these video ids (scored on them only)")
    u.add_argument("--max-objects", type=int, metavar="N", help="track at most N automatic masks per video [100]")
    u.add_argument("--areas", choices=("ytvis", "coco"), default="ytvis",
                   help="area ranges: ytvis (128^2 / 256^2, the official code's) or coco (32^2 / 96^2) [ytvis]")
    u.add_argument("--per-category", action="store_true",
                   help="match within categories (default: class-agnostic, UVO's open-world protocol)")
    u.add_argument("--resume", action="store_true", help="skip videos already finished with the same config")
    u.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_args(u)
    add_runner_args(u)
    u.set_defaults(handler=_uvo, everything=True)


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


def split_name(split: str) -> str:
    """The name a split's CSVs carry: ``val``, or a list file's stem."""
    return Path(split).stem if Path(split).suffix else split


def _output_folder(path: str | Path) -> Path:
    """``--out``, refused at once when it names a file (results go into a folder)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("exists and is not a folder", path)
    return path


def _davis(args: argparse.Namespace) -> int:
    from ..cli import stderr_logger, config_from_args
    from . import jobs, report, scoring
    from .runner import davis_fingerprint, davis_jobs, finished_run, write_runs_csv

    if args.method == "everything":
        return _davis_unsupervised(args)
    if args.oracle_prompt != "points":
        if args.method != "oracle":
            raise ConfigError(f"--oracle-prompt {args.oracle_prompt} needs --method oracle")
        args.method = f"oracle-{args.oracle_prompt}"  # names the run's fingerprint too
    config = config_from_args(args)
    v = config.video
    if (v.start, v.stride, v.max_frames) != (0, 1, None):
        # Every frame is scored, so every frame must be segmented.
        raise ConfigError("DAVIS scores every frame: video.start, stride and max_frames must keep their defaults")
    runner = jobs.runner_from_args(args)
    sequences = _sequences(args)
    out = _output_folder(args.out)
    split = split_name(args.split)
    report.check_plotting()  # before hours of running, not after
    model = config if args.method != "copy" else None
    fingerprint = davis_fingerprint(model, args.year, args.method)
    if args.resume:
        # A resume that mixes configs is refused before the model loads or old scores go.
        for seq in sequences:
            finished_run(out / "results" / seq, fingerprint, resume=True)
    # Scores are always recomputed from the PNGs, so old CSVs can never be mistaken for new ones.
    for stale in (out / f"global_results-{split}.csv", out / f"per-sequence_results-{split}.csv"):
        stale.unlink(missing_ok=True)
    log = stderr_logger(args.quiet)
    outcome = jobs.run_jobs(davis_jobs(args.root, sequences, args.year, out / "results", fingerprint, args.method),
                            model, runner, resume=args.resume, log=log, quiet=args.quiet)
    write_runs_csv(outcome.runs, out / f"runs-{split}.csv", outcome.failed)
    scored = [seq for seq in sequences if seq not in outcome.failed]
    if scored:
        result = scoring.score_results(out / "results", args.root, scored, args.year)
        scoring.write_csvs(result, out, split)
        report.write_report(result, outcome.runs, out / f"report-{split}.md", title=f"DAVIS {args.year} {split}",
                            failed=outcome.failed)
        print(scoring.format_table(result))
    print(report.runs_table(outcome.runs))
    print(f"-> {out}")
    return _failed(outcome, "scores are over the finished sequences only")


def _failed(outcome, consequence: str) -> int:
    """Exit code 0, or 1 with the failed videos named on stderr when some did not finish."""
    from .jobs import summary

    if not outcome.failed:
        return 0
    print(f"samtrack: {summary(outcome)}; {consequence}; run again with --resume to redo only those",
          file=sys.stderr)
    return 1


def _davis_unsupervised(args: argparse.Namespace) -> int:
    """DAVIS 2017 unsupervised: objects from the automatic masks, at most 20 per sequence (the
    benchmark's limit), results written as the official unsupervised evaluation reads them."""
    from ..cli import config_from_args, stderr_logger
    from . import jobs, report
    from .runner import davis_fingerprint, davis_jobs, finished_run, write_runs_csv

    if args.year != 2017:
        raise ConfigError("--method everything is DAVIS 2017's unsupervised protocol: use --year 2017")
    runner = jobs.runner_from_args(args)
    args.everything = True
    from ..cli import config_source

    source, note = config_source(args)
    # 20 unless the user asks for fewer (later overrides win)
    args.overrides = ["everything.max_objects=20", *args.overrides]
    config = config_from_args(args, [], source)
    if config.everything.max_objects > 20:
        raise ConfigError("DAVIS 2017 unsupervised takes at most 20 objects per sequence")
    sequences = _sequences(args)
    out = _output_folder(args.out)
    fingerprint = davis_fingerprint(config, args.year, args.method)
    if args.resume:
        for seq in sequences:
            finished_run(out / "results" / seq, fingerprint, resume=True)
    log = stderr_logger(args.quiet)
    if note:
        log(note)
    outcome = jobs.run_jobs(davis_jobs(args.root, sequences, args.year, out / "results", fingerprint, args.method),
                            config, runner, resume=args.resume, log=log, quiet=args.quiet)
    split = split_name(args.split)
    write_runs_csv(outcome.runs, out / f"runs-{split}.csv", outcome.failed)
    print(report.runs_table(outcome.runs))
    print(f"-> {out / 'results'} (score with davis2017-evaluation: python evaluation_method.py --task unsupervised "
          f"--results_path {out / 'results'})")
    return _failed(outcome, "the results folder lacks them")


def _score(args: argparse.Namespace) -> int:
    from . import scoring

    sequences = _sequences(args)
    out = _output_folder(args.out or args.results)
    result = scoring.score_results(args.results, args.root, sequences, args.year)
    paths = scoring.write_csvs(result, out, split_name(args.split))
    print(scoring.format_table(result))
    print("-> " + ", ".join(map(str, paths)))
    return 0


def _uvo(args: argparse.Namespace) -> int:
    from ..cli import config_from_args, config_source, stderr_logger
    from . import jobs, uvo
    from .runner import write_runs_csv

    extra = [] if args.max_objects is None else [f"everything.max_objects={args.max_objects}"]
    source, note = config_source(args)
    config = config_from_args(args, extra, source)
    # The annotations and frames are checked before the model loads.
    data = uvo.load_annotations(args.annotations)
    videos = uvo.select_videos(data, args.videos, args.annotations)
    frames = Path(args.frames)
    if not frames.is_dir():
        raise InputError("no such frames folder", frames)
    runner = jobs.runner_from_args(args)
    out = _output_folder(args.out)
    log = stderr_logger(args.quiet)
    if note:
        log(note)
    outcome = jobs.run_jobs(uvo.uvo_jobs(videos, frames, out, uvo.uvo_fingerprint(config)), config, runner,
                            resume=args.resume, log=log, quiet=args.quiet)
    write_runs_csv(outcome.runs, out / "runs.csv", outcome.failed)
    finished = [v for v in videos if str(v["id"]) not in outcome.failed]
    if finished:
        results = uvo.collect_results(out, finished)
        evaluation = uvo.score(data, results, finished, args.areas, args.per_category, args.annotations)
        uvo.write_outputs(out, results, evaluation, outcome.runs, {"areas": args.areas, "per_category": args.per_category})
        from . import vis_metrics

        print(vis_metrics.format_stats(evaluation.stats))
        print(f"-> {out / 'metrics.json'}")
    return _failed(outcome, "AP/AR are over the finished videos only")


# ---------------------------------------------------------------------- submissions
def _submission_args(p: argparse.ArgumentParser, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p.add_argument("--split", default="valid", metavar="NAME", help="split folder under the root [valid]")
    p.add_argument("--videos", nargs="+", metavar="VIDEO", help="only these videos (a partial submission)")
    p.add_argument("--out", required=True, metavar="DIR", help="Annotations/, runs CSV and the zip go here")
    p.add_argument("--resume", action="store_true", help="skip videos already finished with the same config")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_runner_args(p)
    add_config_args(p)


def _submission(args: argparse.Namespace) -> int:
    from ..cli import stderr_logger, config_from_args
    from . import jobs, report, youtubevos
    from .runner import finished_run, write_runs_csv

    benchmark = youtubevos.BENCHMARKS[f"youtubevos{args.year}" if args.dataset == "youtubevos" else args.dataset]
    config = config_from_args(args)
    runner = jobs.runner_from_args(args)
    out = _output_folder(args.out)
    # The dataset is checked before the model loads, so that a wrong path fails at once.
    videos = youtubevos.list_videos(args.root, args.split, benchmark, args.all_frames, args.videos)
    names = [v.name for v in videos]
    zip_path = out / f"{benchmark.name}-{args.split}.zip"
    # Tracking on every frame changes the results as a config change would: never mix the two.
    fingerprint = youtubevos.run_fingerprint(config, benchmark, args.all_frames)
    if args.resume:
        # A resume that mixes configs is refused before the model loads or the old zip goes.
        for video in names:
            finished_run(out / youtubevos.RESULTS / video, fingerprint, resume=True)
    # An archive from an earlier run must not pass for this run's if this one fails.
    zip_path.unlink(missing_ok=True)
    log = stderr_logger(args.quiet)
    (out / youtubevos.RESULTS).mkdir(parents=True, exist_ok=True)
    outcome = jobs.run_jobs(youtubevos.video_jobs(videos, out, fingerprint), config, runner, resume=args.resume,
                            log=log, quiet=args.quiet)
    write_runs_csv(outcome.runs, out / f"runs-{args.split}.csv", outcome.failed)
    print(report.runs_table(outcome.runs))
    if outcome.failed:
        return _failed(outcome, "no zip was written (the server needs every video)")
    youtubevos.write_submission(out, zip_path, names, benchmark)
    print(f"-> {zip_path} ({benchmark.title}, {len(names)} videos; upload to {benchmark.server})")
    return 0


# ---------------------------------------------------------------------- batch
def add_batch_parser(sub: argparse._SubParsersAction, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("batch", help="segment many videos, each with its prompts, from a manifest",
                       description="Segment every video of a manifest (JSON Lines or CSV rows of video, "
                                   "points|mask, out) as `samtrack run` does, into <out>/<row's out>/.")
    p.add_argument("manifest", metavar="MANIFEST", help="rows of video, points (clicks.json) or mask (PNG) "
                                                        "[, mask_frame], out; .jsonl or .csv (see README)")
    p.add_argument("--out", required=True, metavar="DIR", help="each row's results go into DIR/<its out>, "
                                                               "batch-runs.csv into DIR")
    p.add_argument("--resume", action="store_true", help="skip rows already finished with the same config and prompts")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_runner_args(p)
    add_config_args(p)
    p.set_defaults(handler=_batch)


def _batch(args: argparse.Namespace) -> int:
    from ..cli import check_replaceable, config_from_args, stderr_logger
    from . import batch, jobs, report
    from .runner import write_runs_csv

    config = config_from_args(args)
    runner = jobs.runner_from_args(args)
    items = batch.load_manifest(args.manifest)
    out = _output_folder(args.out)
    # Each row's folder is replaced whole on success: refuse one holding inputs or others' files.
    for item in items:
        check_replaceable(out / item.out, [item.video, item.prompt])
    log = stderr_logger(args.quiet)
    outcome = jobs.run_jobs(batch.batch_jobs(items, out, config), config, runner, resume=args.resume,
                            log=log, quiet=args.quiet)
    out.mkdir(parents=True, exist_ok=True)
    write_runs_csv(outcome.runs, out / "batch-runs.csv", outcome.failed)
    print(report.runs_table(outcome.runs))
    print(f"-> {out} ({len(outcome.runs)} of {len(items)} videos)")
    return _failed(outcome, "the others are finished")
