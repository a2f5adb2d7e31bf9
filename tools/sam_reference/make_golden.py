"""Write the golden fixture from the official MobileSAM code (see README.md beside this file)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import sam_golden as g  # noqa: E402
from mobile_sam import sam_model_registry  # noqa: E402  (the official package, on PYTHONPATH)


def official_decode(model, embedding: torch.Tensor, case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The official prompt encoder + mask decoder, through their public forward()."""
    points, boxes, masks = g.official_prompts(case)
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
    return model.mask_decoder(
        image_embeddings=embedding,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=case["multimask"],
    )


@torch.no_grad()
def main() -> None:
    model = sam_model_registry["vit_t"]()
    weights = g.random_state_dict(model.state_dict())
    model.load_state_dict(weights, strict=True)
    # eval() after loading: TinyViT's attention caches its bias table ('ab') when switched to
    # eval mode, so a model put in eval mode before loading keeps the initial (zero) biases.
    model.eval()
    out: dict[str, np.ndarray] = {"seed": np.array(g.SEED)}
    image = g.encoder_input()
    out["input_checksum"] = g.checksum(image)
    out["weights_checksum"] = g.checksum(np.concatenate([v.numpy().ravel() for v in weights.values() if v.dtype.is_floating_point]))
    embedding = model.image_encoder(torch.from_numpy(image))
    out["embedding_sub"] = embedding.numpy()[:, :, :: g.EMBED_STRIDE, :: g.EMBED_STRIDE]
    out["embedding_checksum"] = g.checksum(embedding.numpy())
    masks, iou = official_decode(model, embedding, g.CASES["points"])
    out["e2e_points/low_res_sub"] = masks.numpy()[..., :: g.MASK_STRIDE, :: g.MASK_STRIDE]
    out["e2e_points/iou"] = iou.numpy()

    decoder_embedding = torch.from_numpy(g.decoder_embedding())
    for name, case in g.CASES.items():
        masks, iou = official_decode(model, decoder_embedding, case)
        out[f"{name}/low_res_sub"] = masks.numpy()[..., :: g.MASK_STRIDE, :: g.MASK_STRIDE]
        out[f"{name}/iou"] = iou.numpy()
        if name == "points":
            # The official upscaling to a 480p frame, sampled at seeded pixels.
            full = model.postprocess_masks(masks, input_size=(576, 1024), original_size=g.ORIGINAL_SIZE)[0, 0].numpy()
            rng = np.random.default_rng([g.SEED, 4])
            ys = rng.integers(0, g.ORIGINAL_SIZE[0], 2000)
            xs = rng.integers(0, g.ORIGINAL_SIZE[1], 2000)
            out["postprocess/yx"] = np.stack([ys, xs], 1)
            out["postprocess/logits"] = full[ys, xs]
            out["postprocess/mask_packed"] = np.packbits(full > 0)
    g.FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(g.FIXTURE, **out)
    print(f"wrote {g.FIXTURE} ({g.FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
