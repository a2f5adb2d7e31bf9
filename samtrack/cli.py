"""The ``samtrack`` command: ``run``, ``eval``, ``batch``, ``weights``, ``config``.

User mistakes end as one line on stderr and exit code 2 (3 for weights problems); only bugs
show a traceback.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NoReturn, Sequence, get_args

import yaml
from tqdm import tqdm

from . import __version__
from .config import DEFAULT_PRESET, LEARNED_TRACKER_PRESET, PRESETS, Config, Device, Override, SegmenterName, default_preset, load_config
from .trackers import LEARNED
from .errors import InputError, SamtrackError, one_line, show, show_path
from .fileio import list_folder, os_errors


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage mistake (told in one line), --help, --version
        return exc.code if isinstance(exc.code, int) else 2
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    with _terminate_cleanly():
        return run_command(args.handler, args)


def run_command(handler: Callable[..., int | None], *args: object, prog: str = "samtrack") -> int:
    """Call ``handler``; a user mistake becomes one line on stderr and its exit code."""
    try:
        return handler(*args) or 0
    except SamtrackError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return 143


class _Terminated(BaseException):
    """SIGTERM, raised where the program is, so that every ``with`` block cleans up."""


@contextmanager
def _terminate_cleanly() -> Iterator[None]:
    # Python's default for SIGTERM is to die at once, leaving staging and temp folders behind.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage mistake told in one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="samtrack", description="Zero-shot video object segmentation and tracking.")
    parser.add_argument("--version", action="version", version=f"samtrack {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")
    _add_run(sub)
    _add_bench(sub)
    _add_weights(sub)
    _add_config(sub)
    _add_app(sub)
    from .eval.commands import add_batch_parser, add_eval_parser

    add_eval_parser(sub, add_config_args)
    add_batch_parser(sub, add_config_args)
    return parser


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The options every command that runs the pipeline shares."""
    p.add_argument("--config", help=f"preset ({', '.join(PRESETS)}) or YAML file [{DEFAULT_PRESET}; "
                                    f"{LEARNED_TRACKER_PRESET} where PyTorch sees a CUDA GPU or with a learned --tracker]")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set reinit.every=4 (repeatable)")
    p.add_argument("--checkpoint", help="weights to use instead of the cache: a folder with encoder.onnx and sam.onnx "
                                        "(mobilesam-onnx), or a state_dict file such as mobile_sam.pt (mobilesam)")
    p.add_argument("--segmenter", choices=get_args(SegmenterName),
                   help="mobilesam-onnx (ONNX on OpenVINO or onnxruntime, the default) or a PyTorch SAM (pip install "
                        "'samtrack[torch]'): mobilesam, sam-vit-b/l/h, hq-sam-vit-b/l/h, light-hq-sam")
    p.add_argument("--device", choices=get_args(Device), help="PyTorch segmenters: where to run [auto: cuda, mps, else cpu]")
    p.add_argument("--tracker", choices=("auto", "lk", *LEARNED),
                   help="point tracker [auto: cotracker3 where PyTorch sees a CUDA device, else lk]; cotracker3 and "
                        "cotracker3-online need samtrack[torch] and load CC BY-NC 4.0 weights")
    p.add_argument("--tracker-checkpoint", metavar="PATH",
                   help="CoTracker3 state_dict file (scaled_offline.pth, scaled_online.pth, ...) instead of the cache")


def config_source(args: argparse.Namespace) -> tuple[str, str]:
    """``--config``, or the device's default preset and the line saying why (see
    :func:`~samtrack.config.default_preset`)."""
    if args.config is not None:
        return args.config, ""
    if getattr(args, "everything", False) and getattr(args, "tracker", None) in (None, "auto", "lk"):
        return EVERYTHING_PRESET, f"preset {EVERYTHING_PRESET} (--everything)"
    return default_preset(getattr(args, "tracker", None))


EVERYTHING_PRESET = "everything"


def _everything_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-objects", type=int, metavar="N",
                   help="with --everything: track at most N automatic masks [100]")


def config_from_args(args: argparse.Namespace, extra: Sequence[Override] = (), source: str | None = None) -> Config:
    """The config the options ask for; ``source`` is :func:`config_source`'s choice when the
    caller has made it already."""
    overrides: list[str | Override] = [*args.overrides, *extra]
    for option, key in (("segmenter", "segmenter.name"), ("device", "segmenter.device"), ("checkpoint", "segmenter.checkpoint"),
                        ("tracker", "tracker.name"), ("tracker_checkpoint", "tracker.cotracker.checkpoint")):
        if getattr(args, option, None):
            overrides.append(Override(f"--{option.replace('_', '-')}", key, getattr(args, option)))
    return load_config(source or config_source(args)[0], overrides)


