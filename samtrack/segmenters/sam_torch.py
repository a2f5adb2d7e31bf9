"""SAM models in PyTorch (:mod:`samtrack.segmenters.sam`) as a :class:`Segmenter`: CPU, CUDA or
MPS; a frame's prompt sets decoded in batches; frames encoded at their own aspect (or padded to
the square).

Pre- and post-processing are the ONNX plugin's (:mod:`.transforms`), and a single decode picks
its mask as SAM's ONNX export does, so ``mobilesam`` and ``mobilesam-onnx`` give the same masks
from the same weights. Each registered model's :class:`~.transforms.InputSpec` says how it takes
frames and prompts (EfficientViT-SAM's 512 input, EfficientSAM's stretched square and 6-token
prompts).
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np

from samtrack import torch_models, weights
from samtrack.config import SegmenterConfig
from samtrack.errors import ConfigError, WeightsError

from . import transforms
from .transforms import SAM_INPUTS, InputSpec
from .base import ImageEmbedding, MaskPrediction, Prompt

try:
    import torch
    import torch.nn.functional as F

    from .sam.modeling.mask_decoder import single_mask_choice
    from .sam.modeling.tiny_vit import STRIDE
except ImportError:  # the default install has no torch; build() says which extra to add
    torch = None


def require_torch() -> None:
    torch_models.require_torch("the PyTorch segmenters")


def pick_device(requested: str) -> str:
    """``auto`` -> cuda, else mps, else cpu; an explicit device must be available."""
    return torch_models.pick_device(requested, key="segmenter.device")


class SamTorch:
    """The :class:`~samtrack.segmenters.base.Segmenter` for our PyTorch SAM models.

    Args:
        model: a :class:`~samtrack.segmenters.sam.modeling.Sam` with its weights loaded.
        name: the segmenter's name (``mobilesam``, ``efficientvit-sam-l0``, ...).
        device: ``cpu``, ``cuda`` or ``mps``.
        unpadded: encode frames padded only to multiples of 16, not to the square.
        precision: ``fp32``, or ``fp16``/``bf16`` autocast (CUDA only).
        max_batch: prompt sets per decoder call (None: 1 on CPU, unlimited elsewhere).
        inputs: how the model takes frames and prompts; None: its registry entry's (by
            ``name``), else SAM's.

    The model is prepared for inference in place: its image encoder's BatchNorms are folded into
    the convolutions where it can (TinyViT, and RepViT's RepVGGDW branches too), and on CPU and
    CUDA it runs channels-last (for TinyViT together 39 % less encoder time on 2 CPU cores,
    embeddings within 2e-6).
    """

    all_outputs = True

    def __init__(
        self,
        model,
        name: str,
        device: str = "cpu",
        unpadded: bool = False,
        precision: str = "fp32",
        max_batch: int | None = None,
        inputs: InputSpec | None = None,
    ) -> None:
        require_torch()
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if inputs is None:
            from .sam.build import REGISTRY

            inputs = REGISTRY[name].inputs if name in REGISTRY else SAM_INPUTS
        if unpadded and not inputs.any_aspect:
            raise ConfigError(f"segmenter.unpadded=true: {name} encodes only its square input; use false (or null)")
        self.inputs = inputs
        if precision != "fp32" and device != "cuda":
            raise ConfigError(f"segmenter.precision={precision} runs on CUDA only (this run uses {device}); use fp32")
        self.model = model.to(device).eval()
        if hasattr(model.image_encoder, "fuse_for_inference"):
            model.image_encoder.fuse_for_inference()
        self.device = torch.device(device)
        # Channels-last suits the convolutions (oneDNN, cuDNN) and makes TinyViT's switches to
        # channels-last attention free; MPS kernels are not all channels-last aware.
        self._memory_format = torch.channels_last if self.device.type in ("cpu", "cuda") else torch.contiguous_format
        model.image_encoder.to(memory_format=self._memory_format)
        self.name = name
        self.unpadded = unpadded
        self.precision = precision
        self.max_batch = max_batch if max_batch is not None else (1 if self.device.type == "cpu" else None)
        # What changes an embedding's values, for caches keyed by it.
        self.embedding_id = name + ("-unpadded" if unpadded else "") + ("" if precision == "fp32" else f"-{precision}")
        # The decoder's position encoding per embedding grid: fixed once the weights are loaded,
        # so it is computed once, not on every decoder call (0.8 of 39 ms per call on 2 cores).
        self._dense_pe: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def from_config(cls, config: SegmenterConfig, log: weights.Log = weights.log_stderr) -> "SamTorch":
        """Build ``config.name`` with its weights: ``config.checkpoint`` (a state_dict file), or
        the cache (see ``SegmenterConfig.weights``); the choice of weights and device is logged."""
        require_torch()
        from .sam.build import build_sam, cached_checkpoint, get_entry

        entry = get_entry(config.name)
        if config.name != "mobilesam" and config.weights != "auto":
            raise ConfigError(f"segmenter.weights={config.weights} picks MobileSAM weights; {config.name} has its own "
                              "(use auto, or segmenter.checkpoint for another file)")
        if config.unpadded and not entry.inputs.any_aspect:
            raise ConfigError(f"segmenter.unpadded=true: {config.name} encodes only its square input; use false (or null)")
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        device = pick_device(config.device)
        entry_name = "" if config.checkpoint is not None else (
            _pick_weights(config.weights) if config.name == "mobilesam" else config.name)
        path, source = torch_models.checkpoint_choice(
            config.checkpoint, lambda: cached_checkpoint(entry_name, log=log), entry_name, entry.checkpoint_name)
        model = build_sam(config.name, path)
        unpadded = (entry.unpadded and entry.inputs.any_aspect) if config.unpadded is None else config.unpadded
        log(f"segmenter {config.name}: {source} on {device}, frames {'unpadded' if unpadded else 'padded to the square'}"
            f"{'' if config.precision == 'fp32' else ', ' + config.precision}")
        if not entry.inputs.mask_prompts:
            log(f"segmenter {config.name}: the model takes no mask prompts, so every decoder pass uses the points "
                "and box alone")
        return cls(model, config.name, device=device, unpadded=unpadded, precision=config.precision,
                   max_batch=config.max_batch, inputs=entry.inputs)

    # -- encoding ------------------------------------------------------------------------------

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Encode an RGB uint8 ``[H, W, 3]`` frame into ``[1, 256, h, w]`` (64 x 64 padded;
        e.g. 64 x 36 unpadded for 16:9), kept on the segmenter's device. Its ``input_size`` is
        the frame's size in the model's prompt frame (1024 for every model)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
        # Unpadded sides are multiples of the encoder's stride (EdgeSAM's stage fusion needs 32).
        multiple = getattr(self.model.image_encoder, "input_multiple", STRIDE)
        tensor, input_size = transforms.preprocess_spec(image, self.inputs, multiple=multiple if self.unpadded else None)
        with self._autocast():
            images = torch.from_numpy(tensor).to(self.device).contiguous(memory_format=self._memory_format)
            features, early = self.model.encode_with_early(images)
        return ImageEmbedding(features=features.contiguous().float(), original_size=image.shape[:2], input_size=input_size,
                              early_features=None if early is None else early.contiguous().float())

    # -- decoding ------------------------------------------------------------------------------

    def decode(
        self,
        embedding: ImageEmbedding,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
    ) -> MaskPrediction:
        """:meth:`Segmenter.decode <samtrack.segmenters.base.Segmenter.decode>`."""
        return self.decode_batch(embedding, [Prompt(points, labels, box, mask_input)])[0]

    def decode_batch(
        self, embedding: ImageEmbedding, prompts: Sequence[Prompt], candidates: bool = False
    ) -> list[MaskPrediction]:
        """Decode the prompt sets in decoder calls of up to ``max_batch`` each. Shorter prompts
        are padded with SAM's "not a point" token and masked out of attention, so each result
        equals its own :meth:`decode`."""
        step = self.max_batch or len(prompts)
        return [p for start in range(0, len(prompts), step) for p in self._decode_chunk(embedding, prompts[start:start + step], candidates)]

    def _decode_chunk(
        self, embedding: ImageEmbedding, prompts: Sequence[Prompt], candidates: bool
    ) -> list[MaskPrediction]:
        if not prompts:
            return []
        features = embedding.features
        if not isinstance(features, torch.Tensor):  # e.g. from an on-disk embedding cache
            features = torch.from_numpy(np.asarray(features, np.float32))
        features = features.to(self.device)
        early = None
        if self.model.uses_early_features:
            early = embedding.early_features
            if early is None:
                raise ValueError(f"{self.name} decodes from its encoder's early features; this embedding has none "
                                 "(made by another segmenter?)")
            if not isinstance(early, torch.Tensor):
                early = torch.from_numpy(np.asarray(early, np.float32))
            early = early.to(self.device)
        grid = tuple(features.shape[-2:])
        low_res_shape = (4 * grid[0], 4 * grid[1])
        coords, labels, valid = transforms.batch_prompt_tokens(prompts, embedding.original_size, spec=self.inputs)
        fixed_length = self.inputs.prompt_length is not None
        # The mask choice counts tokens as SAM does (its padding point included) for every model.
        lengths = np.array([_sam_token_count(p) for p in prompts]) if fixed_length else valid.sum(axis=1)
        mask_input, has_mask = None, None
        # A model without mask prompts (EfficientSAM) decodes from points and boxes alone (said
        # once when it is built); the shape is still checked.
        if any(p.mask_input is not None for p in prompts) and not self.inputs.mask_prompts:
            transforms.batch_mask_inputs(prompts, low_res_shape)
        elif any(p.mask_input is not None for p in prompts):
            stack, given = transforms.batch_mask_inputs(prompts, low_res_shape)
            mask_input = torch.from_numpy(stack).to(self.device)
            has_mask = None if given.all() else torch.from_numpy(given).to(self.device)
        image_pe = self._dense_pe.get(grid)
        if image_pe is None:
            with torch.inference_mode():
                image_pe = self._dense_pe[grid] = self.model.prompt_encoder.get_dense_pe(grid)
        with self._autocast():
            masks, iou = self.model.decode(
                features,
                torch.from_numpy(coords).to(self.device),
                torch.from_numpy(labels).to(self.device),
                mask_input=mask_input,
                has_mask=has_mask,
                # A fixed-length layout's padding takes part in attention, as in its reference.
                token_mask=None if fixed_length or valid.all() else torch.from_numpy(valid).to(self.device),
                image_pe=image_pe,
                early_features=early,
            )
        masks, iou = masks.float(), iou.float()
        chosen = single_mask_choice(iou, torch.from_numpy(lengths).to(iou.device))
        rows = torch.arange(len(prompts), device=iou.device)
        picked = self._upscale(masks[rows, chosen][:, None], embedding)[:, 0]
        picked_low = masks[rows, chosen].cpu().numpy()
        picked_iou = iou[rows, chosen].cpu().numpy()
        out = [
            MaskPrediction(logits=picked[i], iou=float(picked_iou[i]), low_res_logits=picked_low[i])
            for i in range(len(prompts))
        ]
        if candidates:
            full = self._upscale(masks, embedding)
            low, scores = masks.cpu().numpy(), iou.cpu().numpy()
            for i, prediction in enumerate(out):
                prediction.candidates = [
                    MaskPrediction(logits=full[i, k], iou=float(scores[i, k]), low_res_logits=low[i, k])
                    for k in range(masks.shape[1])
                ]
        return out

    def _upscale(self, low_res: "torch.Tensor", embedding: ImageEmbedding) -> np.ndarray:
        """``[B, K, 4h, 4w]`` low-res logits -> ``[B, K, H, W]`` at the original frame size, as
        SAM does: up to the encoder input, crop its padding, resize to the frame (or, for
        EfficientSAM, bicubic straight to the frame)."""
        if self.inputs.upscale == "bicubic":
            return F.interpolate(low_res, embedding.original_size, mode="bicubic", align_corners=False).cpu().numpy()
        h, w = embedding.input_size
        # Low-res logits are at 1/4 of the encoder input, padding included.
        padded = (4 * low_res.shape[-2], 4 * low_res.shape[-1])
        up = F.interpolate(low_res, padded, mode="bilinear", align_corners=False)
        up = F.interpolate(up[..., :h, :w], embedding.original_size, mode="bilinear", align_corners=False)
        return up.cpu().numpy()


def _sam_token_count(prompt: Prompt) -> int:
    """The prompt's token count in SAM's layout: its points, then a box's two corners or one
    padding point."""
    return (0 if prompt.points is None else len(prompt.points)) + (1 if prompt.box is None else 2)


def _pick_weights(choice: str) -> str:
    """The registry entry for ``segmenter.weights``: ``auto`` takes the official checkpoint when
    it is cached and otherwise the converted one (fetched, i.e. converted, on first use)."""
    if choice != "auto":
        return choice
    try:
        weights.cached_path("mobilesam")
        return "mobilesam"
    except WeightsError:
        return "mobilesam-torch"
