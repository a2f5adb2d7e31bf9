"""SAM-PT's decoder passes for every object of a frame, pass k of all objects in one batch.

Per object: a positives pass, then a positives + negatives pass prompted with the first pass's
low-res logits (or, with mask memory, one pass with all points and the previous frame's
logits), then refinement passes that add the current mask's box. Objects need different numbers
of passes (an object without negatives has no second pass, refinement stops when a mask
empties), so each batch holds the objects still at that pass. The result for each object is
what decoding it alone gives. With ``decode.multimask``, the last pass's mask may then be
replaced by another of SAM's outputs (:func:`select_candidate`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np

from .config import DecodeConfig
from .segmenters import ImageEmbedding, MaskPrediction, Prompt, Segmenter
from .segmenters.base import gives_all_outputs

if TYPE_CHECKING:
    from .appearance import ScoreMap


@dataclass
class ObjectPrompt:
    """One object's prompt on a frame, in the segmenter's frame pixels.

    Attributes:
        xy: float32 ``[N, 2]`` points (may be empty with a box).
        labels: int ``[N]``: 1 positive, 0 negative.
        box: ``(x0, y0, x1, y1)`` or None.
        prior: low-res logits of the frame before (mask memory), or None.
        previous: the object's mask on the frame before, for ``multimask=consistent``.
        look: the object's appearance scores on this frame, for ``multimask=grow``.
        flow: the flow candidate's prompt (:class:`FlowCandidate`), or None.
    """

    xy: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None
    prior: np.ndarray | None = None
    previous: np.ndarray | None = None
    flow: "FlowCandidate | None" = None
    look: "ScoreMap | None" = None


@dataclass
class FlowCandidate:
    """A second candidate for an object, prompted from its previous mask moved by the flow.

    Attributes:
        warped: bool ``[H, W]``: the previous mask moved onto this frame (what candidates are
            compared with).
        box: the box prompt (of ``warped``, grown), or None.
        prior: the moved low-res logits as the mask prompt, or None.
        select: ``flow``, ``agreement``, ``iou`` or ``sum`` (:func:`choose`).
    """

    warped: np.ndarray
    box: np.ndarray | None
    prior: np.ndarray | None
    select: str = "agreement"
    look: "Callable[[np.ndarray], float] | None" = None  # a mask's appearance score, for ``look``/``all``
    margin: float = 0.0  # ``iou``: by how much the candidate's predicted IoU must beat the loop's


class DecodePasses:
    """Runs the passes; ``measure`` times the decoder calls (a context manager factory)."""

    def __init__(self, segmenter: Segmenter, config: DecodeConfig, measure: Callable) -> None:
        self.segmenter = segmenter
        self.config = config
        self.measure = measure

    def run(self, embedding: ImageEmbedding, objects: dict[int, ObjectPrompt]) -> dict[int, MaskPrediction]:
        """Each object's final prediction; an object whose mask scores under the IoU threshold
        is absent."""
        cfg = self.config
        candidates = cfg.multimask != "off"
        flowing = {i: o.flow for i, o in objects.items() if o.flow is not None and (o.flow.box is not None or o.flow.prior is not None)}
        current: dict[int, MaskPrediction] = {}
        first: dict[int, Prompt] = {}
        second: set[int] = set()
        for obj_id, o in objects.items():
            if obj_id in flowing and flowing[obj_id].select == "flow":
                continue  # the flow candidate is taken whatever the loop's passes give
            positive = o.labels == 1
            if o.prior is not None:
                first[obj_id] = self._prompt(o, mask_input=o.prior)
            elif cfg.use_negative_pass and (~positive).any() and positive.any():
                first[obj_id] = Prompt(o.xy[positive], o.labels[positive], o.box)
                second.add(obj_id)
            else:
                first[obj_id] = self._prompt(o)
        if first:
            current.update(self._batch(embedding, first, candidates))
        if second:
            prompts = {i: self._prompt(objects[i], mask_input=current[i].low_res_logits) for i in second}
            current.update(self._batch(embedding, prompts, candidates))
        refining = set(current)
        for _ in range(cfg.refine_iters):
            prompts = {}
            for obj_id in list(refining):
                box = mask_box(current[obj_id].mask)
                if box is None:
                    refining.discard(obj_id)
                else:
                    prompts[obj_id] = self._prompt(objects[obj_id], box=box, mask_input=current[obj_id].low_res_logits)
            if not prompts:
                break
            current.update(self._batch(embedding, prompts, candidates))
        if candidates:
            current = {i: select_candidate(p, cfg.multimask, objects[i].previous, objects[i].look, cfg)
                       for i, p in current.items()}
        if flowing:
            # All objects' flow candidates in one batch.
            prompts = {}
            for i, f in flowing.items():
                o = objects[i]
                points = (o.xy, o.labels) if len(o.xy) else (None, None)
                prompts[i] = Prompt(*points, box=f.box if f.box is not None else o.box, mask_input=f.prior)
            for i, p in self._batch(embedding, prompts, False).items():
                current[i] = choose(current.get(i), p, flowing[i])
        return {i: p for i, p in current.items() if p.iou >= cfg.iou_threshold}

    @staticmethod
    def _prompt(o: ObjectPrompt, box: np.ndarray | None = None, mask_input: np.ndarray | None = None) -> Prompt:
        """All the object's points, with its own box unless ``box`` replaces it."""
        points = (o.xy, o.labels) if len(o.xy) else (None, None)
        return Prompt(*points, box=o.box if box is None else box, mask_input=mask_input)

    def _batch(self, embedding: ImageEmbedding, prompts: dict[int, Prompt], candidates: bool) -> dict[int, MaskPrediction]:
        with self.measure("decoder"):
            predictions = self.segmenter.decode_batch(embedding, list(prompts.values()), candidates=candidates)
        return dict(zip(prompts, predictions))


