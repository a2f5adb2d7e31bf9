"""Shared by the RepViT-SAM / EdgeSAM golden-fixture generator (``tools/repvit_reference``, run
beside the official code) and the tests (run on ours): the reduced-depth configurations, the
fixture paths and the stored subsampling. Inputs, prompt cases and seeded weights are
:mod:`sam_golden`'s.

The fixtures check a *reduced-depth* configuration of each encoder (the same code and options,
fewer blocks per stage): the full RepViT-M2.3 encoder takes ~20 s per 1024 input on these 2
cores in its training layout, too slow for the default test run. The full-size models are
compared with the official ones by ``tools/repvit_reference/make_golden.py --full`` (README).
"""
from __future__ import annotations

from pathlib import Path

try:  # imported by the tests as tests.repvit_golden
    from . import sam_golden as g
except ImportError:  # imported as a top-level module by tools/repvit_reference (tests/ on sys.path)
    import sam_golden as g  # type: ignore[no-redef]

FIXTURES = Path(__file__).parent / "fixtures" / "sam_golden"
# Stored subsampling (each fixture must stay under 1 MB).
EMBED_STRIDE = 4
MASK_STRIDE = 4

# Blocks per stage (after each stage's downsampling block) of the reduced configurations. Each
# keeps a squeeze-excite block, a plain one and the stage's last block, every downsampling block
# and the model's own options (post-BN RepVGGDW and an unstrided last stage for RepViT-SAM; the
# strided last stage and the stage fusion for EdgeSAM).
REDUCED_DEPTHS = {"repvit-sam": (3, 2, 3, 2), "edgesam": (3, 2, 3, 2)}

# The decoder cases: SAM's, plus EdgeSAM's four-mask output (``num_multimask_outputs=4``).
CASES = dict(g.CASES)
EDGESAM_CASES = dict(CASES, four=dict(points=[[512.0, 300.0]], labels=[1], outputs=4))


def fixture(name: str) -> Path:
    return FIXTURES / f"{name}_reduced_random.npz"


def keys_fixture(name: str) -> Path:
    return FIXTURES.parent / f"{name}_state_dict_keys.json"


def reduced_model(name: str):
    """Our model ``name`` with the reduced-depth encoder (random weights, eval mode)."""
    from dataclasses import replace

    import torch

    from samtrack.segmenters.sam import build
    from samtrack.segmenters.sam.modeling import Sam

    with torch.device("meta"):  # only its configuration is read
        encoder = build.build_sam(name).image_encoder
    stages = tuple(replace(stage, depth=d) for stage, d in zip(encoder.stages, REDUCED_DEPTHS[name], strict=True))
    reduced = type(encoder)(stages, **encoder.options)
    return Sam(reduced, *build._sam_decoder_and_prompts(build.IMAGE_SIZE // 16)).eval()
