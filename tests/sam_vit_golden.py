"""The SAM ViT, HQ-SAM and Light HQ-SAM golden fixtures: what is shared by their generator (run
beside the official code, ``tools/sam_reference/make_golden_vit.py``) and the tests.

Full-size ViTs would need fixtures of their own size per model and minutes per test, so the
fixtures use a reduced configuration of the same code (64 wide, 4 blocks, 2 heads, global
attention in blocks 1 and 3, at the full 1024 input); the full sizes were checked against the
official code once, outside the test suite (README, "SAM ViT and HQ-SAM"). Light HQ-SAM's is its
full configuration. Weights, inputs and prompt cases are those of :mod:`sam_golden`.
"""
from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "sam_golden"

# A reduced ViT: (embed_dim, depth, num_heads, global_attn_indexes).
REDUCED_VIT = (64, 4, 2, (1, 3))

# fixture name -> (file, our builder's description)
MODELS = {
    "sam_vit": FIXTURES / "sam_vit_reduced_random.npz",
    "hq_sam_vit": FIXTURES / "hq_sam_vit_reduced_random.npz",
    "light_hq_sam": FIXTURES / "light_hq_sam_random.npz",
}


def is_hq(model: str) -> bool:
    return model != "sam_vit"