def multimask_for(config: DecodeConfig, segmenter: Segmenter, log: Callable[[str], None]) -> DecodeConfig:
    """``config`` with ``multimask`` as ``segmenter`` allows: off, and said to ``log``, where it
    gives one mask per prompt (mobilesam-onnx on padded frames: SAM's own ONNX export)."""
    if config.multimask == "off" or gives_all_outputs(segmenter):
        return config
    log(f"decode.multimask={config.multimask}: off (segmenter {segmenter.name} gives one mask per prompt here; "
        "mobilesam-onnx gives all four on unpadded frames, which need samtrack[torch])")
    return replace(config, multimask="off")


def select_candidate(prediction: MaskPrediction, how: str, previous: np.ndarray | None,
                     look: "ScoreMap | None" = None, config: DecodeConfig | None = None) -> MaskPrediction:
    """Replace a prediction by one of its candidates (single-mask output first, then the three
    multimask ones): ``best_iou`` the multimask output with the highest predicted IoU;
    ``consistent`` the output whose mask overlaps ``previous`` best (unchanged without one);
    ``stability`` the output, of all four, whose low-res logits have the highest stability score
    (EdgeSAM's demo picks its mask so; the prediction keeps its own predicted IoU); ``grow``
    (:func:`grow_candidate`) an output that adds object-like cells to the prediction's mask (or,
    with ``trim_fraction``, drops background-like ones)."""
    options = prediction.candidates
    if how == "grow":
        return grow_candidate(prediction, look, config or DecodeConfig()) if look is not None else prediction
    if how == "best_iou":
        return max(options[1:], key=lambda c: c.iou)
    if how == "stability":
        from .automask import stability_score

        # SAM's offset (1.0 around the 0 threshold); an empty mask's 0/0 ranks last.
        scores = stability_score(np.stack([c.low_res_logits for c in options]), 0.0, 1.0)
        return options[int(np.argmax(np.nan_to_num(scores, nan=-1.0)))]
    if how == "consistent" and previous is not None and previous.any():
        return max(options, key=lambda c: _iou(c.mask, previous))
    return prediction


def grow_candidate(prediction: MaskPrediction, look: "ScoreMap", config: DecodeConfig) -> MaskPrediction:
    """The output that keeps the prediction's mask (``grow_keep`` of it) and adds the most cells
    of which ``grow_fraction`` or more look like the object; else, with ``trim_fraction``, the
    output inside the mask (``grow_keep`` of it in the mask) that drops the most cells of which
    under ``trim_fraction`` look like the object; else the prediction itself.

    Points on a part of the object prompt SAM for that part (a rider without the motorbike, a
    duck's body without its wings), and the points the loop samples next come from that mask:
    the object shrinks to the part for good. Points on a look-alike next to it keep that in the
    same way. Another of SAM's outputs is often the whole, or the object alone, and the object's
    appearance tells which. Compared on the low-res logits (a 16th of the frame's pixels;
    nothing is upscaled).
    """
    mask = prediction.low_res_logits > 0
    area = np.count_nonzero(mask)
    best, most = prediction, config.grow_min_cells - 1
    options = [(o, o.low_res_logits > 0) for o in prediction.candidates if o.iou >= config.iou_threshold]
    for option, grown in options:
        if np.count_nonzero(grown & mask) < config.grow_keep * area:
            continue
        fraction, cells = look.low_res_fraction(grown & ~mask)
        if fraction >= config.grow_fraction and cells > most:
            best, most = option, cells
    if best is prediction and config.trim_fraction:
        for option, kept in options:
            if np.count_nonzero(kept & mask) < config.grow_keep * np.count_nonzero(kept):
                continue
            fraction, cells = look.low_res_fraction(mask & ~kept)
            if fraction < config.trim_fraction and cells > most:
                best, most = option, cells
    return best


def choose(loop: MaskPrediction | None, flow: MaskPrediction, candidate: FlowCandidate) -> MaskPrediction:
    """The loop's prediction or the flow candidate's, by ``candidate.select``: ``flow`` always the
    flow one; ``agreement`` the one whose mask overlaps the moved previous mask best; ``iou`` the
    higher predicted IoU; ``sum`` agreement plus predicted IoU; ``look`` the higher appearance
    score (``candidate.look``); ``all`` the three summed."""
    if loop is None or candidate.select == "flow":
        return flow
    if candidate.select == "iou":
        return flow if flow.iou > loop.iou + candidate.margin else loop
    look = candidate.look or (lambda mask: 0.0)
    score = {"agreement": lambda p: _iou(p.mask, candidate.warped), "sum": lambda p: _iou(p.mask, candidate.warped) + p.iou,
             "look": lambda p: look(p.mask), "all": lambda p: _iou(p.mask, candidate.warped) + p.iou + look(p.mask)}
    rate = score[candidate.select]
    return flow if rate(flow) > rate(loop) else loop


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """The tight box ``(x0, y0, x1, y1)`` of a mask, or None when it has under 2 pixels."""
    if np.count_nonzero(mask) < 2:
        return None
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return np.array([x, y, x + w - 1, y + h - 1], np.float32)
