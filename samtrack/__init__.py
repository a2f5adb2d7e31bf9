"""samtrack: zero-shot video object segmentation and tracking (point tracking meets SAM)."""
from __future__ import annotations

__version__ = "0.1.0"

from .config import Config, load_config  # noqa: E402
from .errors import SamtrackError  # noqa: E402


def __getattr__(name: str):
    # The predictor pulls in onnxruntime and OpenCV; import it only when asked for.
    if name in {"VideoPredictor", "InferenceState"}:
        from . import api

        return getattr(api, name)
    if name == "FrameResult":
        from .pipeline import FrameResult

        return FrameResult
    raise AttributeError(name)


__all__ = ["Config", "load_config", "SamtrackError", "VideoPredictor", "InferenceState", "FrameResult"]
