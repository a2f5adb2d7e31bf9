"""Shared by the golden-fixture generator (run beside the official code) and the tests (run on
ours): the seeded random weights, the inputs and the prompt cases.

The fixture stores only what the official model computed (plus checksums of the inputs), never
weights: both sides rebuild the same weights from the seed, key by key, so the fixture stays
small and the test fails loudly if the generation ever drifts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

try:  # imported by the tests as tests.sam_golden
    from .random_weights import random_state_dict as _random_state_dict
except ImportError:  # imported as a top-level module by tools/sam_reference (tests/ on sys.path)
    from random_weights import random_state_dict as _random_state_dict

SEED = 20261201
FIXTURE = Path(__file__).parent / "fixtures" / "sam_golden" / "mobilesam_random.npz"
# Stored subsampling of the big outputs (the fixture must stay under 1 MB).
EMBED_STRIDE = 4
MASK_STRIDE = 2
# An original frame size for the postprocessing check (DAVIS 480p).
ORIGINAL_SIZE = (480, 854)


def random_state_dict(template: Mapping[str, "object"], seed: int = SEED) -> dict:
    """The seeded random weights of ``random_weights.random_state_dict`` (see there for the
    scales), with this fixture's seed by default."""
    return _random_state_dict(template, seed)


def encoder_input(seed: int = SEED) -> np.ndarray:
    """A normalised ``[1, 3, 1024, 1024]`` input: smooth random structure plus noise, padded with
    zeros below row 576 like a 16:9 frame."""
    rng = np.random.default_rng([seed, 1])
    coarse = rng.standard_normal((1, 3, 18, 32)).astype(np.float32)
    image = np.zeros((1, 3, 1024, 1024), np.float32)
    image[:, :, :576] = np.kron(coarse, np.ones((32, 32), np.float32)) + 0.3 * rng.standard_normal((1, 3, 576, 1024))
    return image


def decoder_embedding(seed: int = SEED) -> np.ndarray:
    """A random ``[1, 256, 64, 64]`` image embedding for the decoder-only cases."""
    return np.random.default_rng([seed, 2]).standard_normal((1, 256, 64, 64)).astype(np.float32)


def mask_input(seed: int = SEED) -> np.ndarray:
    """Random ``[1, 1, 256, 256]`` low-res logits for the mask-prompt case."""
    return (3.0 * np.random.default_rng([seed, 3]).standard_normal((1, 1, 256, 256))).astype(np.float32)


# Prompt cases in the official API's terms, coordinates in the 1024-resized frame.
CASES: dict[str, dict] = {
    "points": dict(points=[[312.5, 240.0], [700.0, 410.25], [100.0, 60.0]], labels=[1, 1, 0], multimask=False),
    "one_point": dict(points=[[512.0, 300.0]], labels=[1], multimask=False),
    "points_box": dict(points=[[400.0, 300.0], [90.0, 500.0]], labels=[1, 0], box=[250.0, 120.0, 720.0, 560.0], multimask=False),
    "box_mask": dict(box=[180.0, 64.0, 820.0, 540.0], mask=True, multimask=False),
    "multimask": dict(points=[[512.0, 300.0], [640.0, 200.0]], labels=[1, 0], multimask=True),
}


def checksum(array: np.ndarray) -> np.ndarray:
    """Sum and sum of squares in float64: catches any drift in generated inputs."""
    a = np.asarray(array, np.float64)
    return np.array([a.sum(), (a * a).sum()])


def official_prompts(case: dict) -> tuple:
    """``case`` as the official predictors hand it to ``prompt_encoder(points=, boxes=, masks=)``."""
    import torch

    points = None
    if "points" in case:
        points = (torch.tensor([case["points"]], dtype=torch.float32), torch.tensor([case["labels"]], dtype=torch.int64))
    boxes = torch.tensor([case["box"]], dtype=torch.float32) if "box" in case else None
    masks = torch.from_numpy(mask_input()) if case.get("mask") else None
    return points, boxes, masks


def our_decode(model, embedding, case: dict, **decode_kwargs) -> tuple:
    """All four outputs of ``case`` from our ``Sam.decode``, through our token layout
    (``transforms.prompt_tokens``: SAM's padding point unless there is a box)."""
    import torch

    from samtrack.segmenters import transforms

    points = np.array(case["points"], np.float32) if "points" in case else None
    labels = np.array(case["labels"]) if "points" in case else None
    box = np.array(case["box"], np.float32) if "box" in case else None
    coords, kinds = transforms.prompt_tokens(points, labels, box)
    mask = torch.from_numpy(mask_input()) if case.get("mask") else None
    return model.decode(embedding, torch.from_numpy(coords)[None], torch.from_numpy(kinds)[None], mask_input=mask,
                        **decode_kwargs)


def case_outputs(case: dict) -> slice:
    """Which of our four outputs the official call returns for ``case``: the single mask, the
    three multimask ones, or (EdgeSAM's ``num_multimask_outputs=4``) all four."""
    return slice(0, 4) if case.get("outputs") == 4 else slice(1, 4) if case.get("multimask") else slice(0, 1)
