"""Segmenter timings side by side in one process (these machines are noisy), on a real frame:
encoders (ONNX on onnxruntime and on OpenVINO, padded to the square and unpadded; PyTorch padded
and unpadded),
and decoder time per frame with
many objects, every object's pass decoded in one batch against one by one.

    python -m samtrack.eval.segmenter_bench --frame ../shared/data/davis2016/JPEGImages/480p/bear/00000.jpg \\
        --objects 1 4 16 --segmenters mobilesam mobilesam-onnx

Encoders: each variant encodes the frame in turn, ``--repeats`` rounds, median reported.

Each object gets 8 positives and 1 negative at seeded random places, and runs the default
preset's decoder passes (positives, then positives + negatives with the first pass's logits).
For ``mobilesam-onnx`` the batched variant is our decoder exported to ONNX with a batch
dimension (:mod:`samtrack.segmenters.sam.export`, from the ``mobilesam-torch`` weights; needs the
torch extra once), against SAM's own single-prompt export. The variants run in turn,
``--repeats`` rounds each, and the median is reported; batched results are checked against
one-by-one results (largest logit difference).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..config import load_config
from ..decoding import DecodePasses, ObjectPrompt
from ..errors import InputError, SamtrackError
from ..segmenters import build_segmenter
from ..segmenters.base import DecodeOneByOne


class OneByOne(DecodeOneByOne):
    """A segmenter's own decode, one prompt set per call."""

    def __init__(self, segmenter) -> None:
        self.segmenter = segmenter
        self.name = segmenter.name

    def decode(self, *args, **kwargs):
        return self.segmenter.decode(*args, **kwargs)


@contextmanager
def _untimed(stage: str):
    yield


def prompts_for(n_objects: int, size: tuple[int, int], seed: int = 0) -> dict[int, ObjectPrompt]:
    rng = np.random.default_rng(seed)
    height, width = size
    objects = {}
    for obj_id in range(1, n_objects + 1):
        centre = rng.uniform([0.2 * width, 0.2 * height], [0.8 * width, 0.8 * height])
        positives = centre + rng.normal(0, 0.05 * width, (8, 2))
        negative = rng.uniform([0, 0], [width - 1, height - 1], (1, 2))
        xy = np.clip(np.concatenate([positives, negative]), 0, [width - 1, height - 1]).astype(np.float32)
        objects[obj_id] = ObjectPrompt(xy, np.array([1] * 8 + [0], np.int32))
    return objects


# Encoder variants: name -> config overrides.
ENCODERS = {
    "mobilesam-onnx": ["segmenter.name=mobilesam-onnx", "segmenter.backend=onnxruntime", "segmenter.unpadded=false"],
    "mobilesam-onnx (openvino)": ["segmenter.name=mobilesam-onnx", "segmenter.backend=openvino", "segmenter.unpadded=false"],
    "mobilesam-onnx unpadded": ["segmenter.name=mobilesam-onnx", "segmenter.backend=onnxruntime", "segmenter.unpadded=true"],
    "mobilesam-onnx unpadded (openvino)": ["segmenter.name=mobilesam-onnx", "segmenter.backend=openvino",
                                           "segmenter.unpadded=true"],
    "mobilesam (padded)": ["segmenter.name=mobilesam", "segmenter.unpadded=false"],
    "mobilesam (unpadded)": ["segmenter.name=mobilesam", "segmenter.unpadded=true"],
}