# ---------------------------------------------------------------------- run
# Everything `samtrack run` writes into --out: an existing folder holding only these is a
# previous result, which a new run may replace.
# run.json: a samtrack batch row's record.
RESULT_ENTRIES = frozenset({"masks", "overlay.mp4", "tracks.json", "config.yaml", "matte", "cutout", "coco_rle.json",
                            "instances.json", "run.json"})


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="segment and track objects through a video",
                       description="Segment and track objects through a video file or a folder of frames.")
    p.add_argument("input", help="video file (mp4, mov, avi, webm, mkv) or folder of frames")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--points", metavar="JSON", help="clicks.json with objects' points/boxes (see README)")
    prompt.add_argument("--mask", metavar="PNG", help="mask of the objects (binary, or palette with object ids)")
    prompt.add_argument("--everything", action="store_true",
                        help="track everything: SAM's automatic masks on the first processed frame are the objects")
    p.add_argument("--mask-frame", type=int, metavar="N", help="frame the --mask belongs to [0]")
    _everything_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="results folder (an earlier result there is replaced on success)")
    add_config_args(p)
    p.add_argument("--start", type=int, help="first frame to process")
    p.add_argument("--stride", type=int, help="process every N-th frame")
    p.add_argument("--max-frames", type=int, help="process at most N frames")
    p.add_argument("--longest-side", type=int, help="resize frames to this longest side for processing")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--export", action="append", default=[], metavar="FORMATS",
                   help="also write these formats, comma-separated or repeated: matte-png, matte-ffv1, matte-luma, "
                        "cutout-png, cutout-webm, cutout-mov, coco, or all (see README, Exports)")
    p.add_argument("--feather", type=float, default=0.0, metavar="PX", help="soften matte and cut-out edges over PX pixels")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from .api import VideoPredictor
    from .outputs import StagedOutputDir
    from .prompts import load_clicks, load_mask_prompt
    from .results import open_state, write_results

    extra = [Override(f"--{key.replace('_', '-')}", f"video.{key}", value) for key, value in
             (("start", args.start), ("stride", args.stride), ("max_frames", args.max_frames),
              ("longest_side", args.longest_side)) if value is not None]
    if args.no_overlay:
        extra.append(Override("--no-overlay", "output.overlay", False))
    extra += _everything_overrides(args)
    source, preset_note = config_source(args)
    config = config_from_args(args, extra, source)

    # Everything the user gave us is checked before any model is loaded or file written.
    prompt_path = Path(args.points or args.mask or args.input)
    if args.points and args.mask_frame is not None:
        raise SamtrackError("--mask-frame goes with --mask; clicks.json gives each prompt's frame itself")
    if args.everything:
        objects = []
    else:
        objects = load_clicks(prompt_path) if args.points else load_mask_prompt(prompt_path, args.mask_frame or 0)
    from .export import parse_formats

    # Label PNGs and the overlay are run's own outputs already.
    formats = [f for f in parse_formats(args.export) if f not in ("labels", "overlay")]
    if args.feather < 0:
        raise SamtrackError(f"--feather must be >= 0, got {args.feather}")
    state = open_state(args.input, config)
    if objects:
        state.add_objects(objects, prompt_path)
    out = Path(args.out)
    check_replaceable(out, [Path(args.input), prompt_path])
    log = stderr_logger(args.quiet)
    if preset_note:
        log(preset_note)  # the device's default tracker and preset, said at start
    predictor = VideoPredictor.from_config(config, log=log)
    first_scores = predictor.add_everything(state, log=log) if args.everything else {}
    if args.everything and not first_scores:
        raise InputError(f"no object found on frame {state.frame_indices[0]} (see everything.automask)", args.input)
    objects = [o for o in state.objects.values()]
    names = {o.obj_id: o.name for o in objects}

    started = time.perf_counter()
    with StagedOutputDir(out) as staging, tqdm(total=len(state.frame_indices), unit="frame", desc="samtrack",
                                               file=sys.stderr, disable=args.quiet) as progress:
        n = write_results(predictor, state, names, staging, lambda: progress.update(1),
                          formats=formats, feather=args.feather, first_scores=first_scores)
    elapsed = time.perf_counter() - started

    stages = ", ".join(f"{k} {v:.0f}" for k, v in predictor.timings.per_frame(n).items())
    print(f"samtrack: {n} frames, {len(objects)} object(s), {n / elapsed:.2f} fps -> {out}")
    print(f"  ms/frame: {stages}")
    return 0


