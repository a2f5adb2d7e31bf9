"""How close to the machine's floor the encoder runs: its multiply-accumulates per frame,
counted from the model itself, against the fp32 throughput this machine measures on a plain
matrix product.

The count covers the layers that dominate a vision transformer (MatMul, Gemm, Conv and their
fused forms); element-wise work (norms, activations, softmax) is left out, as in the papers'
GMAC figures. One MAC is two floating-point operations.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> tuple[float, str]:
    """fp32 GFLOP/s of the best of ``repeats`` ``n x n`` matrix products, and what ran them: the
    ceiling the encoder is compared with. OpenVINO's CPU kernels where installed (forced to
    fp32: on CPUs with bf16 instructions its default would be bf16), which measured 449 GFLOP/s
    here against numpy's BLAS at 249; else numpy."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    try:
        import openvino as ov
        from openvino import opset13 as ops

        x = ops.parameter([n, n], np.float32)
        compiled = ov.Core().compile_model(ov.Model([ops.matmul(x, ops.constant(b), False, False)], [x]), "CPU",
                                           {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        run, name = (lambda: compiled(a)), "OpenVINO"
    except ImportError:
        run, name = (lambda: a @ b), "numpy"
    run()  # warm-up: thread pool start, page faults
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9, name


def onnx_macs(path: str | Path) -> float | None:
    """Multiply-accumulates of one run of an ONNX graph with static input shapes; None when a
    counted layer's shape stays symbolic after inference, even with the graph's constants folded
    (the traced unpadded exports need the folding), since a guess would misreport the rate.

    Raises:
        ImportError: the ``onnx`` package (in the ``samtrack[torch]`` extra) is missing.
    """
    import onnx

    macs = _count_macs(_with_shapes(onnx.load(str(path))))
    if macs is None:
        with tempfile.TemporaryDirectory(prefix="samtrack-macs-") as folder:
            folded = Path(folder) / "folded.onnx"
            _fold_constants(path, folded)
            macs = _count_macs(_with_shapes(onnx.load(str(folded))))
    return macs


def _fold_constants(path: str | Path, out: Path) -> None:
    """Write to ``out`` the graph as onnxruntime's basic optimiser leaves it: a traced export
    computes its reshape targets from ``Shape`` nodes, which shape inference cannot follow
    through the arithmetic, while constant folding turns them into numbers for static inputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _count_macs(model) -> float | None:
    from onnx import numpy_helper

    graph = model.graph
    shapes: dict[str, list[int]] = {}
    for value in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for init in graph.initializer:
        shapes[init.name] = list(numpy_helper.to_array(init).shape)
    total = 0.0
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm", "FusedMatMul"):
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            out = shapes.get(node.output[0])
            if not a or not b or not out:
                continue
            if None in a or None in b or None in out:
                return None
            trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
            k = a[-2] if trans_a else a[-1]
            total += float(np.prod(out)) * k
        elif node.op_type in ("Conv", "ConvTranspose"):
            weight, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            if not weight or not out:
                continue
            if None in weight or None in out:
                return None
            # Conv weight [Cout, Cin/groups, kh, kw]: each output element sums Cin/groups*kh*kw.
            per_output = float(np.prod(weight[1:]))
            total += float(np.prod(out)) * per_output
    return total


def _with_shapes(model):
    """``model`` with every tensor's shape inferred: dynamic input dimensions (the batch) set
    to 1, then onnxruntime's symbolic shape inference, which follows the Shape -> Gather ->
    Reshape chains of exported transformers that ONNX's own inference gives up on."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    return SymbolicShapeInference.infer_shapes(model, auto_merge=True)


def torch_macs(run) -> float:
    """Multiply-accumulates of ``run()``, a call into a PyTorch model, as counted by
    ``torch.utils.flop_counter`` (matrix products and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops() / 2


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def encoder_macs(segmenter, frame: np.ndarray) -> float | None:
    """The segmenter's multiply-accumulates to encode ``frame``: counted from its ONNX graph
    (``encoder_path``) or by running a PyTorch one under the flop counter; None when neither
    can be counted (``onnx`` not installed, an unknown plugin)."""
    path = getattr(segmenter, "encoder_graph", None)
    try:
        if path is not None:
            return onnx_macs(path)
        if getattr(segmenter, "device", None) is not None:
            return torch_macs(lambda: segmenter.encode(frame))
    except ImportError:
        return None
    return None


def encoder_line(macs: float | None, encoder_ms: float, peak_gflops: float) -> str:
    """``encoder: 38.8 GMAC/frame in 257 ms = 151 GMAC/s (302 GFLOP/s), 0.45 of the fp32 peak``."""
    if macs is None:
        return "encoder: GMAC not counted (needs the onnx package, and a graph whose shapes are static)"
    if encoder_ms <= 0:
        return f"encoder: {macs / 1e9:.1f} GMAC/frame (no encoder time: embeddings cached?)"
    rate = macs / (encoder_ms / 1e3) / 1e9
    return (f"encoder: {macs / 1e9:.1f} GMAC/frame in {encoder_ms:.0f} ms = {rate:.0f} GMAC/s ({2 * rate:.0f} GFLOP/s), "
            f"{2 * rate / peak_gflops:.2f} of the fp32 matmul peak")
