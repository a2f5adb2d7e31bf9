"""Encoder and decoder milliseconds per frame of every model in the PyTorch SAM registry
(:data:`samtrack.segmenters.sam.build.REGISTRY`), at each model's native input size, with random
weights (the same compute as the official ones), on the CPU and, where PyTorch sees one, on CUDA
in fp32 and fp16.

    python -m samtrack.eval.sam_family_bench [--models mobilesam edgesam] [--repeats 5] [--threads 2]

Each model runs as :class:`~samtrack.segmenters.sam_torch.SamTorch` prepares it for inference
(BatchNorms folded, channels-last). *Encoder*: one normalised, padded square input of the
model's size through the image encoder. *Decoder*: one prompt set (one positive point, plus
SAM's padding point) through the prompt encoder and mask decoder, all four low-res masks, no
upscaling. Models sharing an architecture (``mobilesam-torch``, ``edgesam-3x``) are timed once.
The models run in turn, ``--repeats`` rounds after a warm-up (so that the machine's drift hits
them alike), and the median is reported, with the range in the log; CUDA timings synchronise
the device. The load average is printed before and after: these machines are
shared, so a number means little without it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

# Published speeds, by registry name: (what was measured, source). Only what the papers or
# official READMEs state; none of them measured on a CPU like ours.
PUBLISHED: dict[str, tuple[str, str]] = {
    "mobilesam": ("encoder 8 ms + decoder 4 ms, one GPU",
                  "MobileSAM README (github.com/ChaoningZhang/MobileSAM)"),
    "repvit-sam": ("encoder 48.9 ms iPhone 12 / 44.8 ms M1 Pro Mac, decoder 11.6 / 11.8 ms (Core ML)",
                   "RepViT-SAM README (github.com/THU-MIG/RepViT/tree/main/sam)"),
    "edgesam": ("encoder + decoder 38.7 FPS iPhone 14, 164.3 FPS RTX 2080 Ti",
                "EdgeSAM README (github.com/chongzhou96/EdgeSAM)"),
}


@dataclass
class Row:
    model: str
    input: str
    params_m: float
    device: str
    precision: str
    encoder_ms: float
    decoder_ms: float


def _architectures(names: list[str] | None) -> dict[str, list[str]]:
    """First registry name of each architecture -> every name sharing it (same builder)."""
    from ..segmenters.sam.build import REGISTRY

    unknown = sorted(set(names or ()) - set(REGISTRY))
    if unknown:
        raise SystemExit(f"error: unknown model(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    groups: dict[object, list[str]] = {}
    for name, entry in REGISTRY.items():
        if names is None or name in names:
            groups.setdefault(entry.builder, []).append(name)
    return {members[0]: members for members in groups.values()}


def _timed(fn, sync) -> float:
    sync()
    started = time.perf_counter()
    fn()
    sync()
    return 1000 * (time.perf_counter() - started)


class _Subject:
    """One model prepared as SamTorch prepares it, with its input and one prompt set."""

    def __init__(self, name: str, device: str, precision: str) -> None:
        import torch

        from ..segmenters import Prompt, transforms
        from ..segmenters.sam.build import REGISTRY
        from ..segmenters.sam_torch import SamTorch

        model = REGISTRY[name].builder().eval()  # random weights: the official compute
        self.name = name
        self.params_m = sum(p.numel() for p in model.parameters()) / 1e6
        self.segmenter = SamTorch(model, name, device=device, unpadded=False, precision=precision, max_batch=1)
        inputs = self.segmenter.inputs
        # The encoder's own input (512 for EfficientViT-SAM-L); prompts live in the prompt frame.
        self.size = (inputs.encoder_size, inputs.encoder_size)
        gen = torch.Generator().manual_seed(0)
        self.image = torch.randn(1, 3, *self.size, generator=gen).to(device).contiguous(
            memory_format=self.segmenter._memory_format)
        # One positive click, laid out as the model's predictor lays it out (SAM's padding point,
        # or EfficientSAM's fixed 6 tokens).
        frame = (inputs.prompt_size, inputs.prompt_size)
        click = Prompt(points=np.array([[frame[1] * 0.4, frame[0] * 0.6]], np.float32), labels=np.array([1]))
        coords, labels, _ = transforms.batch_prompt_tokens([click], frame, spec=inputs)
        self.coords = torch.from_numpy(coords).to(device)
        self.labels = torch.from_numpy(labels).to(device)
        with torch.inference_mode(), self.segmenter._autocast():
            # HQ-SAM's decoder fuses the encoder's early features: timed as SamTorch runs it.
            self.embedding, self.early = self.segmenter.model.encode_with_early(self.image)
            self.image_pe = self.segmenter.model.prompt_encoder.get_dense_pe(tuple(self.embedding.shape[-2:]))
        self.encoder_ms: list[float] = []
        self.decoder_ms: list[float] = []

    def encode(self) -> None:
        self.segmenter.model.encode_with_early(self.image)

    def decode(self) -> None:
        self.segmenter.model.decode(self.embedding, self.coords, self.labels, image_pe=self.image_pe,
                                    early_features=self.early)


def bench_models(names: list[str], device: str, precision: str, repeats: int, log) -> list[Row]:
    """Median encoder and decoder times of each model; the models run in turn, round by round,
    so that the machine's drift hits them alike."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    subjects = [_Subject(name, device, precision) for name in names]
    with torch.inference_mode():
        for subject in subjects:  # warm-up (oneDNN / cuDNN pick their kernels)
            with subject.segmenter._autocast():
                subject.encode()
                subject.decode()
        for _ in range(repeats):
            for subject in subjects:
                with subject.segmenter._autocast():
                    subject.encoder_ms.append(_timed(subject.encode, sync))
                    subject.decoder_ms.append(_timed(subject.decode, sync))
    rows = []
    for s in subjects:
        rows.append(Row(s.name, f"{s.size[1]}x{s.size[0]}", s.params_m, device, precision,
                        statistics.median(s.encoder_ms), statistics.median(s.decoder_ms)))
        log(f"{s.name} {device} {precision}: encoder {rows[-1].encoder_ms:.1f} ms "
            f"({min(s.encoder_ms):.0f}-{max(s.encoder_ms):.0f}), decoder {rows[-1].decoder_ms:.2f} ms "
            f"({min(s.decoder_ms):.1f}-{max(s.decoder_ms):.1f})")
    del subjects
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def machine_line(threads: int | None) -> str:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"
            f"{gpu}")


