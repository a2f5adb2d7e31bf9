"""RepViT-SAM and EdgeSAM against their official code (see README.md beside this file).

    make_golden.py            write tests/fixtures/sam_golden/{repvit-sam,edgesam}_reduced_random.npz
                              (the official reduced-depth models' outputs) and compare ours with them,
                              and tests/fixtures/{repvit-sam,edgesam}_state_dict_keys.json (the
                              full-size official models' keys and shapes)
    make_golden.py --full     compare the full-size official models with ours (no fixture written)

Both sides load the same seeded random state_dict (``sam_golden.random_state_dict``, key by key),
encode the same 1024 x 1024 input and decode the same prompts; the maximum absolute differences
are printed per model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

import repvit_golden as rg  # noqa: E402
import sam_golden as g  # noqa: E402


# -- the official models (packages on PYTHONPATH: repvit_sam from THU-MIG/RepViT/sam, edge_sam) --


def _stages(cfgs: list) -> list[tuple[list, list]]:
    """The official per-block table split into stages: (downsampling rows, ordinary rows)."""
    stages: list[tuple[list, list]] = []
    for row in cfgs:
        if not stages or row[5] == 2:  # stride 2 opens a stage
            stages.append(([row] if stages else [], []))
            if stages[-1][0]:
                continue
        stages[-1][1].append(row)
    return stages


def _reduce(cfgs: list, depths: tuple[int, ...]) -> list:
    """Keep each stage's downsampling row, its first ``depth - 1`` ordinary rows and its last."""
    out = []
    for (down, rows), depth in zip(_stages(cfgs), depths, strict=True):
        out += down + rows[: depth - 1] + rows[-1:]
    return out


def official_model(name: str, reduced: bool):
    if name == "repvit-sam":
        from repvit_sam.build_sam import sam_model_registry
        from repvit_sam.modeling.repvit import RepViT

        model = sam_model_registry["repvit"]()
        if reduced:
            model.image_encoder = RepViT(_reduce(model.image_encoder.cfgs, rg.REDUCED_DEPTHS[name]))
    else:
        from edge_sam import sam_model_registry
        from edge_sam.modeling.rep_vit import RepViT

        model = sam_model_registry["edge_sam"]()
        if reduced:
            RepViT.arch_settings = dict(RepViT.arch_settings, reduced=_reduce(RepViT.arch_settings["m1"], rg.REDUCED_DEPTHS[name]))
            model.image_encoder = RepViT("reduced", img_size=1024, fuse=True, upsample_mode="bicubic")
    return model


def official_decode(name: str, model, embedding: torch.Tensor, case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The official prompt encoder + mask decoder through their public forward()."""
    points, boxes, masks = g.official_prompts(case)
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
    kwargs = dict(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
    if name == "edgesam":  # EdgeSAM's decoder takes the number of masks: 1, 3 or 4
        return model.mask_decoder(**kwargs, num_multimask_outputs=case.get("outputs", 3 if case.get("multimask") else 1))
    return model.mask_decoder(**kwargs, multimask_output=case["multimask"])


# -- ours -------------------------------------------------------------------------------------


def our_decode(model, embedding: torch.Tensor, case: dict) -> tuple[np.ndarray, np.ndarray]:
    """Ours computes all four masks; the case's slice of them is what the official call returns."""
    masks, iou = g.our_decode(model, embedding, case)
    chosen = g.case_outputs(case)
    return masks[:, chosen].numpy(), iou[:, chosen].numpy()


def weights_checksum(weights: dict) -> np.ndarray:
    return g.checksum(np.concatenate([weights[k].numpy().ravel() for k in sorted(weights) if weights[k].dtype.is_floating_point]))


@torch.no_grad()
def run(name: str, reduced: bool) -> dict[str, np.ndarray]:
    from samtrack.segmenters.sam.build import build_sam, load_state_dict

    model = official_model(name, reduced)
    weights = g.random_state_dict(model.state_dict())
    model.load_state_dict(weights, strict=True)
    model.eval()
    ours = rg.reduced_model(name) if reduced else build_sam(name)
    load_state_dict(ours, weights)
    ours.eval()
    cases = rg.EDGESAM_CASES if name == "edgesam" else rg.CASES
    out: dict[str, np.ndarray] = {"seed": np.array(g.SEED)}
    image = torch.from_numpy(g.encoder_input())
    out["input_checksum"] = g.checksum(image.numpy())
    out["weights_checksum"] = weights_checksum(weights)
    embedding = model.image_encoder(image)
    mine = ours.encode(image)
    diffs = {"embedding": float((embedding - mine).abs().max())}
    ours.image_encoder.fuse_for_inference()
    diffs["embedding (fused)"] = float((embedding - ours.encode(image)).abs().max())
    out["embedding_sub"] = embedding.numpy()[:, :, :: rg.EMBED_STRIDE, :: rg.EMBED_STRIDE]
    out["embedding_checksum"] = g.checksum(embedding.numpy())
    masks, iou = official_decode(name, model, embedding, cases["points"])
    my_masks, my_iou = our_decode(ours, embedding, cases["points"])
    diffs["e2e masks"] = float(np.abs(masks.numpy() - my_masks).max())
    diffs["e2e iou"] = float(np.abs(iou.numpy() - my_iou).max())
    out["e2e_points/low_res_sub"] = masks.numpy()[..., :: rg.MASK_STRIDE, :: rg.MASK_STRIDE]
    out["e2e_points/iou"] = iou.numpy()
    decoder_embedding = torch.from_numpy(g.decoder_embedding())
    for case_name, case in cases.items():
        masks, iou = official_decode(name, model, decoder_embedding, case)
        my_masks, my_iou = our_decode(ours, decoder_embedding, case)
        diffs[f"{case_name} masks"] = float(np.abs(masks.numpy() - my_masks).max())
        diffs[f"{case_name} iou"] = float(np.abs(iou.numpy() - my_iou).max())
        out[f"{case_name}/low_res_sub"] = masks.numpy()[..., :: rg.MASK_STRIDE, :: rg.MASK_STRIDE]
        out[f"{case_name}/iou"] = iou.numpy()
    size = "reduced-depth" if reduced else "full-size"
    print(f"{name} ({size}): max abs diff, ours - official: "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
          + f" (embedding max abs {float(embedding.abs().max()):.2f})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full-size models; compare only, write nothing")
    parser.add_argument("--models", nargs="+", default=["repvit-sam", "edgesam"], choices=["repvit-sam", "edgesam"])
    args = parser.parse_args()
    for name in args.models:
        out = run(name, reduced=not args.full)
        if not args.full:
            # The full-size official model's every key and shape, in its order.
            import json

            layout = [[k, list(v.shape)] for k, v in official_model(name, reduced=False).state_dict().items()]
            rg.keys_fixture(name).write_text(json.dumps(layout))
            print(f"wrote {rg.keys_fixture(name)} ({len(layout)} tensors)")
            path = rg.fixture(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, **out)
            print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
