"""Point trackers (installed as ``samtrack.trackers``): a protocol and its plugins."""
from __future__ import annotations

from typing import Any, Callable

from .base import PointTracker, Tracks

_REGISTRY: dict[str, Callable[..., PointTracker]] = {}


def register(name: str) -> Callable[[Callable[..., PointTracker]], Callable[..., PointTracker]]:
    """Class decorator that makes a tracker buildable by name from configs."""

    def wrap(factory: Callable[..., PointTracker]) -> Callable[..., PointTracker]:
        _REGISTRY[name] = factory
        return factory

    return wrap


def available() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def build_tracker(name: str, **params: Any) -> PointTracker:
    """Build the tracker registered as ``name`` with its own keyword parameters."""
    _load_builtin()
    if name not in _REGISTRY:
        from samtrack.errors import ConfigError

        raise ConfigError(f"unknown tracker {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**params)


def _load_builtin() -> None:
    # Imported lazily so that `import samtrack.trackers` stays cheap.
    from . import lk  # noqa: F401


__all__ = ["PointTracker", "Tracks", "register", "available", "build_tracker"]
