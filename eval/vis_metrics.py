"""Video instance segmentation metrics: the YouTube-VIS / UVO video-level AP and AR.

Our own implementation of the official evaluation (``YTVOSeval`` of youtubevos/cocoapi, the
video evaluation public UVO scripts call; UVO's own kit could not be fetched here): a ground-truth object and a predicted one are compared by their
spatio-temporal mask IoU (intersections summed over the frames, over unions summed over the
frames), objects are matched greedily by score at IoU thresholds 0.50:0.05:0.95, and precision
(101 recall points) and recall are averaged as COCO does, for area ranges of the objects' mean
area over the frames where they are present, and at most 1, 10 and 100 predictions per video.
Equal to the official code on synthetic files that exercise every branch (within 1e-6: see
``tests/test_vis_metrics.py`` and ``tools/vis_reference/``).

Inputs are the official formats:

- ground truth (YouTube-VIS / UVO annotation JSON): ``videos`` (``id``, ``height``, ``width``),
  ``categories`` (``id``), ``annotations`` (``id``, ``video_id``, ``category_id``, ``iscrowd``,
  ``segmentations``: one entry per frame, null where the object is absent, as polygons, an
  uncompressed or a compressed RLE; ``areas``: per frame, null where absent);
- results: a list of ``{"video_id", "category_id", "score", "segmentations"}`` (compressed RLE or
  null per frame).

As in the official code: a crowd object (``iscrowd``) is ignored and may match several
predictions; objects and predictions whose mean area falls outside a range are ignored for it
(predictions only when unmatched); an object's mean area averages its non-zero per-frame areas
(the ground truth's own ``areas``, else measured from its masks); frames are paired in order and
the longer tube's extra frames are not counted; a pair with an empty union has IoU 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from samtrack.errors import InputError

# YouTube-VIS's area ranges (pixels, the official defaults); COCO's image ones are 32^2 / 96^2.
YTVIS_AREA_RANGES = {"all": (0.0, 1e5**2), "small": (0.0, 128.0**2), "medium": (128.0**2, 256.0**2),
                     "large": (256.0**2, 1e5**2)}
COCO_AREA_RANGES = {"all": (0.0, 1e5**2), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2),
                    "large": (96.0**2, 1e5**2)}
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class VisParams:
    """What is averaged. ``use_categories=False`` is class-agnostic (UVO's open-world setting):
    every object and prediction of a video is compared with every other whatever its
    category."""

    iou_thresholds: np.ndarray = field(default_factory=lambda: np.linspace(0.5, 0.95, 10))
    recall_thresholds: np.ndarray = field(default_factory=lambda: np.linspace(0.0, 1.0, 101))
    max_dets: tuple[int, ...] = (1, 10, 100)
    area_ranges: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(YTVIS_AREA_RANGES))
    use_categories: bool = True


@dataclass
class VisEvaluation:
    """``stats``: the 12 summary numbers by name (``STAT_NAMES``; -1 where nothing was
    scored); ``precision`` ``[T, R, K, A, M]`` and ``recall`` ``[T, K, A, M]`` as the official
    ``eval`` arrays (-1 where a category has no ground truth)."""

    stats: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    params: VisParams


@dataclass
class _Tube:
    id: int
    video_id: Any
    category_id: Any
    segmentations: list  # RLE dict per frame, or None where absent
    areas: list  # per frame, None where absent
    mean_area: float
    crowd: int = 0
    score: float = 0.0

    @property
    def areas_measured(self) -> list:
        """Per-frame pixel counts of the masks (0 where absent); for ground truth these may
        differ from the file's ``areas``, which only rank objects by size."""
        if self._measured is None:
            self._measured = [float(mask_utils.area(s)) if s is not None else 0.0 for s in self.segmentations]
        return self._measured

    _measured: list | None = None


# -- loading --------------------------------------------------------------------------------

def _mean_area(areas: Sequence) -> float:
    present = [a for a in areas if a]  # absent (None) and zero-area frames do not count
    return float(np.mean(np.array(present))) if present else 0.0


def _to_rle(segm: Any, height: int, width: int) -> dict:
    if isinstance(segm, list):  # polygons
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(segm, height, width)
    return segm


def _ground_truth(gt: dict, source: str) -> tuple[dict, list[_Tube], list]:
    try:
        videos = {v["id"]: (int(v["height"]), int(v["width"])) for v in gt["videos"]}
        categories = sorted(c["id"] for c in gt.get("categories", []))
        tubes = []
        for ann in gt["annotations"]:
            height, width = videos[ann["video_id"]]
            segs = [_to_rle(s, height, width) if s else None for s in ann["segmentations"]]
            areas = ann["areas"] if "areas" in ann else [int(mask_utils.area(s)) if s else None for s in segs]
            crowd = ann.get("iscrowd", 0)
            tubes.append(_Tube(ann["id"], ann["video_id"], ann["category_id"], segs, list(areas), _mean_area(areas),
                               crowd=int(bool(crowd))))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"not a YouTube-VIS / UVO annotation file ({type(exc).__name__}: {exc})", source) from None
    return videos, tubes, categories


