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
The variants run in turn, ``--repeats`` rounds after a warm-up, and the median is reported; CUDA
timings synchronise the device. The load average is printed before and after: these machines are
shared, so a number means little without it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass

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


def bench_model(name: str, device: str, precision: str, repeats: int, log) -> Row:
    import torch

    from ..segmenters.sam.build import REGISTRY
    from ..segmenters.sam_torch import SamTorch

    model = REGISTRY[name].builder().eval()  # random weights: the official compute
    params = sum(p.numel() for p in model.parameters()) / 1e6
    segmenter = SamTorch(model, name, device=device, unpadded=False, precision=precision, max_batch=1)
    size = segmenter.model.prompt_encoder.input_image_size
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, *size, generator=gen).to(device).contiguous(memory_format=segmenter._memory_format)
    sam = segmenter.model
    grid = (size[0] // 16, size[1] // 16)
    coords = torch.tensor([[[size[1] * 0.4, size[0] * 0.6], [0.0, 0.0]]], device=device)
    labels = torch.tensor([[1, -1]], device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    with torch.inference_mode(), segmenter._autocast():
        embedding = sam.encode(image)
        image_pe = sam.prompt_encoder.get_dense_pe(grid)

        def encode() -> None:
            sam.encode(image)

        def decode() -> None:
            sam.decode(embedding, coords, labels, image_pe=image_pe)

        for fn in (encode, decode):  # warm-up (oneDNN / cuDNN pick their kernels)
            fn()
        enc, dec = [], []
        for _ in range(repeats):
            enc.append(_timed(encode, sync))
            dec.append(_timed(decode, sync))
    row = Row(name, f"{size[1]}x{size[0]}", params, device, precision, statistics.median(enc), statistics.median(dec))
    log(f"{name} {device} {precision}: encoder {row.encoder_ms:.1f} ms, decoder {row.decoder_ms:.2f} ms "
        f"(spread {min(enc):.0f}-{max(enc):.0f} ms)")
    del segmenter, sam, model, embedding
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


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
            for name in names:
                rows.append(bench_model(name, device, precision, args.repeats, log))
    load_after = os.getloadavg()
    print(f"machine: {machine_line(args.threads)}")
    print(f"load average (1, 5, 15 min): before {', '.join(f'{v:.2f}' for v in load_before)}; "
          f"after {', '.join(f'{v:.2f}' for v in load_after)}; median of {args.repeats} rounds")
    print()
    print(table(rows, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
