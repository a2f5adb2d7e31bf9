"""Write the SAM ViT / HQ-SAM / Light HQ-SAM golden fixtures from the official code (see
README.md beside this file). One model per run: the official SAM and HQ-SAM packages are both
called ``segment_anything``, so PYTHONPATH picks which one is imported.

    PYTHONPATH=tools/sam_reference/shims:/tmp/segment-anything python tools/sam_reference/make_golden_vit.py sam_vit
    PYTHONPATH=tools/sam_reference/shims:/tmp/sam-hq python tools/sam_reference/make_golden_vit.py hq_sam_vit
    PYTHONPATH=tools/sam_reference/shims:/tmp/sam-hq python tools/sam_reference/make_golden_vit.py light_hq_sam

``layouts`` (once with each package on PYTHONPATH) adds the key names and shapes of the official
full-size models to ``tests/fixtures/sam_vit_state_dict_keys.json``: the official checkpoints'
layout, which the tests compare ours with.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import sam_golden as g  # noqa: E402
import sam_vit_golden as gv  # noqa: E402
from segment_anything import sam_model_registry  # noqa: E402  (official, on PYTHONPATH)


def official_model(model: str):
    if model == "light_hq_sam":
        return sam_model_registry["vit_tiny"]()
    embed_dim, depth, heads, global_attn = gv.REDUCED_VIT
    # build_sam exports the vit_h builder under the module's name; the module is in sys.modules.
    builder = sys.modules["segment_anything.build_sam"]._build_sam
    return builder(encoder_embed_dim=embed_dim, encoder_depth=depth, encoder_num_heads=heads,
                   encoder_global_attn_indexes=list(global_attn))


def official_decode(model, hq: bool, embedding, interm, case: dict):
    """The official prompt encoder + mask decoder, through their public forward(); HQ-SAM's
    with the encoder's list of early features and hq_token_only=False, as SamPredictor calls it."""
    points, boxes, masks = g.official_prompts(case)
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
    extra = dict(hq_token_only=False, interm_embeddings=interm) if hq else {}
    return model.mask_decoder(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                              multimask_output=case["multimask"], **extra)


@torch.no_grad()
def main(model_name: str) -> None:
    hq = gv.is_hq(model_name)
    model = official_model(model_name)
    weights = g.random_state_dict(model.state_dict())
    model.load_state_dict(weights, strict=True)
    model.eval()  # after loading (TinyViT caches its attention biases in eval())
    image = g.encoder_input()
    out: dict[str, np.ndarray] = {"seed": np.array(g.SEED), "input_checksum": g.checksum(image)}
    out["weights_checksum"] = g.checksum(np.concatenate([v.numpy().ravel() for v in weights.values() if v.dtype.is_floating_point]))
    result = model.image_encoder(torch.from_numpy(image))
    embedding, interm = (result[0], result[1]) if hq else (result, None)
    out["embedding_sub"] = embedding.numpy()[:, :, :: g.EMBED_STRIDE, :: g.EMBED_STRIDE]
    out["embedding_checksum"] = g.checksum(embedding.numpy())
    if hq:
        early = interm[0].permute(0, 3, 1, 2).numpy()  # channels-first, as ours keeps it
        out["early_sub"] = early[:, :, :: g.EMBED_STRIDE, :: g.EMBED_STRIDE]
        out["early_checksum"] = g.checksum(early)
    for name, case in g.CASES.items():
        masks, iou = official_decode(model, hq, embedding, interm, case)
        out[f"{name}/low_res_sub"] = masks.numpy()[..., :: g.MASK_STRIDE, :: g.MASK_STRIDE]
        out[f"{name}/iou"] = iou.numpy()
    path = gv.MODELS[model_name]
    np.savez_compressed(path, **out)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


def layouts() -> None:
    """The official builders' state_dict keys and shapes (built on the meta device: no memory)."""
    import json

    hq = "MaskDecoderHQ" in vars(sys.modules["segment_anything.build_sam"])
    sizes = ("vit_b", "vit_l", "vit_h", "vit_tiny") if hq else ("vit_b", "vit_l", "vit_h")
    path = gv.FIXTURES.parent / "sam_vit_state_dict_keys.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    for size in sizes:
        # TinyViT's builder calls .item(), which the meta device refuses; it is small anyway.
        with torch.device("cpu" if size == "vit_tiny" else "meta"):
            model = sam_model_registry[size]()
        data[f"{'hq-sam' if hq else 'sam'}/{size}"] = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    path.write_text(json.dumps(data, separators=(",", ":")))
    print(f"wrote {path} ({', '.join(data)})")


if __name__ == "__main__":
    layouts() if sys.argv[1] == "layouts" else main(sys.argv[1])
