"""Inference backends for ONNX graphs on a CPU: onnxruntime (always installed) and OpenVINO
(the optional ``samtrack[openvino]`` extra), behind one small interface: feed float32 arrays by
input name, get the outputs in order.

``auto`` takes OpenVINO where it is installed: on this project's 2-core AVX-512 machine it runs
the MobileSAM encoder 1.36x faster than onnxruntime with equal outputs. OpenVINO is pinned to
fp32 inference: where a CPU lacks native bf16 it is emulated and about 20x slower.
"""
from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Literal, Mapping, Protocol, Sequence

import numpy as np

from samtrack.errors import ConfigError, WeightsError

Backend = Literal["auto", "openvino", "onnxruntime"]


class GraphSession(Protocol):
    """A loaded ONNX graph."""

    backend: str
    input_names: Sequence[str]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


class OnnxRuntimeSession:
    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # The encoder and decoder sessions each own a thread pool over the same cores, and run
        # in turn: a pool left spinning after its run steals the cores from the other one
        # (measured: two decodes right after an encode took 115 ms spinning, 96 ms not).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        # onnxruntime raises its own pybind exception types (InvalidProtobuf, NoSuchFile, ...),
        # which share no base class narrower than Exception.
        except Exception as exc:
            raise WeightsError(f"cannot load ONNX model ({' '.join(str(exc).split())})", path) from None
        self.inputs = self.session.get_inputs()
        self.input_names = [i.name for i in self.inputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, dict(feeds))


class OpenVinoSession:
    backend = "openvino"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        ov = import_openvino()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as exc:  # OpenVINO reports every load problem as a RuntimeError subclass
            raise WeightsError(f"cannot load ONNX model in OpenVINO ({' '.join(str(exc).split())[:300]})", path) from None
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.any_name for port in self.compiled.inputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        # Copies: the request's output buffers are reused by the next call.
        results = self.request.infer(dict(feeds))
        return [np.array(results[port]) for port in self.compiled.outputs]


def import_openvino() -> ModuleType:
    """``openvino`` as if its telemetry package were not installed.

    ``import openvino`` imports its model-conversion tools, and they send a usage event to Intel
    from a forked process unless the user opted out. A library embedded in an editor should not
    phone home or fork on its behalf: offline the fork waits on the network and, forked from a
    threaded process, can outlive it holding its stdout open (a pytest run piped to ``tail`` never
    ended). With ``openvino_telemetry`` unimportable for this one import, the tools fall back to
    their built-in no-op stub, as OpenVINO intends when the package is absent, and keep it for the
    process; everything else, ``convert_model`` included, loads as usual. An app that imported
    openvino first keeps its telemetry as the user set it.
    """
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    blocked = "openvino_telemetry" not in sys.modules  # the user's own import is theirs to keep
    if blocked:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # makes its import raise ImportError
    try:
        import openvino
    finally:
        if blocked:
            del sys.modules["openvino_telemetry"]
    return openvino


def openvino_installed() -> bool:
    try:
        import_openvino()
    except ImportError:
        return False
    return True


def pick_backend(requested: Backend) -> tuple[str, str]:
    """``auto`` -> openvino where installed, else onnxruntime, with the reason; an explicit
    ``openvino`` must be installed."""
    if requested == "onnxruntime":
        return "onnxruntime", ""
    if requested == "openvino":
        if not openvino_installed():
            raise ConfigError("segmenter.backend=openvino needs OpenVINO: pip install 'samtrack[openvino]'")
        return "openvino", ""
    if openvino_installed():
        return "openvino", "auto: OpenVINO is installed"
    return "onnxruntime", "auto: OpenVINO is not installed"


SESSIONS: dict[str, Callable[[Path, int | None], GraphSession]] = {
    "onnxruntime": OnnxRuntimeSession,
    "openvino": OpenVinoSession,
}


def open_session(path: Path, backend: str, threads: int | None = None) -> GraphSession:
    return SESSIONS[backend](Path(path), threads)
