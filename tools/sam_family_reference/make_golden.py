"""Run the official EfficientViT-SAM and EfficientSAM code beside ours (see README.md here).

    make_golden.py fixtures   write tests/fixtures/sam_family_golden/*.npz from the official code
    make_golden.py compare    every released model at full size, official vs ours, same seeded
                              random weights, image and prompts: max abs differences per model

The official repositories are never committed: their paths come from EFFICIENTVIT_REPO,
SEGMENT_ANYTHING_REPO and EFFICIENTSAM_REPO. torchvision (which cannot be installed beside this
torch) and EfficientViT's Triton kernel module are stood in for by :func:`install_shims`.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import sam_family_golden as g  # noqa: E402


# -- the official code ----------------------------------------------------------------------------


def install_shims() -> None:
    """Stand-ins for the torchvision names the official modules import (unless torchvision is
    installed): EfficientViT-SAM builds its preprocessing from Compose, ToTensor, Normalize and
    functional.resize / to_pil_image, implemented here with torchvision's semantics for uint8
    HWC arrays and PIL images (PIL's bilinear filter); segment_anything imports the NMS ops at
    load time, which nothing here calls."""
    try:
        import torchvision  # noqa: F401
        return
    except ImportError:
        pass
    from PIL import Image

    def module(name: str, **attrs) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        if name.count(".") < 2:  # packages: torchvision, torchvision.transforms, torchvision.ops
            m.__path__ = []
        sys.modules[name] = m
        return m

    class Compose:
        def __init__(self, transforms):
            self.transforms = transforms

        def __call__(self, x):
            for t in self.transforms:
                x = t(x)
            return x

    class ToTensor:  # HWC uint8 -> CHW float32 in [0, 1]
        def __call__(self, pic):
            a = np.ascontiguousarray(np.asarray(pic))
            return torch.from_numpy(a).permute(2, 0, 1).float().div(255)

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

        def __call__(self, t):
            return (t - self.mean) / self.std

    def not_called(*args, **kwargs):
        raise NotImplementedError("torchvision shim: not used by the golden fixtures")

    functional = module("torchvision.transforms.functional", to_pil_image=Image.fromarray,
                        resize=lambda img, size: img.resize((size[1], size[0]), Image.BILINEAR))
    transforms = module("torchvision.transforms", Compose=Compose, ToTensor=ToTensor, Normalize=Normalize,
                        functional=functional)
    boxes = module("torchvision.ops.boxes", batched_nms=not_called, box_area=not_called)
    ops = module("torchvision.ops", boxes=boxes)
    module("torchvision", transforms=transforms, ops=ops)


def _stub_package(name: str, path: Path) -> types.ModuleType:
    """A package whose __init__ is not run (EfficientViT's pull in its diffusion and Triton code)."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module
    return module


def official_efficientvit():
    """The official ``efficientvit.models.efficientvit.sam`` module and ``set_norm_eps``."""
    root = Path(os.environ["EFFICIENTVIT_REPO"]) / "efficientvit"
    sys.path.insert(0, os.environ["SEGMENT_ANYTHING_REPO"])
    _stub_package("efficientvit", root)
    _stub_package("efficientvit.models", root / "models")
    nn_pkg = _stub_package("efficientvit.models.nn", root / "models" / "nn")
    triton_norm = types.ModuleType("efficientvit.models.nn.triton_rms_norm")
    triton_norm.TritonRMSNorm2dFunc = None  # only its trms2d norm uses it, never the SAM models
    sys.modules[triton_norm.__name__] = triton_norm
    for sub in ("act", "norm", "ops"):
        module = importlib.import_module(f"efficientvit.models.nn.{sub}")
        nn_pkg.__dict__.update({k: getattr(module, k) for k in module.__all__})
    _stub_package("efficientvit.models.efficientvit", root / "models" / "efficientvit")
    sam = importlib.import_module("efficientvit.models.efficientvit.sam")
    norm = importlib.import_module("efficientvit.models.nn.norm")
    return sam, norm.set_norm_eps


def official_efficientvit_model(spec: dict):
    """The official model for a FIXTURE_MODELS-style spec, with the zoo's norm eps (1e-6)."""
    sam, set_norm_eps = official_efficientvit()
    variant = spec["variant"]
    if "depths" not in spec:
        model = getattr(sam, f"efficientvit_sam_{variant}")()
    else:
        from efficientvit.models.efficientvit.backbone import EfficientViTLargeBackbone

        assert variant.startswith("xl")
        backbone = EfficientViTLargeBackbone(
            width_list=[32, 64, 128, 256, 512, 1024], depth_list=list(spec["depths"]),
            block_list=["res", "fmb", "fmb", "fmb", "att@3", "att@3"], expand_list=[1, 4, 4, 4, 4, 6],
            fewer_norm_list=[False, False, False, False, True, True])
        neck = sam.SamNeck(fid_list=["stage5", "stage4", "stage3"], in_channel_list=[1024, 512, 256], head_width=256,
                           head_depth=spec["neck_depth"], expand_ratio=4, middle_op="fmb")
        model = sam.build_efficientvit_sam(sam.EfficientViTSamImageEncoder(backbone, neck), 1024)
    set_norm_eps(model, 1e-6)
    return model


def official_efficientsam_model(spec: dict):
    sys.path.insert(0, os.environ["EFFICIENTSAM_REPO"])
    from efficient_sam.efficient_sam import build_efficient_sam

    model = build_efficient_sam(spec["embed_dim"], spec["num_heads"])
    if spec.get("depth", 12) != 12:
        model.image_encoder.blocks = model.image_encoder.blocks[: spec["depth"]]
    return model


def ours(name: str, spec: dict):
    from samtrack.segmenters.sam.build import build_efficientsam, build_efficientvit_sam

    if spec["family"] == "efficientvit":
        return build_efficientvit_sam(spec["variant"], spec.get("depths"), spec.get("neck_depth")).eval()
    return build_efficientsam(spec["embed_dim"], spec["num_heads"], spec.get("depth", 12)).eval()


# -- what each side computes ----------------------------------------------------------------------


def sam_decode(model, embedding: torch.Tensor, case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """segment_anything's prompt encoder + mask decoder (EfficientViT-SAM's), all 4 outputs."""
    points, boxes, masks = g.official_prompts(case)
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
    out = [model.mask_decoder(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=m)
           for m in (False, True)]
    return torch.cat([out[0][0], out[1][0]], 1), torch.cat([out[0][1], out[1][1]], 1)


def efficientsam_decode(model, embedding: torch.Tensor, case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """EfficientSAM's predict_masks (its padding to 6 points included), all 4 outputs."""
    points = torch.tensor([[case["points"]]], dtype=torch.float32)
    labels = torch.tensor([[case["labels"]]], dtype=torch.float32)
    out = [model.predict_masks(embedding, points, labels, multimask_output=m, input_h=1024, input_w=1024)
           for m in (False, True)]
    return torch.cat([out[0][0][0], out[1][0][0]], 1), torch.cat([out[0][1][0], out[1][1][0]], 1)


def our_decode(model, embedding: torch.Tensor, case: dict, family: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Our model through the segmenter's token layout (transforms.batch_prompt_tokens)."""
    from samtrack.segmenters import Prompt, transforms
    from samtrack.segmenters.sam.build import EFFICIENTSAM_INPUTS

    if family == "efficientsam":
        pts, lab = np.array(case["points"], np.float32), np.array(case["labels"])
        box = None
        if 2 in lab:  # EfficientSAM's box is two labelled points; ours is Prompt.box
            box = np.concatenate([pts[lab == 2][0], pts[lab == 3][0]])
            pts, lab = pts[lab < 2], lab[lab < 2]
        prompt = Prompt(pts if len(pts) else None, lab if len(pts) else None, box)
        coords, labels, _ = transforms.batch_prompt_tokens([prompt], (1024, 1024), spec=EFFICIENTSAM_INPUTS)
        return model.decode(embedding, torch.from_numpy(coords), torch.from_numpy(labels))
    return g.our_decode(model, embedding, case)


def official_outputs(name: str, spec: dict) -> dict[str, np.ndarray]:
    """Everything a fixture holds, computed by the official model."""
    family = spec["family"]
    model = (official_efficientvit_model if family == "efficientvit" else official_efficientsam_model)(spec)
    weights = g.random_state_dict(model.state_dict())
    model.load_state_dict(weights, strict=True)
    model.eval()
    size = model.image_encoder.img_size if family == "efficientsam" else model.image_size[1]
    out: dict[str, np.ndarray] = {"seed": np.array(g.SEED), "input_size": np.array(size)}
    image = g.encoder_input(size)
    out["input_checksum"] = g.checksum(image)
    out["weights_checksum"] = g.checksum(np.concatenate([v.numpy().ravel() for v in weights.values()
                                                         if v.dtype.is_floating_point]))
    out["keys"] = np.array([f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items()])
    with torch.no_grad():
        embedding = model.image_encoder(torch.from_numpy(image))
        out["embedding"] = embedding.numpy()
        decode = sam_decode if family == "efficientvit" else efficientsam_decode
        cases = g.SAM_CASES if family == "efficientvit" else g.EFFICIENTSAM_CASES
        first = next(iter(cases))
        out[f"e2e_{first}/masks"], out[f"e2e_{first}/iou"] = (t.numpy() for t in decode(model, embedding, cases[first]))
        for case_name, case in cases.items():
            masks, iou = decode(model, torch.from_numpy(g.decoder_embedding()), case)
            out[f"{case_name}/masks"], out[f"{case_name}/iou"] = masks.numpy(), iou.numpy()
            if case_name == first:
                out["postprocess"] = _official_postprocess(model, family, masks[:, :1])
        out["preprocess"] = _official_preprocess(model, family)
    return out


def _official_postprocess(model, family: str, low_res: torch.Tensor) -> np.ndarray:
    """The official upscaling of a low-res mask to the 480 x 854 frame."""
    if family == "efficientvit":
        return model.postprocess_masks(low_res, (576, 1024), g.ORIGINAL_SIZE)[0, 0].numpy()
    # EfficientSAM's predict_masks with output_h/output_w: bicubic straight to the frame.
    return F.interpolate(low_res, g.ORIGINAL_SIZE, mode="bicubic")[0, 0].numpy()


def _official_preprocess(model, family: str) -> np.ndarray:
    """The official preprocessing of g.frame() (its [1, 3, S, S] encoder input)."""
    frame = g.frame()
    if family == "efficientvit":
        return model.transform(frame)[None].numpy()  # SamResize (PIL), ToTensor, Normalize, SamPad
    tensor = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255  # as torchvision's ToTensor
    return model.preprocess(tensor).numpy()


def _sampled(array: np.ndarray, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([g.SEED, 4])
    idx = np.stack([rng.integers(0, s, n) for s in array.shape], 1)
    return idx, array[tuple(idx.T)]


def write_fixture(name: str, out: dict[str, np.ndarray]) -> Path:
    """Subsample the big arrays (every fixture < 1 MB) and save."""
    kept = {k: v for k, v in out.items() if k not in ("embedding", "postprocess", "preprocess") and not k.endswith("/masks")}
    kept["embedding_sub"] = out["embedding"][:, :, :: g.EMBED_STRIDE, :: g.EMBED_STRIDE]
    kept["embedding_checksum"] = g.checksum(out["embedding"])
    for k, v in out.items():
        if k.endswith("/masks"):
            kept[k.replace("/masks", "/low_res_sub")] = v[..., :: g.MASK_STRIDE, :: g.MASK_STRIDE]
    for k in ("postprocess", "preprocess"):
        kept[f"{k}/idx"], kept[f"{k}/values"] = _sampled(out[k])
        kept[f"{k}/checksum"] = g.checksum(out[k])
    path = g.fixture_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **kept)
    return path


# -- commands -------------------------------------------------------------------------------------


def cmd_fixtures(names: list[str]) -> None:
    for name in names or list(g.FIXTURE_MODELS):
        path = write_fixture(name, official_outputs(name, g.FIXTURE_MODELS[name]))
        print(f"wrote {path} ({path.stat().st_size} bytes)")


RELEASED = {
    **{f"efficientvit-sam-{v}": {"family": "efficientvit", "variant": v} for v in ("l0", "l1", "l2", "xl0", "xl1")},
    "efficientsam-vitt": {"family": "efficientsam", "embed_dim": 192, "num_heads": 3},
    "efficientsam-vits": {"family": "efficientsam", "embed_dim": 384, "num_heads": 6},
}


def cmd_compare(names: list[str]) -> None:
    """Official vs ours at full size: state_dict layout, embedding, every decoder case (all 4
    outputs), the official upscaling and preprocessing against our segmenter's."""
    from samtrack.segmenters import ImageEmbedding, Prompt
    from samtrack.segmenters.sam.build import REGISTRY
    from samtrack.segmenters.sam_torch import SamTorch
    from samtrack.segmenters.transforms import preprocess_spec

    for name in names or list(RELEASED):
        spec = RELEASED[name]
        t0 = time.time()
        ref = official_outputs(name, spec)
        model = ours(name, spec)
        keys = [f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items()]
        assert keys == list(ref["keys"]), f"{name}: state_dict layout differs"
        model.load_state_dict(g.random_state_dict(model.state_dict()), strict=True)
        model.eval()
        size = int(ref["input_size"])
        diffs = {}
        with torch.no_grad():
            embedding = model.encode(torch.from_numpy(g.encoder_input(size)))
            diffs["embedding"] = np.abs(embedding.numpy() - ref["embedding"]).max()
            cases = g.SAM_CASES if spec["family"] == "efficientvit" else g.EFFICIENTSAM_CASES
            first = next(iter(cases))
            masks, iou = our_decode(model, embedding, cases[first], spec["family"])
            diffs["e2e masks"] = np.abs(masks.numpy() - ref[f"e2e_{first}/masks"]).max()
            worst_mask = worst_iou = 0.0
            for case_name, case in cases.items():
                masks, iou = our_decode(model, torch.from_numpy(g.decoder_embedding()), case, spec["family"])
                worst_mask = max(worst_mask, np.abs(masks.numpy() - ref[f"{case_name}/masks"]).max())
                worst_iou = max(worst_iou, np.abs(iou.numpy() - ref[f"{case_name}/iou"]).max())
            diffs["decoder masks"], diffs["decoder iou"] = worst_mask, worst_iou
            segmenter = SamTorch(model, name, unpadded=False)
            tensor, _ = preprocess_spec(g.frame(), REGISTRY[name].inputs)
            diffs["preprocess"] = np.abs(tensor - ref["preprocess"]).max()
            case = cases[first]
            pts, lab = np.array(case["points"], np.float32), np.array(case["labels"])
            scale = np.array([854 / 1024, 480 / (576 if spec["family"] == "efficientvit" else 1024)], np.float32)
            emb = ImageEmbedding(torch.from_numpy(g.decoder_embedding()), g.ORIGINAL_SIZE,
                                 REGISTRY[name].inputs.input_size(g.ORIGINAL_SIZE))
            prediction = segmenter.decode_batch(emb, [Prompt(pts * scale, lab)], candidates=True)[0]
            diffs["upscaled mask"] = np.abs(prediction.candidates[0].logits - ref["postprocess"]).max()
        print(f"{name}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()) + f"  ({time.time() - t0:.0f} s)",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("fixtures", "compare"))
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    install_shims()
    torch.set_grad_enabled(False)
    (cmd_fixtures if args.command == "fixtures" else cmd_compare)(args.names)


if __name__ == "__main__":
    main()
