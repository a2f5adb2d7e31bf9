"""Export our mask decoder to ONNX with a dynamic batch, so that onnxruntime decodes every
object of a frame in one call (SAM's own ONNX export takes one prompt set per call).

The graph takes the inputs of SAM's export with a batch dimension, plus ``token_mask``: prompt
sets are padded to one length with SAM's "not a point" token, and ``token_mask`` (1 real, 0
padding) keeps the padding out of the attention, so each row decodes as it would alone. It picks
each row's mask as SAM's export does (single-mask output for 3+ real tokens, else the best
multimask output) and returns it upscaled to ``orig_im_size``, with its IoU and low-res logits.
The low-res graph (``full_size=False``) returns all four of SAM's outputs instead, their IoUs
and low-res logits, and leaves the choice to the caller
(:func:`~samtrack.segmenters.transforms.single_mask_index`): SAM computes the four anyway, and
a loop that chooses among them pays nothing more for them.
A decoder can be exported for an unpadded frame's embedding grid (e.g. 36 x 64 for 16:9), with the
image encoder at the matching input size (:func:`export_encoder`), so that the ONNX runtimes
encode frames without the square's padding.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .modeling import Sam
from .modeling.mask_decoder import single_mask_choice

INPUTS = ["image_embeddings", "point_coords", "point_labels", "token_mask", "mask_input", "has_mask_input", "orig_im_size"]
OUTPUTS = ["masks", "iou_predictions", "low_res_masks"]


LOW_RES_OUTPUTS = OUTPUTS[1:]


class BatchedDecoder(nn.Module):
    """The traceable forward that :func:`export_decoder` exports; with ``full_size=False`` it
    stops at the low-res logits of all four outputs (the caller chooses, and upscales the masks
    it uses)."""

    def __init__(self, model: Sam, full_size: bool = True) -> None:
        super().__init__()
        self.model = model
        self.image_size = model.prompt_encoder.input_image_size[0]
        self.full_size = full_size

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        token_mask: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        valid = token_mask > 0.5
        masks, iou = self.model(
            image_embeddings, point_coords, point_labels, mask_input=mask_input, has_mask=has_mask_input > 0.5,
            token_mask=valid,
        )
        if not self.full_size:
            return iou, masks
        chosen = single_mask_choice(iou, valid.sum(dim=1))
        rows = torch.arange(masks.shape[0])
        low_res = masks[rows, chosen].unsqueeze(1)
        scores = iou[rows, chosen].unsqueeze(1)
        # Up to the encoder's input (the square, or an unpadded frame's multiple-of-16 sides):
        # low-res logits are at 1/4 of it.
        up = F.interpolate(low_res, (4 * low_res.shape[-2], 4 * low_res.shape[-1]), mode="bilinear", align_corners=False)
        # The frame's size inside the padded square, rounded half up as SAM's resize does.
        scale = self.image_size / torch.max(orig_im_size)
        inner = torch.floor(orig_im_size * scale + 0.5).to(torch.int64)
        up = up[..., : inner[0], : inner[1]]
        orig = orig_im_size.to(torch.int64)
        up = F.interpolate(up, (orig[0], orig[1]), mode="bilinear", align_corners=False)
        return up, scores, low_res


def export_decoder(model: Sam, path: str | Path, opset: int = 17, grid: tuple[int, int] | None = None,
                   full_size: bool = True) -> None:
    """Write ``model``'s decoder as a batched ONNX graph to ``path``, for embeddings of ``grid``
    (``(h, w)``; None: the square's 64 x 64); ``full_size=False`` leaves out the ``masks``
    output (and ``orig_im_size`` input): the graph ends at the low-res logits, and returns all
    four outputs per row (``iou_predictions`` ``[B, 4]``, ``low_res_masks`` ``[B, 4, h, w]``)."""
    model = model.eval()
    grid = tuple(grid or model.prompt_encoder.image_embedding_size)
    low = (4 * grid[0], 4 * grid[1])
    example = (
        torch.zeros(1, model.prompt_encoder.embed_dim, *grid),
        torch.zeros(2, 3, 2),
        torch.tensor([[1.0, 0.0, -1.0], [1.0, -1.0, -1.0]]),
        torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]),
        torch.zeros(2, 1, *low),
        torch.tensor([1.0, 0.0]),
        torch.tensor([480.0, 854.0]),
    )
    dynamic = {
        "point_coords": {0: "batch", 1: "tokens"},
        "point_labels": {0: "batch", 1: "tokens"},
        "token_mask": {0: "batch", 1: "tokens"},
        "mask_input": {0: "batch"},
        "has_mask_input": {0: "batch"},
        "masks": {0: "batch", 2: "height", 3: "width"},
        "iou_predictions": {0: "batch"},
        "low_res_masks": {0: "batch"},
    }
    inputs, outputs = (INPUTS, OUTPUTS) if full_size else (INPUTS[:-1], LOW_RES_OUTPUTS)
    if not full_size:
        example = example[:-1]
        del dynamic["masks"]
    with torch.no_grad(), _quiet_export():
        torch.onnx.export(
            BatchedDecoder(model, full_size), example, str(path), input_names=inputs, output_names=outputs,
            dynamic_axes=dynamic, opset_version=opset, dynamo=False,
        )


def export_encoder(model: Sam, path: str | Path, input_size: tuple[int, int], opset: int = 17) -> None:
    """Write ``model``'s image encoder as an ONNX graph for inputs of exactly ``input_size``
    (``(h, w)``, multiples of 16): ``input`` ``[1, 3, h, w]`` -> ``output`` ``[1, 256, h/16, w/16]``.
    A frame encoded at its own aspect skips the square's padding (a 16:9 frame: 57 % of the work)."""
    model = model.eval()
    example = torch.zeros(1, 3, *input_size)
    with torch.no_grad(), _quiet_export():
        torch.onnx.export(model.image_encoder, (example,), str(path), input_names=["input"], output_names=["output"],
                          opset_version=opset, dynamo=False)


@contextmanager
def _quiet_export():
    with warnings.catch_warnings():
        # The TorchScript exporter (the torch.export one needs onnxscript) warns that it is
        # deprecated, and the tracer that sizes computed from orig_im_size become constants in
        # Python; they stay dynamic in the graph (the tests run it at other sizes).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # It warns that gathers with negative indices would be wrong; ours (rows, mask numbers)
        # are never negative.
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        yield
