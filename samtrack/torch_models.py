"""Plumbing every PyTorch model shares (segmenters and trackers): the optional import, the
choice of device, and strict, code-free checkpoint loading.

torch is the optional ``samtrack[torch]`` extra; importing this module never needs it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError, WeightsError
from .fileio import check_readable


def require_torch(purpose: str = "the PyTorch models") -> Any:
    """The ``torch`` module, or a one-line error naming the extra to install."""
    try:
        import torch
    except ImportError:
        raise ConfigError(f"{purpose} need PyTorch: pip install 'samtrack[torch]'") from None
    return torch


def torch_installed() -> bool:
    """Whether the torch extra is installed (found, not imported: importing it takes seconds)."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except ValueError:  # sys.modules["torch"] is None: imports of it are blocked
        return False


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device (False without torch).

    Without an NVIDIA driver the answer is no, and importing torch to hear it would cost 190 MB
    resident for the rest of the run (e.g. the default preset's choice on a CPU machine).
    """
    if not torch_installed() or not nvidia_driver_present():
        return False
    import torch

    return torch.cuda.is_available()


def nvidia_driver_present() -> bool:
    """Whether this machine has an NVIDIA driver that CUDA could use: its device node or proc
    entry (Linux), WSL's GPU device, or the driver library on the loader's path (elsewhere)."""
    import ctypes.util
    import os

    if any(os.path.exists(p) for p in ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg")):
        return True
    return any(ctypes.util.find_library(name) for name in ("cuda", "nvcuda"))


def pick_device(requested: str, key: str = "device") -> str:
    """``auto`` -> cuda, else mps, else cpu; an explicit device must be available (``key`` names
    the config option in the error)."""
    torch = require_torch()
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if requested == "auto":
        return "cuda" if available["cuda"] else "mps" if available["mps"] else "cpu"
    if not available.get(requested, False):
        raise ConfigError(f"{key}={requested} is not available on this machine (PyTorch sees: "
                          f"{', '.join(d for d, ok in available.items() if ok)})")
    return requested


def checkpoint_choice(given: str | None, cached: Callable[[], Path], cached_name: str, example: str) -> tuple[Path, str]:
    """The state_dict file to load and how to name it at start: the user's file (which must
    exist; ``example`` names one in the error), else ``cached()``, the weights cache's."""
    if given is None:
        return cached(), f"{cached_name} weights"
    path = Path(given).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint must be a PyTorch state_dict file (e.g. {example})", path)
    return path, str(path)


def read_state_dict(path: str | Path) -> Mapping[str, Any]:
    """A state_dict file's tensors, loaded with ``weights_only=True`` (a checkpoint cannot run
    code); a ``{"model": state_dict}`` or ``{"state_dict": state_dict}`` wrapper is unwrapped,
    and a zip archive holding one ``.pt`` file (EfficientSAM ViT-S's release) is read from it."""
    torch = require_torch()
    path = Path(path)
    check_readable(path, WeightsError)
    try:
        inner = _zipped_checkpoint(path)
        if inner is not None:
            state = torch.load(inner, map_location="cpu", weights_only=True)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and its own errors for a bad file
        raise WeightsError(f"not a loadable PyTorch checkpoint ({' '.join(str(exc).split())[:200]})", path) from None
    for wrapper in ("model", "state_dict"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise WeightsError("checkpoint is not a state_dict", path)
    return state


def _zipped_checkpoint(path: Path):
    """The one ``.pt`` member of a plain zip archive, as a file object; None for anything else.

    A checkpoint written by ``torch.save`` is itself a zip, but of a ``data.pkl`` and tensor
    records, never of a ``.pt`` file."""
    import io
    import zipfile

    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/") and not n.startswith("__MACOSX")]
        if len(names) != 1 or not names[0].endswith((".pt", ".pth")):
            return None
        return io.BytesIO(archive.read(names[0]))


def load_state_dict(model: Any, state: Mapping[str, Any], origin: str = "state_dict", what: str | None = None) -> None:
    """``model.load_state_dict(state, strict=True)``, with every mismatch named in one line
    (``what`` names the model in it)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for kind, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            shown = ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
            problems.append(f"{len(items)} {kind} ({shown})")
    if problems:
        raise WeightsError(f"state_dict does not fit {what or type(model).__name__}: {'; '.join(problems)}", origin)
    model.load_state_dict(state, strict=True)


def load_checkpoint(model: Any, path: str | Path, what: str | None = None) -> None:
    """Load a state_dict file into ``model`` strictly and without unpickling code."""
    load_state_dict(model, read_state_dict(path), origin=str(path), what=what)
