"""Shared by the EfficientViT-SAM / EfficientSAM fixture generator (``tools/sam_family_reference``,
run beside the official code) and the tests (run on ours): the model configurations the
fixtures cover, their seeded random weights, the inputs and the prompt cases.

As in :mod:`tests.sam_golden`, a fixture stores only what the official model computed (and
checksums of its inputs and weights), never weights.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

try:  # imported by the tests as tests.sam_family_golden
    from . import sam_golden
except ImportError:  # imported as a top-level module by the generator (tests/ on sys.path)
    import sam_golden

SEED = sam_golden.SEED
FIXTURES = Path(__file__).parent / "fixtures" / "sam_family_golden"
EMBED_STRIDE = 4
MASK_STRIDE = 4
ORIGINAL_SIZE = sam_golden.ORIGINAL_SIZE
random_state_dict = sam_golden.random_state_dict
checksum = sam_golden.checksum
decoder_embedding = sam_golden.decoder_embedding
mask_input = sam_golden.mask_input
official_prompts = sam_golden.official_prompts
our_decode = sam_golden.our_decode

# The configurations the committed fixtures cover. "full": the released architecture as it
# is; otherwise a reduced-depth configuration of the same code (the full one is too slow for
# CI's 2 CPU cores), given as overrides of the released one.
FIXTURE_MODELS: dict[str, dict] = {
    # EfficientViT-SAM-L0 exactly (34.8 M parameters, 512 input): the L family's code paths.
    "efficientvit-sam-l0": {"family": "efficientvit", "variant": "l0"},
    # XL1's widths and block types (6 stages, att@3 blocks, fmb stage 3, neck expansion 4) with
    # one block per stage and 2 neck blocks: the XL family's code paths at 1024.
    "efficientvit-sam-xl-reduced": {"family": "efficientvit", "variant": "xl1", "depths": (1, 1, 1, 1, 1, 1),
                                    "neck_depth": 2},
    # EfficientSAM ViT-T exactly (10.2 M parameters, 1024 input).
    "efficientsam-vitt": {"family": "efficientsam", "embed_dim": 192, "num_heads": 3, "depth": 12},
}


def fixture_path(name: str) -> Path:
    return FIXTURES / f"{name}.npz"


def encoder_input(size: int, seed: int = SEED) -> np.ndarray:
    """A normalised ``[1, 3, size, size]`` input: smooth random structure plus noise, padded
    with zeros below 9/16 of the height like a 16:9 frame."""
    rng = np.random.default_rng([seed, 1, size])
    rows = size * 9 // 16
    cell = size // 32
    coarse = rng.standard_normal((1, 3, rows // cell, 32)).astype(np.float32)
    image = np.zeros((1, 3, size, size), np.float32)
    image[:, :, :rows] = np.kron(coarse, np.ones((cell, cell), np.float32)) + 0.3 * rng.standard_normal((1, 3, rows, size))
    return image


def frame(seed: int = SEED) -> np.ndarray:
    """A uint8 RGB 480 x 854 frame (smooth structure plus noise) for the preprocessing checks."""
    rng = np.random.default_rng([seed, 5])
    coarse = rng.integers(0, 256, (15, 27, 3)).astype(np.float32)
    import cv2

    smooth = cv2.resize(coarse, (854, 480), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


# EfficientViT-SAM uses SAM's prompt encoder and decoder: SAM's cases (coordinates in the 1024
# frame). EfficientSAM's prompts are point lists with labels (2/3: box corners), padded to 6.
SAM_CASES = sam_golden.CASES
EFFICIENTSAM_CASES: dict[str, dict] = {
    "points": dict(points=[[312.5, 240.0], [700.0, 410.25], [100.0, 60.0]], labels=[1, 1, 0]),
    "one_point": dict(points=[[512.0, 300.0]], labels=[1]),
    "box": dict(points=[[180.0, 64.0], [820.0, 540.0]], labels=[2, 3]),
    "points_box": dict(points=[[250.0, 120.0], [720.0, 560.0], [400.0, 300.0], [90.0, 500.0]], labels=[2, 3, 1, 0]),
    "six_points": dict(points=[[100.0 + 120 * i, 80.0 + 90 * i] for i in range(6)], labels=[1, 0, 1, 1, 0, 1]),
}
