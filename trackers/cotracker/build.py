"""The builder registry: model name -> window length and the weights it loads.

The official checkpoints (facebookresearch/co-tracker, CC BY-NC 4.0) are plain state_dicts; they
load with ``strict=True`` and ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from samtrack import torch_models, weights
from samtrack.errors import WeightsError

from .modeling import CoTrackerThree


@dataclass(frozen=True)
class CoTrackerEntry:
    window_len: int
    online: bool
    weights: str  # the samtrack.weights registry name of its checkpoint


REGISTRY: dict[str, CoTrackerEntry] = {
    # Trained on Kubric, then on real videos by pseudo-labelling ("scaled").
    "cotracker3-offline": CoTrackerEntry(60, online=False, weights="cotracker3-offline"),
    "cotracker3-online": CoTrackerEntry(16, online=True, weights="cotracker3-online"),
    # Kubric only ("baseline").
    "cotracker3-offline-kubric": CoTrackerEntry(60, online=False, weights="cotracker3-offline-kubric"),
    "cotracker3-online-kubric": CoTrackerEntry(16, online=True, weights="cotracker3-online-kubric"),
}


def entry(name: str) -> CoTrackerEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(f"unknown CoTracker model {name!r}; known: {', '.join(REGISTRY)}") from None


def build_cotracker(name: str, checkpoint: str | Path | None = None) -> CoTrackerThree:
    """Registered model ``name`` in eval mode; ``checkpoint`` (a state_dict file) loaded when given."""
    model = CoTrackerThree(window_len=entry(name).window_len).eval()
    if checkpoint is not None:
        torch_models.load_checkpoint(model, checkpoint, what=f"CoTracker3 ({name})")
    return model


def cached_checkpoint(name: str, log: weights.Log = weights.log_stderr) -> Path:
    """The checkpoint of ``name`` in the weights cache (downloaded on first use)."""
    spec = weights.get_spec(entry(name).weights)
    (wf,) = spec.files
    return weights.resolve(spec.name, None, log=log) / wf.name