def bench_encoders(names: list[str], frame: np.ndarray, repeats: int, log) -> list[tuple[str, str, str, float]]:
    """Median encode time of each variant, encoding in turn."""
    segmenters = {n: build_segmenter(load_config("samtrack", ENCODERS[n]).segmenter, log=log) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    grids = {}
    for n, segmenter in segmenters.items():  # warm-up, and the embedding's grid
        grids[n] = segmenter.encode(frame).numpy().shape[-2:]
    for _ in range(repeats):
        for n, segmenter in segmenters.items():
            started = time.perf_counter()
            segmenter.encode(frame)
            times[n].append(time.perf_counter() - started)
    rows = []
    for n in names:
        gh, gw = grids[n]
        # SAM encoders downsample by 16: the grid says what size was encoded.
        rows.append((n, f"{16 * gw}x{16 * gh}", f"{gw}x{gh}", 1000 * statistics.median(times[n])))
        log(f"{n}: {rows[-1][-1]:.0f} ms")
    return rows


def bench(segmenter_name: str, frame: np.ndarray, counts: list[int], repeats: int, log) -> list[dict]:
    # One decoder call for all objects, whatever the device's default chunking.
    extra = ["segmenter.max_batch=1024"] if segmenter_name != "mobilesam-onnx" else []
    # The decoder runs on onnxruntime whatever the encoder's backend.
    config = load_config("samtrack", [f"segmenter.name={segmenter_name}", *extra])
    segmenter = build_segmenter(config.segmenter, log=log)
    if segmenter_name == "mobilesam-onnx":
        segmenter = _with_batched_onnx_decoder(segmenter, log)
    embedding = segmenter.encode(frame)
    variants = {"one-by-one": DecodePasses(OneByOne(segmenter), config.decode, _untimed),
                "batched": DecodePasses(segmenter, config.decode, _untimed)}
    rows = []
    for n in counts:
        objects = prompts_for(n, frame.shape[:2])
        times: dict[str, list[float]] = {v: [] for v in variants}
        outputs = {}
        for _ in range(repeats):
            for variant, passes in variants.items():  # alternate, so drift hits both alike
                started = time.perf_counter()
                outputs[variant] = passes.run(embedding, objects)
                times[variant].append(time.perf_counter() - started)
        row = {"segmenter": segmenter_name, "objects": n}
        for variant, samples in times.items():
            row[variant] = 1000 * statistics.median(samples)
        if "batched" in outputs:
            a, b = outputs["one-by-one"], outputs["batched"]
            row["same_objects"] = set(a) == set(b)
            row["max_logit_diff"] = max((float(np.abs(a[i].logits - b[i].logits).max()) for i in a if i in b), default=0.0)
        rows.append(row)
        log(str(row))
    return rows


def _read_frame(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read the frame ({type(exc).__name__})", path) from None


def _with_batched_onnx_decoder(segmenter, log):
    """The ONNX segmenter given a batched export of our decoder (in a temporary folder)."""
    import tempfile

    from .. import weights
    from ..segmenters.mobilesam_onnx import MobileSamOnnx
    from ..segmenters.sam.build import build_sam, cached_checkpoint
    from ..segmenters.sam.export import export_decoder

    onnx_dir = weights.resolve("mobilesam-onnx", None, log=log)
    model = build_sam("mobilesam-torch", cached_checkpoint("mobilesam-torch", log=log))
    with tempfile.TemporaryDirectory(prefix="samtrack-decoder-") as folder:  # the session keeps the graph
        export_decoder(model, Path(folder) / "sam_batched.onnx")
        return MobileSamOnnx(onnx_dir / "encoder.onnx", onnx_dir / "sam.onnx",
                             batched_decoder=Path(folder) / "sam_batched.onnx")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samtrack.eval.segmenter_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frame", required=True, help="an RGB frame (jpg/png)")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--segmenters", nargs="*", default=["mobilesam", "mobilesam-onnx"], help="decoder benchmarks (none: skip)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--encoders", nargs="*", default=list(ENCODERS), choices=list(ENCODERS),
                        help="encoder variants to time (none: skip)")
    args = parser.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    try:
        frame = _read_frame(Path(args.frame))
        encoder_rows = bench_encoders(args.encoders, frame, args.repeats, log)
        rows = [r for name in args.segmenters for r in bench(name, frame, args.objects, args.repeats, log=log)]
    except SamtrackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if encoder_rows:
        print("| encoder | input | embedding | ms |")
        print("|---|---|---|---|")
        for name, shape_in, shape_out, ms in encoder_rows:
            print(f"| {name} | {shape_in} | {shape_out} | {ms:.0f} |")
        print()
    print("| segmenter | objects | one-by-one ms | batched ms | speed-up | max logit diff |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        batched = r.get("batched")
        speedup = f"{r['one-by-one'] / batched:.2f}x" if batched else "-"
        diff = f"{r['max_logit_diff']:.1e}" if "max_logit_diff" in r else "-"
        print(f"| {r['segmenter']} | {r['objects']} | {r['one-by-one']:.1f} | {batched and f'{batched:.1f}' or '-'} | {speedup} | {diff} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