def _results(results: list, videos: dict, source: str) -> list[_Tube]:
    if not isinstance(results, list):
        raise InputError("results must be a list of {video_id, category_id, score, segmentations}", source)
    tubes = []
    for i, r in enumerate(results):
        try:
            if r["video_id"] not in videos:
                raise InputError(f"results[{i}]: video_id {r['video_id']!r} is not in the ground truth", source)
            segs = [s if s else None for s in r["segmentations"]]
            areas = [float(mask_utils.area(s)) if s else None for s in segs]
            tubes.append(_Tube(i + 1, r["video_id"], r["category_id"], segs, areas, _mean_area(areas),
                               score=float(r["score"])))
        except (KeyError, TypeError) as exc:
            raise InputError(f"results[{i}]: {type(exc).__name__}: {exc}", source) from None
    return tubes


# -- matching -------------------------------------------------------------------------------

def tube_ious(dts: list[_Tube], gts: list[_Tube]) -> np.ndarray:
    """float64 ``[D, G]`` spatio-temporal IoUs: intersections over unions, both summed over the
    frames paired in order (a pair's frames stop at the shorter tube's end)."""
    ious = np.zeros((len(dts), len(gts)))
    if not dts or not gts:
        return ious
    inter = np.zeros_like(ious)
    union = np.zeros_like(ious)
    d_len = np.array([len(d.segmentations) for d in dts])[:, None]
    g_len = np.array([len(g.segmentations) for g in gts])[None, :]
    n_frames = int(max(d_len.max(), g_len.max()))
    d_area = np.array([d.areas_measured + [0.0] * (n_frames - len(d.areas_measured)) for d in dts], float)
    for f in range(int(min(d_len.max(), g_len.max()))):
        counted = (d_len > f) & (g_len > f)
        d_on = np.array([f < len(d.segmentations) and d.segmentations[f] is not None for d in dts])
        g_on = np.array([f < len(g.segmentations) and g.segmentations[f] is not None for g in gts])
        g_area = np.array([float(mask_utils.area(g.segmentations[f])) if on else 0.0 for g, on in zip(gts, g_on)])
        both = d_on[:, None] & g_on[None, :] & counted
        if both.any():
            di, gi = np.flatnonzero(d_on), np.flatnonzero(g_on)
            pair_iou = np.asarray(mask_utils.iou([dts[i].segmentations[f] for i in di],
                                                 [gts[j].segmentations[f] for j in gi], [0] * len(gi)), float)
            pair_iou = pair_iou.reshape(len(di), len(gi))
            total = d_area[di, f][:, None] + g_area[gi][None, :]
            # pycocotools gives the IoU; its intersection, an integer, is recovered exactly
            pair_inter = np.rint(pair_iou * total / (1 + pair_iou))
            block = np.ix_(di, gi)
            inter[block] += np.where(both[block], pair_inter, 0)
            union[block] += np.where(both[block], total - pair_inter, 0)
        only_d = d_on[:, None] & ~g_on[None, :] & counted
        only_g = ~d_on[:, None] & g_on[None, :] & counted
        union += np.where(only_d, d_area[:, f][:, None], 0) + np.where(only_g, g_area[None, :], 0)
    np.divide(inter, union, out=ious, where=union > 0)
    return ious