# ---------------------------------------------------------------------- bench
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time the pipeline per stage on a video (nothing is written)",
                       description="Run the pipeline on a video prompted by a mask and report milliseconds per "
                                   "frame per stage, the cost of everything but the encoder relative to the "
                                   "encoder, and peak resident memory.")
    p.add_argument("input", help="video file or folder of frames")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--mask", metavar="PNG", help="mask of the objects on --mask-frame")
    prompt.add_argument("--everything", action="store_true", help="objects from SAM's automatic masks on the first frame")
    p.add_argument("--mask-frame", type=int, default=0, metavar="N")
    _everything_args(p)
    p.add_argument("--max-frames", type=int, help="time at most N frames")
    add_config_args(p)
    p.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from .api import InferenceState, VideoPredictor
    from .eval import compute
    from .prompts import load_mask_prompt
    from .timing import PeakMemory
    from .video import resize_longest_side

    extra = [Override("--max-frames", "video.max_frames", args.max_frames)] if args.max_frames is not None else []
    config = config_from_args(args, extra + _everything_overrides(args))
    state = InferenceState.open(args.input, config.video)
    if not args.everything:
        state.add_objects(load_mask_prompt(Path(args.mask), args.mask_frame), args.mask)
    predictor = VideoPredictor.from_config(config, log=stderr_logger(False))
    if args.everything:
        predictor.add_everything(state, log=stderr_logger(False))
        automask_s = predictor.timings.per_frame(1).pop("automask", 0.0) / 1000
        predictor.timings.reset()
        print(f"automatic masks: {automask_s:.2f} s on frame {state.frame_indices[0]}")
    objects = list(state.objects.values())
    # The machine's floor, measured before the run rather than during it.
    peak, peak_by = compute.matmul_peak_gflops()
    started = time.perf_counter()
    with PeakMemory() as memory:
        n = sum(1 for _ in predictor.segment_video(state))
    elapsed = time.perf_counter() - started
    stages = predictor.timings.per_frame(n)
    encoder = stages.get("encoder", 0.0)
    rest = sum(v for k, v in stages.items() if k != "encoder")
    segmenter = predictor.pipeline.segmenter
    frame = resize_longest_side(state.reader.read(state.frame_indices[0]), config.video.longest_side)
    grid = segmenter.encode(frame).features.shape[-2:]
    runs_on = getattr(segmenter, "backend", None) or getattr(segmenter, "device", "?")
    info = state.reader.info
    print(f"{n} frames, {len(objects)} object(s), {n / elapsed:.2f} fps, peak RSS {memory.peak_mb:.0f} MB")
    print(f"  machine: {compute.cpu_count()} CPU cores, fp32 matmul peak {peak:.0f} GFLOP/s ({peak_by}, 2048x2048)")
    print(f"  segmenter: {segmenter.name} on {runs_on}, encoder input {16 * grid[1]}x{16 * grid[0]} "
          f"for {info.width}x{info.height} frames")
    for stage, ms in stages.items():
        print(f"  {stage:10s} {ms:8.1f} ms/frame")
    ratio = f"{rest / encoder:.2f}" if encoder else "n/a (no encoder time: embeddings cached?)"
    print(f"  everything but the encoder: {rest:.1f} ms/frame = {ratio} x encoder")
    print(f"  {compute.encoder_line(compute.encoder_macs(segmenter, frame), encoder, peak)}")
    return 0


def _everything_overrides(args: argparse.Namespace) -> list[Override]:
    if getattr(args, "max_objects", None) is None:
        return []
    if not args.everything:
        raise SamtrackError("--max-objects goes with --everything")
    return [Override("--max-objects", "everything.max_objects", args.max_objects)]


