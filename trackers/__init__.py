"""Point trackers (installed as ``samtrack.trackers``): a protocol and its plugins.

A plugin is a module with a factory registered under a name; the factory gets the whole
:class:`~samtrack.config.TrackerConfig` (it reads its own section) and a ``log`` for what it
tells the user (weights fetched, device chosen).
"""
from __future__ import annotations

from typing import Callable

from .base import PointTracker, Tracks

Factory = Callable[..., PointTracker]
_REGISTRY: dict[str, Factory] = {}
# Trackers that need the samtrack[torch] extra and that re-detect points after occlusions.
LEARNED = ("cotracker3", "cotracker3-online")


def register(name: str) -> Callable[[Factory], Factory]:
    """Decorator for ``factory(config: TrackerConfig, log) -> PointTracker``."""

    def wrap(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def available() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def resolve_name(name: str) -> tuple[str, str]:
    """``auto`` -> (cotracker3 where PyTorch sees a CUDA device, else lk) and why; other names
    unchanged (with an empty reason)."""
    if name != "auto":
        return name, ""
    from samtrack.torch_models import cuda_available

    if cuda_available():
        return "cotracker3", "auto: CUDA device found"
    return "lk", "auto: no CUDA device"


def build_tracker(config=None, log: Callable[[str], None] = print) -> PointTracker:
    """Build the tracker ``config.name`` names (a TrackerConfig; None: the defaults)."""
    from samtrack.config import TrackerConfig
    from samtrack.errors import ConfigError

    config = TrackerConfig() if config is None else config
    _load_builtin()
    name, why = resolve_name(config.name)
    if name not in _REGISTRY:
        raise ConfigError(f"unknown tracker {config.name!r}; available: auto, {', '.join(sorted(_REGISTRY))}")
    if why:
        log(f"tracker {name} ({why})")
    return _REGISTRY[name](config, log)


def _load_builtin() -> None:
    # Imported lazily so that `import samtrack.trackers` stays cheap (and torch-free).
    from . import cotracker3, lk  # noqa: F401


__all__ = ["LEARNED", "PointTracker", "Tracks", "available", "build_tracker", "register", "resolve_name"]
