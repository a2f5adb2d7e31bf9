"""Shared fixtures: the real DAVIS slices in ../shared and the real MobileSAM weights.

Tests that need either are skipped with a reason when it is absent (a user's machine), except
under CI, where ``SAMTRACK_REQUIRE_WEIGHTS=1`` / ``SAMTRACK_REQUIRE_SHARED=1`` turn the skip into
a failure so that a broken setup cannot pass silently.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SAMTRACK_SHARED", REPO.parent / "shared"))
DAVIS16 = SHARED / "data" / "davis2016"
DAVIS16_REF = SHARED / "data" / "davis2016-reference"


def _missing(what: str, env: str) -> None:
    if os.environ.get(env) == "1":
        pytest.fail(f"{what} is required ({env}=1) but missing")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def davis16() -> Path:
    """Root of the DAVIS 2016 slices (official layout)."""
    if not (DAVIS16 / "JPEGImages" / "480p").is_dir():
        _missing(f"DAVIS 2016 data at {DAVIS16}", "SAMTRACK_REQUIRE_SHARED")
    return DAVIS16


@pytest.fixture(scope="session")
def davis16_ref() -> Path:
    if not (DAVIS16_REF / "fseg_per_frame.json").is_file():
        _missing(f"DAVIS 2016 reference results at {DAVIS16_REF}", "SAMTRACK_REQUIRE_SHARED")
    return DAVIS16_REF


class ModelLoaded(Exception):
    """Raised by the patched model loader: the CLI got past its input checks."""


def refuse_model(monkeypatch) -> None:
    """Make loading a model raise :class:`ModelLoaded`."""
    from samtrack import api

    def refuse(cls, *args, **kwargs):
        raise ModelLoaded

    monkeypatch.setattr(api.VideoPredictor, "from_config", classmethod(refuse))


@pytest.fixture
def no_model(monkeypatch, tmp_path: Path) -> None:
    """Make loading the model an error, and point the weights cache at an empty folder."""
    refuse_model(monkeypatch)
    monkeypatch.setenv("SAMTRACK_HOME", str(tmp_path / "empty-cache"))


def davis_slice(root: Path, davis16: Path, sequences, n_frames: int, split: str) -> Path:
    """A DAVIS root in the official layout under ``root``: ``sequences`` cut to their first
    ``n_frames`` (symlinks into the shared data), and a ``<split>.txt`` listing them."""
    for seq in sequences:
        for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
            folder = root / kind / "480p" / seq
            folder.mkdir(parents=True)
            for i in range(n_frames):
                (folder / f"{i:05d}.{ext}").symlink_to(davis16 / kind / "480p" / seq / f"{i:05d}.{ext}")
    (root / f"{split}.txt").write_text("".join(f"{seq}\n" for seq in sequences))
    return root


def load_frame(root: Path, seq: str, idx: int) -> np.ndarray:
    return np.asarray(Image.open(root / "JPEGImages" / "480p" / seq / f"{idx:05d}.jpg").convert("RGB"))


def load_gt(root: Path, seq: str, idx: int) -> np.ndarray:
    return np.asarray(Image.open(root / "Annotations" / "480p" / seq / f"{idx:05d}.png").convert("L")) > 0


@pytest.fixture(scope="session")
def mobilesam_checkpoint() -> Path:
    """Directory holding the verified MobileSAM ONNX pair from the weights cache (never downloads)."""
    from samtrack import weights

    try:
        return weights.cached_path("mobilesam-onnx")
    except Exception as exc:  # a missing or corrupt cache entry
        _missing(f"mobilesam-onnx weights ({exc}); run `samtrack weights fetch mobilesam-onnx`", "SAMTRACK_REQUIRE_WEIGHTS")
        raise


@pytest.fixture(scope="session")
def segmenter(mobilesam_checkpoint: Path):
    from samtrack.segmenters.mobilesam_onnx import MobileSamOnnx

    return MobileSamOnnx.from_checkpoint(str(mobilesam_checkpoint))


@pytest.fixture(scope="session")
def mobilesam_torch_checkpoint() -> Path:
    """The MobileSAM state_dict converted from the ONNX pair (``samtrack weights fetch
    mobilesam-torch`` makes it; never made here, since conversion takes a while)."""
    from samtrack import weights

    try:
        return weights.cached_path("mobilesam-torch") / "mobilesam_torch.pt"
    except Exception as exc:
        _missing(f"mobilesam-torch weights ({exc}); run `samtrack weights fetch mobilesam-torch`", "SAMTRACK_REQUIRE_WEIGHTS")
        raise
