"""The encoder's inference backends: OpenVINO gives onnxruntime's embeddings; ``auto`` takes
OpenVINO where installed and says so; options that cannot apply are refused."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from samtrack.config import load_config
from samtrack.errors import ConfigError
from samtrack.segmenters import backends, build_segmenter
from samtrack.segmenters.mobilesam_onnx import MobileSamOnnx

from .conftest import load_frame


def test_auto_takes_openvino_where_installed(monkeypatch):
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    assert backends.pick_backend("auto") == ("openvino", "auto: OpenVINO is installed")
    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    assert backends.pick_backend("auto") == ("onnxruntime", "auto: OpenVINO is not installed")
    assert backends.pick_backend("onnxruntime") == ("onnxruntime", "")
    with pytest.raises(ConfigError, match=r"pip install 'samtrack\[openvino\]'"):
        backends.pick_backend("openvino")


def test_backend_is_refused_for_pytorch_segmenters():
    config = load_config("samtrack", ["segmenter.name=mobilesam", "segmenter.backend=openvino"])
    with pytest.raises(ConfigError, match="segmenter.backend applies to mobilesam-onnx"):
        build_segmenter(config.segmenter)


def test_openvino_encoder_gives_onnxruntimes_embedding(mobilesam_checkpoint, davis16):
    if os.environ.get("SAMTRACK_REQUIRE_OPENVINO") != "1":
        if not backends.openvino_installed():
            pytest.skip("the openvino extra is not installed")
    image = load_frame(davis16, "bear", 0)
    out = {}
    for backend in ("onnxruntime", "openvino"):
        segmenter = MobileSamOnnx(mobilesam_checkpoint / "encoder.onnx", mobilesam_checkpoint / "sam.onnx", backend=backend)
        out[backend] = segmenter.encode(image).features
    assert out["openvino"].shape == out["onnxruntime"].shape == (1, 256, 64, 64)
    # Measured 3e-6 on this frame (the embedding's values reach about 1); a tenth of SAM's
    # mask-logit tolerance elsewhere in the tests.
    assert np.abs(out["openvino"] - out["onnxruntime"]).max() < 1e-4


def test_auto_backend_is_logged(mobilesam_checkpoint, monkeypatch):
    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    lines = []
    config = load_config("samtrack", [f"segmenter.checkpoint={mobilesam_checkpoint}"])
    segmenter = build_segmenter(config.segmenter, log=lines.append)
    assert segmenter.backend == "onnxruntime"
    assert ("segmenter mobilesam-onnx: encoder on onnxruntime (auto: OpenVINO is not installed), frames padded to the "
            "square (auto: a --checkpoint pair is fixed to the square)") in lines


def test_openvino_is_loaded_without_its_telemetry():
    """Importing OpenVINO through us sends nothing and forks nothing (its conversion tools fall back
    to their no-op telemetry stub), and leaves the rest of OpenVINO, and the telemetry package for
    the user's own import, as usual. In a fresh interpreter: this test process may have loaded it."""
    if os.environ.get("SAMTRACK_REQUIRE_OPENVINO") != "1" and not backends.openvino_installed():
        pytest.skip("the openvino extra is not installed")
    probe = (
        "import multiprocessing, sys\n"
        "from samtrack.segmenters.backends import import_openvino\n"
        "ov = import_openvino()\n"
        "import openvino.tools.ovc.utils as tools\n"
        "print(tools.tm.__name__, 'openvino_telemetry' in sys.modules, len(multiprocessing.active_children()),\n"
        "      callable(ov.convert_model))\n"
        "import openvino_telemetry\n"
        "print('importable')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["openvino.tools.ovc.telemetry_stub", "False", "0", "True", "importable"]