def table(rows: list[Row], names: dict[str, list[str]]) -> str:
    lines = ["| model | input | params (M) | device | precision | encoder ms | decoder ms | published speed (source) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shown = " / ".join(names[r.model])
        published = PUBLISHED.get(r.model)
        pub = f"{published[0]} ({published[1]})" if published else "-"
        lines.append(f"| {shown} | {r.input} | {r.params_m:.1f} | {r.device} | {r.precision} | "
                     f"{r.encoder_ms:.1f} | {r.decoder_ms:.2f} | {pub} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samtrack.eval.sam_family_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="registry names (default: all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="PyTorch CPU threads (default: the runtime's)")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], help="default: cpu, and cuda when available")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    from ..torch_models import require_torch

    torch = require_torch("the SAM family benchmark")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices cuda: PyTorch sees no CUDA device")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    names = _architectures(args.models)
    load_before = os.getloadavg()
    rows = []
    for device in devices:
        for precision in (["fp32", "fp16"] if device == "cuda" else ["fp32"]):
            rows += bench_models(list(names), device, precision, args.repeats, log)
    load_after = os.getloadavg()
    print(f"machine: {machine_line(args.threads)}")
    print(f"load average (1, 5, 15 min): before {', '.join(f'{v:.2f}' for v in load_before)}; "
          f"after {', '.join(f'{v:.2f}' for v in load_after)}; median of {args.repeats} rounds")
    print()
    print(table(rows, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