def _by_score(dts: list[_Tube]) -> list[_Tube]:
    order = np.argsort([-d.score for d in dts], kind="mergesort")  # stable: ties keep file order
    return [dts[i] for i in order]


def _match(gts: list[_Tube], dts: list[_Tube], ious: np.ndarray, area: tuple[float, float], params: VisParams) -> dict:
    """One video, category and area range: each threshold's greedy matching (highest-scored
    prediction first, to the unmatched object of highest IoU, preferring objects not ignored)."""
    ignored = np.array([int(g.crowd or not (area[0] <= g.mean_area <= area[1])) for g in gts], int)
    order = np.argsort(ignored, kind="mergesort")
    gts = [gts[i] for i in order]
    ignored = ignored[order]
    if ious.size:
        ious = ious[:, order]
    n_thr, n_gt, n_dt = len(params.iou_thresholds), len(gts), len(dts)
    gt_match = np.zeros((n_thr, n_gt))
    dt_match = np.zeros((n_thr, n_dt))
    dt_ignored = np.zeros((n_thr, n_dt), bool)
    if len(ious):
        for t, threshold in enumerate(params.iou_thresholds):
            for d, dt in enumerate(dts):
                best, m = min(threshold, 1 - 1e-10), -1
                for g in range(n_gt):
                    if gt_match[t, g] > 0 and not gts[g].crowd:
                        continue  # taken (a crowd object can take several predictions)
                    if m > -1 and ignored[m] == 0 and ignored[g] == 1:
                        break  # the rest are ignored objects; a real match is better
                    if ious[d, g] < best:
                        continue
                    best, m = ious[d, g], g
                if m == -1:
                    continue
                dt_ignored[t, d] = ignored[m]
                dt_match[t, d] = gts[m].id
                gt_match[t, m] = dt.id
    outside = np.array([not (area[0] <= d.mean_area <= area[1]) for d in dts], bool)[None]
    dt_ignored = dt_ignored | ((dt_match == 0) & outside)
    return {"scores": np.array([d.score for d in dts]), "dt_match": dt_match, "dt_ignored": dt_ignored,
            "gt_ignored": ignored}