def check_replaceable(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an ``--out`` that a successful run must not replace, since the whole folder goes:
    a file, a folder holding one of ``inputs``, or a folder with entries samtrack does not write."""
    with os_errors(out, doing="cannot use as the results folder"):
        _check_replaceable_folder(out, inputs)


def _check_replaceable_folder(out: Path, inputs: Sequence[Path]) -> None:
    if not out.exists():
        # The folder is made after the model loads; a parent that is a file must fail now.
        parent = next(p for p in out.absolute().parents if p.exists())
        if not parent.is_dir():
            raise InputError(f"cannot create the results folder: {show_path(parent)} is not a folder", out)
        return
    if not out.is_dir():
        raise InputError("exists and is not a folder", out)
    target = out.resolve()
    for path in inputs:
        resolved = path.resolve()
        if resolved == target or target in resolved.parents:
            raise InputError(f"holds the input {show_path(path)}; the results replace this whole folder, choose another --out", out)
    foreign = sorted(p.name for p in list_folder(out) if p.name not in RESULT_ENTRIES)
    if foreign:
        raise InputError(f"holds {show(foreign[0])}, which samtrack did not write; the results replace this whole folder, "
                         "choose another --out", out)


def stderr_logger(quiet: bool) -> Callable[[str], None]:
    def log(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr)

    return log


# ---------------------------------------------------------------------- weights
def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list, fetch, import, convert or locate model weights")
    wsub = p.add_subparsers(metavar="ACTION", required=True)
    wsub.add_parser("list", help="models and whether they are cached").set_defaults(handler=_weights_list)
    f = wsub.add_parser("fetch", help="download and verify a model into the cache (a derived model is converted)")
    f.add_argument("name")
    f.set_defaults(handler=_weights_fetch)
    c = wsub.add_parser("convert", help="convert a model into the one derived from it (mobilesam-onnx -> mobilesam-torch)",
                        description="Convert a model's weights into the model derived from it, in the cache: "
                                    "mobilesam-onnx becomes mobilesam-torch (needs PyTorch).")
    c.add_argument("name", help="the model to convert from, e.g. mobilesam-onnx")
    c.add_argument("--checkpoint", metavar="DIR", help="convert the files in DIR instead of the cached model")
    c.set_defaults(handler=_weights_convert)
    i = wsub.add_parser("import", help="verify and copy a downloaded file into the cache")
    i.add_argument("file")
    i.add_argument("--name", default="mobilesam-onnx")
    i.set_defaults(handler=_weights_import)
    w = wsub.add_parser("path", help="print the cached model's folder")
    w.add_argument("name")
    w.set_defaults(handler=_weights_path)


def _weights_list(args: argparse.Namespace) -> int:
    from . import weights

    models = weights.list_models()
    name_width = max(len(spec.name) for spec in models)
    licence_width = max(len(spec.licence) for spec in models)
    for spec in models:
        try:
            directory = weights.cached_path(spec.name)
            status = "cached"
        except SamtrackError:
            directory, status = None, "not cached"
        size = spec.size
        if size is None and directory is not None:  # pinned on first download, or converted
            size = sum((directory / wf.name).stat().st_size for wf in spec.files)
        if size is not None:
            shown = f"{size / 1e6:.1f} MB"
        else:
            shown = "unknown until converted" if spec.derived_from else "unknown until first download"
        print(f"{spec.name:{name_width}s} {shown:29s} {spec.licence:{licence_width}s} {status:11s} {spec.source}")
    print(f"cache: {weights.cache_dir()}")
    return 0


def _weights_fetch(args: argparse.Namespace) -> int:
    from . import weights

    print(weights.fetch(args.name, log=stderr_logger(False)))
    return 0


def _weights_convert(args: argparse.Namespace) -> int:
    from . import weights

    print(weights.convert(args.name, args.checkpoint, log=stderr_logger(False)))
    return 0


def _weights_import(args: argparse.Namespace) -> int:
    from . import weights

    print(weights.import_file(args.name, args.file))
    return 0


def _weights_path(args: argparse.Namespace) -> int:
    from . import weights

    print(weights.cached_path(args.name))
    return 0


# ---------------------------------------------------------------------- app
def _add_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="the interactive web app: click, propagate, correct, export",
                       description="Start the local web app (needs samtrack[app]) and open it in the browser.")
    p.add_argument("video", nargs="*", help="video files or frame folders to open")
    p.add_argument("--out", default="samtrack-app", metavar="DIR", help="where exports and uploads go [./samtrack-app]")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1: this machine only]")
    p.add_argument("--port", type=int, default=8765, help="port [8765; 0: any free one]")
    p.add_argument("--allow-remote", action="store_true", help="allow a --host other machines can reach (a token is printed)")
    p.add_argument("--no-browser", action="store_true", help="do not open the browser")
    p.add_argument("--max-upload-mb", type=float, default=1024, metavar="MB", help="largest video the page may upload [1024]")
    add_config_args(p)
    p.set_defaults(handler=_app)


def _app(args: argparse.Namespace) -> int:
    try:
        from .app.server import serve
    except ImportError as exc:
        raise SamtrackError(f"samtrack app needs the app extra ({exc.name} is missing): pip install 'samtrack[app]'") from None
    from .api import VideoPredictor

    source, note = config_source(args)
    config = config_from_args(args, source=source)
    log = stderr_logger(False)

    def predictor() -> VideoPredictor:
        if note:
            log(note)
        return VideoPredictor.from_config(config, log=log)

    serve(predictor, args.video, args.out, host=args.host, port=args.port, allow_remote=args.allow_remote,
          open_browser=not args.no_browser, max_upload_mb=args.max_upload_mb, log=log)
    return 0


# ---------------------------------------------------------------------- config
def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the effective config as YAML")
    add_config_args(p)
    p.set_defaults(handler=lambda a: print(yaml.safe_dump(config_from_args(a).to_dict(), sort_keys=False), end=""))


if __name__ == "__main__":
    sys.exit(main())