def _accumulate(per_video: list[dict | None], params: VisParams, max_det: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision ``[T, R]`` and recall ``[T]`` over the videos of one category and area range
    (-1 when no object counts)."""
    n_thr, n_rec = len(params.iou_thresholds), len(params.recall_thresholds)
    precision, recall = -np.ones((n_thr, n_rec)), -np.ones(n_thr)
    evals = [e for e in per_video if e is not None]
    if not evals:
        return precision, recall
    scores = np.concatenate([e["scores"][:max_det] for e in evals])
    order = np.argsort(-scores, kind="mergesort")
    dt_match = np.concatenate([e["dt_match"][:, :max_det] for e in evals], axis=1)[:, order]
    dt_ignored = np.concatenate([e["dt_ignored"][:, :max_det] for e in evals], axis=1)[:, order]
    n_pos = np.count_nonzero(np.concatenate([e["gt_ignored"] for e in evals]) == 0)
    if n_pos == 0:
        return precision, recall
    tp = np.cumsum(np.logical_and(dt_match, ~dt_ignored), axis=1).astype(float)
    fp = np.cumsum(np.logical_and(np.logical_not(dt_match), ~dt_ignored), axis=1).astype(float)
    for t in range(n_thr):
        rc = tp[t] / n_pos
        pr = tp[t] / (fp[t] + tp[t] + np.spacing(1))
        recall[t] = rc[-1] if len(rc) else 0
        # the precision envelope: best precision at this recall or beyond
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        at = np.searchsorted(rc, params.recall_thresholds, side="left")
        q = np.zeros(n_rec)
        inside = at < len(pr)
        q[inside] = pr[at[inside]]
        precision[t] = q
    return precision, recall


def evaluate(ground_truth: dict, results: list, params: VisParams | None = None,
             gt_source: str = "ground truth", results_source: str = "results") -> VisEvaluation:
    """Score ``results`` against ``ground_truth`` (both as loaded from their JSON files)."""
    params = params or VisParams()
    videos, gts, categories = _ground_truth(ground_truth, gt_source)
    dts = _results(results, videos, results_source)
    video_ids = sorted(set(videos))
    known = set(categories)
    gts = [g for g in gts if g.category_id in known]
    dts = [d for d in dts if d.category_id in known]
    groups = categories if params.use_categories else [None]

    def select(tubes: list[_Tube], video: Any, category: Any) -> list[_Tube]:
        if category is not None:
            return [t for t in tubes if t.video_id == video and t.category_id == category]
        # class-agnostic: category by category, as the official code concatenates them
        return [t for c in categories for t in tubes if t.video_id == video and t.category_id == c]

    by_video_gt = {v: [g for g in gts if g.video_id == v] for v in video_ids}
    by_video_dt = {v: [d for d in dts if d.video_id == v] for v in video_ids}
    max_det = max(params.max_dets)
    cells = {}
    for c in groups:
        for v in video_ids:
            g = select(by_video_gt[v], v, c)
            d = _by_score(select(by_video_dt[v], v, c))[:max_det]
            if not g and not d:
                continue
            ious = tube_ious(d, g)
            cells[c, v] = (g, d, ious)

    areas = list(params.area_ranges.values())
    n_thr, n_rec = len(params.iou_thresholds), len(params.recall_thresholds)
    precision = -np.ones((n_thr, n_rec, len(groups), len(areas), len(params.max_dets)))
    recall = -np.ones((n_thr, len(groups), len(areas), len(params.max_dets)))
    for k, c in enumerate(groups):
        for a, area in enumerate(areas):
            per_video = [_match(*cells[c, v][:2], cells[c, v][2], area, params) if (c, v) in cells else None
                         for v in video_ids]
            for m, md in enumerate(sorted(params.max_dets)):
                precision[:, :, k, a, m], recall[:, k, a, m] = _accumulate(per_video, params, md)
    return VisEvaluation(stats=_summary(precision, recall, params), precision=precision, recall=recall, params=params)


def _summary(precision: np.ndarray, recall: np.ndarray, params: VisParams) -> dict[str, float]:
    thresholds = params.iou_thresholds
    labels = list(params.area_ranges)
    dets = sorted(params.max_dets)

    def mean(values: np.ndarray) -> float:
        values = values[values > -1]
        return float(np.mean(values)) if values.size else -1.0

    # the official summary's defaults: area "all", 100 predictions
    def ap(iou: float | None = None, area: str = "all", max_det: int = 100) -> float:
        s = precision if iou is None else precision[np.where(iou == thresholds)[0]]
        return mean(s[:, :, :, [i for i, lbl in enumerate(labels) if lbl == area]][..., [i for i, d in enumerate(dets) if d == max_det]])

    def ar(area: str = "all", max_det: int = 100) -> float:
        s = recall[:, :, [i for i, lbl in enumerate(labels) if lbl == area]]
        return mean(s[..., [i for i, d in enumerate(dets) if d == max_det]])

    values = [ap(), ap(0.5, max_det=dets[2]), ap(0.75, max_det=dets[2]), ap(area="small", max_det=dets[2]),
              ap(area="medium", max_det=dets[2]), ap(area="large", max_det=dets[2]), ar(max_det=dets[0]),
              ar(max_det=dets[1]), ar(max_det=dets[2]), ar("small", dets[2]), ar("medium", dets[2]), ar("large", dets[2])]
    return dict(zip(STAT_NAMES, values))


def format_stats(stats: dict[str, float]) -> str:
    """One line: ``AP 0.123  AP50 ...``."""
    return "  ".join(f"{k} {v:.4f}" for k, v in stats.items())
