"""Typed configuration: dataclasses loaded from YAML presets with ``--set`` overrides.

Every knob of the pipeline lives here, so a preset file fully describes a run. Loading is
strict: an unknown key or a value of the wrong type is a :class:`ConfigError` that names the
file and the key.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError, one_line, show, show_path
from .fileio import read_input_text

PointMethod = Literal["random", "kmedoids", "shi-tomasi", "mixed"]
SegmenterName = Literal[
    "mobilesam-onnx", "mobilesam",
    # The lightweight SAM family (PyTorch; samtrack/segmenters/sam/build.py REGISTRY).
    "sam-vit-b", "sam-vit-l", "sam-vit-h", "hq-sam-vit-b", "hq-sam-vit-l", "hq-sam-vit-h", "light-hq-sam",
    "efficientvit-sam-l0", "efficientvit-sam-l1", "efficientvit-sam-l2", "efficientvit-sam-xl0", "efficientvit-sam-xl1",
    "efficientsam-vitt", "efficientsam-vits",
    "repvit-sam", "edgesam", "edgesam-3x",
]
Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["fp32", "fp16", "bf16"]
MultimaskChoice = Literal["off", "best_iou", "consistent", "stability", "grow"]

# Integers go on to OpenCV and numpy as int32; a bigger one is a typo, not a setting.
INT_LIMIT = 2**31 - 1
# Config files are a few KB; this bounds what a wrong path (a video, /dev/zero) costs.
MAX_CONFIG_BYTES = 2**20
# Values in a config once YAML aliases are expanded; a real one has about a hundred.
MAX_YAML_NODES = 10_000


@dataclass(frozen=True)
class Range:
    """The values a numeric knob accepts, beyond its type (NaN and infinity never)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    check: Callable[[float], bool] | None = None
    expect: str | None = None

    def problem(self, value: float) -> str | None:
        """Why ``value`` is refused, or None."""
        if not math.isfinite(value):
            return "must be a finite number"
        bounds = [(self.ge, ">=", value >= (self.ge or 0)), (self.gt, ">", value > (self.gt or 0)),
                  (self.le, "<=", value <= (self.le or 0)), (self.lt, "<", value < (self.lt or 0))]
        if any(bound is not None and not ok for bound, _, ok in bounds) or (self.check and not self.check(value)):
            return "must be " + (self.expect or " and ".join(f"{op} {bound:g}" for bound, op, _ in bounds if bound is not None))
        return None


def knob(default: Any, **limits: Any) -> Any:
    """A numeric config field with the :class:`Range` of values it accepts."""
    return field(default=default, metadata={"range": Range(**limits)})


@dataclass
class SamplingConfig:
    """How query points are drawn from a mask."""

    positive_method: PointMethod = "kmedoids"
    negative_method: PointMethod = "mixed"
    n_positive: int = knob(8, ge=1, le=1000)
    n_negative: int = knob(1, ge=0, le=1000)
    # Other objects' positive points double as this object's negatives (SAM-PT does this).
    other_objects_as_negative: bool = True
    # K-Medoids runs on at most this many mask pixels, to bound its cost (quadratic in them, and
    # 7x from 400 to 1000 pixels here, where the distance matrix leaves the cache).
    kmedoids_max_pixels: int = knob(1000, ge=1, le=1_000_000)
    # How those pixels are drawn: "random", or "grid": every s-th row and column from a random
    # offset, which covers the mask evenly, so that fewer pixels place the medoids as well.
    kmedoids_subsample: Literal["random", "grid"] = "random"
    # Shi-Tomasi corners come from the mask eroded by this many pixels (skipped when too thin).
    shi_tomasi_erode: int = knob(3, ge=0, le=1000)
    # Negatives are drawn from a band this many pixels wide outside the mask ("mixed" also
    # draws from anywhere outside it).
    negative_band: int = knob(32, ge=1, le=10_000)
    # Extra positives on the mask's thin parts (a kite's lines, a bike's frame): pixels that an
    # opening with a thin_width-pixel disc removes, in pieces of at least 3 x thin_width pixels
    # (smaller ones are the corners that any opening rounds off). 0 = off.
    thin_points: int = knob(0, ge=0, le=1000)
    thin_width: int = knob(9, ge=3, le=255)
    # Extra negatives in the mask's holes (background it encloses: a wheel's inside, the gap
    # between legs), one in each of the hole_negatives largest holes of at least hole_min_area
    # pixels, where it is farthest from the mask: SAM from points alone fills such holes. 0 = off.
    hole_negatives: int = knob(0, ge=0, le=100)
    hole_min_area: int = knob(150, ge=1, le=1_000_000)
    # With user clicks, also add points sampled from the first SAM mask to the clicks.
    extra_points_from_clicks: bool = False
    seed: int = knob(0, ge=0, le=2**32 - 1)


@dataclass
class LKConfig:
    """Pyramidal Lucas-Kanade parameters (OpenCV)."""

    win_size: int = knob(21, ge=3, le=255)
    max_level: int = knob(3, ge=0, le=10)
    max_iters: int = knob(30, ge=1, le=10_000)
    epsilon: float = knob(0.01, gt=0)
    # A point whose forward-backward round trip misses by more than this (pixels) is lost.
    fb_threshold: float = knob(1.5, gt=0)
    # Tracks on frames downscaled so that their longest side is at most this (0 = as given).
    longest_side: int = knob(0, ge=0, le=16384)


@dataclass
class CoTrackerConfig:
    """CoTracker3 (``tracker.name`` cotracker3: offline, window 60; cotracker3-online: sliding
    window 16). null values take what the official predictor of that mode does."""

    # scaled: trained on Kubric then real videos (the official default); kubric: Kubric only.
    weights: Literal["scaled", "kubric"] = "scaled"
    # A state_dict file (scaled_offline.pth, ...) to load instead of the weights cache.
    checkpoint: str | None = None
    device: Device = "auto"
    # Transformer updates per window (the official predictors use 6).
    iters: int = knob(6, ge=1, le=100)
    # Side of the grid of extra points tracked beside the queries, which gives the tracker
    # context (null: 6 offline, none online); SAM-PT adds its grid every few frames (offline
    # only: an online stream's length is not known in advance).
    support_grid: int | None = knob(None, ge=0, le=100)
    support_grid_every: int = knob(0, ge=0)
    # A point is visible above this (null: 0.9 on the visibility probability offline, 0.6 on
    # visibility x confidence online).
    visibility_threshold: float | None = knob(None, ge=0, lt=1)


@dataclass
class TrackerConfig:
    # lk, cotracker3, cotracker3-online, or auto: cotracker3 where PyTorch sees a CUDA device,
    # else lk. (A run without a config picks its preset the same way: sam_pt_cotracker or
    # samtrack.)
    name: str = "lk"
    # Frames per tracker call when re-initialisation is off (bounds memory on long videos).
    window: int = knob(16, ge=2, le=10_000)
    # A learned tracker (one that can find a point again after an occlusion) also re-queries,
    # at the start of each window, the points lost at most this many frames before it, from
    # the frame they were last seen on.
    lookback: int = knob(8, ge=0, le=1000)
    lk: LKConfig = field(default_factory=LKConfig)
    cotracker: CoTrackerConfig = field(default_factory=CoTrackerConfig)


@dataclass
class SegmenterConfig:
    # mobilesam-onnx: the ONNX pair on onnxruntime; mobilesam: our PyTorch model; the other
    # names: other lightweight SAMs in PyTorch (README, "The lightweight SAM family").
    name: SegmenterName = "mobilesam-onnx"
    # A directory (ONNX) or state_dict file (PyTorch) with the weights; None = the weights
    # cache (fetched on first use).
    checkpoint: str | None = None
    # onnxruntime / OpenVINO / PyTorch intra-op threads; None = the runtime's default (all cores).
    threads: int | None = knob(None, ge=1, le=1024)
    # mobilesam-onnx: what runs the encoder: auto (OpenVINO where the samtrack[openvino] extra is
    # installed, 1.36x faster here with equal outputs; else onnxruntime), openvino, onnxruntime.
    backend: Literal["auto", "openvino", "onnxruntime"] = "auto"
    # PyTorch only: where to run (auto: cuda, else mps, else cpu) and in what precision
    # (fp16/bf16 autocast on CUDA only).
    device: Device = "auto"
    precision: Precision = "fp32"
    # Encode a frame at its own aspect (sides padded to multiples of 16) instead of padded to
    # the 1024 square: a 16:9 frame then costs 57 % of the square's encoder work. null = the
    # segmenter's choice: the PyTorch TinyViT ones encode unpadded (J&F 0.755 against 0.743 padded
    # on the shared DAVIS sequences, mean of 3 seeds), the ViTs (sam-vit-*, hq-sam-vit-*) pad, as
    # the official model (unpadded ViT is not measured); mobilesam-onnx does where PyTorch is installed
    # to export its graphs once per frame size (J&F 0.763 against 0.744), else pads.
    unpadded: bool | None = None
    # PyTorch only: at most this many prompt sets per decoder call (a frame's objects are
    # decoded in chunks of it); null = 1 on CPU, where one batch of 16 measured 1.7x slower than
    # 16 calls on 2 cores, and unlimited on CUDA/MPS.
    max_batch: int | None = knob(None, ge=1)
    # PyTorch only: which MobileSAM weights: auto (the official checkpoint when cached, else
    # the ones converted from the ONNX pair), mobilesam (official) or mobilesam-torch. The other
    # PyTorch models have one official checkpoint each (auto).
    weights: Literal["auto", "mobilesam", "mobilesam-torch"] = "auto"
    # A folder caching frame embeddings on disk (for benchmarks and ablations); None = off.
    embedding_cache: str | None = None


@dataclass
class DecodeConfig:
    """SAM-PT's decoder passes per object and frame."""

    # Pass 2: positives + negatives, prompted with pass 1's low-res logits.
    use_negative_pass: bool = True
    # Further passes that add the current mask's box and the previous low-res logits.
    refine_iters: int = knob(12, ge=0, le=100)
    # Prompt each frame with the object's low-res logits from the frame before (one pass with
    # all points instead of passes 1 and 2): keeps parts that have no point on them this frame.
    mask_memory: bool = False
    # A mask over this many times the area of the object's last accepted mask is rejected for
    # that mask moved by its points' motion (0 = accept any mask).
    max_growth: float = knob(0.0, ge=0, check=lambda v: v == 0 or v > 1, expect="0 (off) or > 1")
    # A mask whose predicted IoU is below this is dropped (the object is empty on that frame).
    iou_threshold: float = knob(0.7, ge=0, le=1)
    # Foreground floor for merging objects: a pixel is background unless some object's logit
    # exceeds it.
    merge_threshold: float = 0.0
    # Choose each object's final mask among all of SAM's outputs (PyTorch segmenters, or
    # mobilesam-onnx on unpadded frames):
    # off (the single-mask output, or the best multimask one for one-token prompts, as SAM's
    # ONNX export does), best_iou (the multimask output with the highest predicted IoU),
    # consistent (the output that best overlaps the object's mask on the frame before), or
    # stability (the output, of all four, with the highest stability score: EdgeSAM's demo's
    # rule), or grow (an output that adds object-like cells to the mask: decoding.grow_candidate).
    multimask: MultimaskChoice = "off"
    # multimask=grow (needs redetect): an output replaces the mask when it keeps grow_keep of it
    # and adds at least grow_min_cells embedding cells, grow_fraction of them object-like; else,
    # with trim_fraction > 0, an output inside the mask (grow_keep of it) that drops at least
    # grow_min_cells cells, under trim_fraction of them object-like.
    grow_keep: float = knob(0.9, ge=0, le=1)
    grow_fraction: float = knob(0.5, ge=0, le=1)
    grow_min_cells: int = knob(2, ge=1)
    trim_fraction: float = knob(0.0, ge=0, le=1)


@dataclass
class FlowConfig:
    """Dense optical flow (OpenCV DIS, :mod:`samtrack.flow`) from the previous frame to the
    current one, and what the loop uses it for."""

    enabled: bool = False
    # DIS preset: ultrafast, fast or medium (about 4, 6 and 27 ms per 854x480 pair on one core here).
    preset: Literal["ultrafast", "fast", "medium"] = "fast"
    # Flow computed on frames shrunk to this longest side (0 = as processed).
    longest_side: int = knob(0, ge=0, le=16384)
    # A pixel whose forward-backward round trip misses by more than this (pixels) is unreliable.
    fb_threshold: float = knob(1.0, gt=0)
    # Points visible on the previous frame moved by the flow: all of them (instead of the
    # tracker's step), only those the tracker lost, or none.
    points: Literal["off", "lost", "all"] = "off"
    # A second candidate per object: all its points plus the previous frame's low-res logits
    # moved by the flow as the mask prompt (mask_prompt) and/or the box of the moved mask (box).
    mask_prompt: bool = False
    box: bool = False
    # What that mask prompt is made of: the previous frame's low-res logits moved by the flow
    # (logits), or the previous mask moved by the flow as +-10 logits (mask: the form the
    # ground-truth oracle prompts with; SAM's own logits carry its over-confident errors along).
    prior: Literal["logits", "mask"] = "logits"
    # Extra pixels on each side of that box.
    box_margin: float = knob(0.0, ge=0)
    # How the loop's mask and that candidate are chosen between: flow (always the candidate),
    # agreement (the one overlapping the moved previous mask best), iou (the higher predicted
    # IoU), sum (agreement + predicted IoU), look (the higher mean appearance score inside, with
    # redetect on) or all (the three summed).
    select: Literal["flow", "agreement", "iou", "sum", "look", "all"] = "agreement"
    # select=iou: by how much the candidate's predicted IoU must beat the loop's (SAM rates its
    # mask-prompted outputs high even where the prompt carried an error along).
    iou_margin: float = knob(0.0, ge=0, le=1)
    # When SAM's mask is dropped (predicted IoU under decode.iou_threshold) or rejected by the
    # area guard, use the previous mask moved by the flow, for at most this many frames in a row
    # (0 = off: the object is empty on that frame).
    fallback_frames: int = knob(0, ge=0, le=1000)
    # A mask over this many times the area of the previous mask moved by the flow (at least
    # min_area pixels) is rejected for that moved mask, which may be empty: an object leaving the
    # frame leaves with it (0 = off). max_rejections in a row are taken as real growth.
    max_growth: float = knob(0.0, ge=0, check=lambda v: v == 0 or v > 1, expect="0 (off) or > 1")
    min_area: int = knob(100, ge=1)
    max_rejections: int = knob(5, ge=1, le=100_000)


@dataclass
class ReinitConfig:
    # Re-sample query points from the predicted mask every h frames (0 = never).
    every: int = knob(8, ge=0)
    # An object whose mask emptied is re-sampled from its last non-empty mask at the next
    # re-initialisation instead of staying empty forever.
    recover_lost: bool = True


@dataclass
class RedetectConfig:
    """Checking and re-detecting points by the object's look in the encoder's features."""

    enabled: bool = False
    # Feature vectors kept of the object (twice as many of its surroundings).
    bank_size: int = knob(300, ge=1, le=100_000)
    # Every update_every frames (0 = never), a second pair of banks, of the object's and its
    # surroundings' look on a recent frame, is learnt again from the frame's mask when SAM rates
    # it at least update_min_iou and at least update_min_fraction of its cells already look like
    # the object: an object that turns, opens its wings or gets lit differently stays known,
    # while the banks of the prompted frame keep it from drifting onto a look-alike.
    update_every: int = knob(0, ge=0, le=100_000)
    update_min_iou: float = knob(0.85, ge=0, le=1)
    update_min_fraction: float = knob(0.5, ge=0, le=1)
    # When the object's mask covers relearn_growth times the area it had when its look was last
    # learnt, the recent banks are learnt from it (same trust gates; 0 = never, under 1 = every
    # trusted frame): an object first seen small and far (a motorbike coming closer) shows parts
    # its first frame's few cells never had, and without this they look like background and are
    # dropped.
    relearn_growth: float = knob(0.0, ge=0, le=1000)
    # With fewer positive points on object-like cells than this, new points are added...
    min_points: int = knob(3, ge=0, le=1000)
    # ...this many, at the best object-like cells...
    add_points: int = knob(3, ge=0, le=1000)
    # ...within this many times sqrt(last good mask area), plus 50 px, of that mask's centre.
    search_radius: float = knob(2.5, gt=0)
    # ...plus this many px per frame the object has been empty: the longer it is gone (left the
    # frame, hidden), the further from where it was last seen it may come back.
    search_growth: float = knob(0.0, ge=0)
    # A mask under collapse_fraction of the area of the mask the search is centred on, whose
    # cells score 0 or less on average, is a collapse (the object opened its wings, blurred, and
    # SAM kept a fragment, often at its edge), not where the object is: the search stays centred
    # on the mask before, for up to collapse_frames such masks in a row (after that the small
    # mask is taken as the object's new size: it left the frame, it went far away). 0 = every
    # mask moves the search.
    collapse_fraction: float = knob(0.0, ge=0, le=1)
    collapse_frames: int = knob(2, ge=0, le=100_000)
    # Positives added at the most object-like cells just outside the last mask (a part the mask
    # lost), scoring above grow_margin; 0 = none.
    grow_points: int = knob(0, ge=0, le=1000)
    grow_margin: float = 0.0
    # Negatives added at the most background-like cells inside the last mask, scoring below
    # -shrink_margin (a hole the mask filled, background it spread onto); 0 = none.
    shrink_points: int = knob(0, ge=0, le=1000)
    shrink_margin: float = 0.0
    # A decoded mask that covers at least verify_cells cells, fewer than verify_fraction of them
    # object-like, is rejected and the object left empty on that frame: its points slid onto
    # the background, or it left the frame and SAM segmented what was behind (0 = off). Small
    # masks are spared: a few cells of a small, blurred object may all score as background.
    verify_fraction: float = knob(0.0, ge=0, le=1)
    verify_cells: int = knob(40, ge=1, le=1_000_000)
    # Check each connected piece of the mask on its own and drop only the pieces that fail (a
    # look-alike banner the mask spread onto), instead of the whole mask.
    verify_parts: bool = False
    # Of a mask's connected pieces of at least piece_cells cells, the one whose cells look most
    # like the object (mean score, at least piece_min_score) is taken as the object; a piece
    # more than piece_gap x sqrt(that piece's area) px from it whose mean score is under
    # piece_ratio x the object's is a look-alike the points spread to (an advertising board
    # in the rider's colours) and is dropped. A piece close by is kept: an object cut in two by
    # an occluder (a dog behind a bar) has a half that looks less like it. 0 = off.
    piece_ratio: float = knob(0.0, ge=0, le=1)
    piece_min_score: float = knob(0.08, ge=0)
    piece_gap: float = knob(0.25, ge=0)
    piece_cells: int = knob(8, ge=1, le=1_000_000)
    # When the tracker kept fewer than min_points of the object's positives, its mask comes
    # from re-detection; it is shown only if at least hide_fraction of its cells look like the
    # object, else the object is reported hidden on that frame (an occluder passing in front
    # takes the points, and the mask lands on it). The loop still goes on from that mask, so
    # this changes what is reported, never what is tracked (0 = always shown).
    hide_fraction: float = knob(0.0, ge=0, le=1)


@dataclass
class VideoConfig:
    start: int = knob(0, ge=0)
    stride: int = knob(1, ge=1)
    max_frames: int | None = knob(None, ge=1)
    # Resize frames so their longest side is at most this for processing (None = as is);
    # masks are written back at the original size.
    longest_side: int | None = knob(None, ge=16, le=16384)


@dataclass
class OutputConfig:
    overlay: bool = True
    tracks: bool = True
    overlay_alpha: float = knob(0.5, ge=0, le=1)
    point_radius: int = knob(4, ge=0, le=100)
    # instances.json: every object's masks as COCO RLE, YouTube-VIS style (on with --everything).
    instances: bool = False


@dataclass
class AutoMaskConfig:
    """SAM's automatic mask generator (:mod:`samtrack.automask`); the defaults are those of the
    official ``SamAutomaticMaskGenerator``."""

    # A points_per_side x points_per_side grid of single-point prompts over the frame (each crop).
    points_per_side: int = knob(32, ge=1, le=1024)
    # Prompts per decode_batch call (bounds the memory of the full-size candidate logits).
    points_per_batch: int = knob(64, ge=1, le=100_000)
    # Keep masks whose predicted IoU is above this (strictly), and whose stability score (the
    # IoU of the mask thresholded at +offset and at -offset) is at least stability_score_thresh.
    pred_iou_thresh: float = knob(0.88, ge=0, le=1)
    stability_score_thresh: float = knob(0.95, ge=0, le=1)
    stability_score_offset: float = knob(1.0, ge=0, le=1000)
    # Box IoU above which the lower-scored mask is dropped (within a crop; by predicted IoU).
    box_nms_thresh: float = knob(0.7, ge=0, le=1)
    # Extra layers of crops (layer i: (2^i)^2 overlapping crops, each encoded on its own) with
    # points_per_side / crop_n_points_downscale_factor^i points per side; duplicates across crops
    # are dropped by box NMS preferring smaller crops.
    crop_n_layers: int = knob(0, ge=0, le=6)
    crop_nms_thresh: float = knob(0.7, ge=0, le=1)
    crop_overlap_ratio: float = knob(512 / 1500, ge=0, lt=1)
    crop_n_points_downscale_factor: int = knob(1, ge=1, le=1024)
    # Fill holes and drop islands under this many pixels (0: off), then NMS again.
    min_mask_region_area: int = knob(0, ge=0, le=10**9)


@dataclass
class EverythingConfig:
    """Track everything (``samtrack run --everything``): the automatic masks of the first frame
    become the objects."""

    # Track at most this many masks (the highest predicted IoU first).
    max_objects: int = knob(100, ge=1, le=254)
    # A mask left with fewer pixels than this once overlaps are resolved is not tracked.
    min_area: int = knob(100, ge=1, le=10**9)
    automask: AutoMaskConfig = field(default_factory=AutoMaskConfig)


@dataclass
class Config:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    reinit: ReinitConfig = field(default_factory=ReinitConfig)
    redetect: RedetectConfig = field(default_factory=RedetectConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    everything: EverythingConfig = field(default_factory=EverythingConfig)

    @property
    def tracking_window(self) -> int:
        """Frames per tracker call: from one re-initialisation to the next, or
        ``tracker.window`` when points are never re-initialised."""
        return self.reinit.every + 1 if self.reinit.every > 0 else self.tracker.window

    def validate(self, origins: dict[str, str] | None = None) -> "Config":
        """Check what involves more than one value (each value's own range is checked as it is
        loaded); ``origins`` (key -> file or ``--set``) names where a value came from."""
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS = ("samtrack", "quality", "sam_pt", "sam_pt_reinit", "sam_pt_cotracker", "fast", "everything")
DEFAULT_PRESET = "samtrack"
# The default preset when the tracker is a learned one (asked for, or auto's choice on CUDA):
# samtrack's every-frame re-sampling is tuned for LK and would cut CoTracker's windows to 2
# frames.
LEARNED_TRACKER_PRESET = "sam_pt_cotracker"


def default_preset(tracker: str | None = None) -> tuple[str, str]:
    """The preset for a run without a config, given the tracker asked for (None: the device's
    default, ``auto``), and the line to print at start about the choice (empty when an explicit
    ``lk`` leaves nothing to say)."""
    from .trackers import LEARNED, resolve_name

    name, why = resolve_name(tracker or "auto")
    preset = LEARNED_TRACKER_PRESET if name in LEARNED else DEFAULT_PRESET
    if tracker not in (None, "auto") and preset == DEFAULT_PRESET:
        return preset, ""
    return preset, f"tracker {name}{f' ({why})' if why else ''}, preset {preset}"


@dataclass(frozen=True)
class Override:
    """A value set by a command-line option (``--stride 2``): ``key`` is the config path
    (``video.stride``), ``value`` is used as is (no YAML parsing, so a path stays a string), and
    ``option`` names the option in errors."""

    option: str
    key: str
    value: Any


def load_config(source: str | Path | None = None, overrides: Sequence[str | Override] = ()) -> Config:
    """Load a config from a preset name or a YAML file, then apply overrides: ``key.path=value``
    strings (``--set``; the value is YAML) or :class:`Override` values.

    ``None`` gives the built-in defaults (which equal the ``sam_pt_reinit`` preset). Every
    mistake is a :class:`ConfigError` naming the key and where its value came from (the file,
    the ``--set`` item or the option).
    """
    data: dict[str, Any] = {}
    origin = "defaults"
    if source is not None:
        text, origin = _read_source(source)
        loaded = _parse_yaml(text, origin)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("top level must be a mapping of sections", origin)
        data = loaded
    # The file is checked on its own first, then each override on top of it, so that every
    # mistake is blamed on where it was made.
    origins: dict[str, str] = {}
    config = _build(Config, data, origin, origins=origins)
    for item in overrides:
        if isinstance(item, Override):
            where, key, value = item.option, item.key, item.value
        else:
            where = f"--set {show(item)}"
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{where}: expected key.path=value")
            try:
                value = _parse_yaml(raw, where) if raw.strip() else None
            except ConfigError:
                value = raw
        key = key.strip()
        _set_path(data, key.split("."), value, where)
        origins[key] = where
        config = _build(Config, data, where)
    return config.validate(origins)


def _parse_yaml(text: str, origin: str) -> Any:
    """YAML's safe load, refusing documents that expand to more than ``MAX_YAML_NODES`` nodes:
    aliases repeat whole subtrees, so a few hundred bytes of nested ones stand for millions of
    values (an alias bomb) that any later step (a check, an error message) would walk."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise ConfigError(f"the YAML expands to more than {MAX_YAML_NODES} values (nested aliases); a config has a few dozen", origin)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({one_line(_one_line(exc), 200)})", origin) from None
    except RecursionError:
        raise ConfigError("not usable YAML (nested too deeply)", origin) from None
    except ValueError as exc:  # an integer of thousands of digits
        raise ConfigError(f"not usable YAML ({show(_one_line(exc), 120)})", origin) from None
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes in ``root`` with every alias expanded, counted up to just past ``limit``."""
    count, stack = 0, [root]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
    return count


def _read_source(source: str | Path) -> tuple[str, str]:
    name = str(source)
    if name in PRESETS:
        return resources.files("samtrack.configs").joinpath(f"{name}.yaml").read_text(), f"preset {name}"
    path = Path(name)
    try:
        path.stat()
    except FileNotFoundError:
        raise ConfigError(f"no such config file or preset (presets: {', '.join(PRESETS)})", path) from None
    except OSError:
        pass  # read_input_text says what is wrong
    return read_input_text(path, MAX_CONFIG_BYTES, "config file", ConfigError), show_path(path)


def _set_path(data: dict[str, Any], keys: list[str], value: Any, where: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {show(key)} is not a section")
        node = child
    node[keys[-1]] = value


def _build(cls: type, data: Any, origin: str, prefix: str = "", origins: dict[str, str] | None = None) -> Any:
    """``cls`` from ``data``, every value checked against its type and range, mistakes blamed
    on ``origin``; ``origins`` records where each key came from."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'top level'} must be a mapping, got {type(data).__name__}", origin)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"unknown key {show(prefix + str(unknown[0]))} (known: {', '.join(sorted(fields))})", origin)
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if origins is not None:
            origins[key] = origin
        kwargs[name] = _coerce(hints[name], value, origin, key, fields[name].metadata.get("range"), origins)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, origin: str, key: str, limits: Range | None = None,
            origins: dict[str, str] | None = None) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, origin, key + ".", origins)
    origin_tp = get_origin(tp)
    if origin_tp in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, origin, key, limits)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin_tp is Literal:
        # YAML 1.1 (PyYAML) reads a bare off/on as a boolean: where the choices are words, it
        # meant the word (`multimask: off`, `--set decode.multimask=off`).
        if isinstance(value, bool) and ("on" if value else "off") in get_args(tp):
            return "on" if value else "off"
        if value not in get_args(tp):
            choices = ", ".join(map(str, get_args(tp)))
            raise ConfigError(f"{key} must be one of {choices}, got {show(value)}", origin)
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is float and number:
        if isinstance(value, int) and abs(value) > INT_LIMIT:
            raise ConfigError(f"{key} must be a number of sensible size, got {show(value)}", origin)
        value = float(value)
        problem = (limits or Range()).problem(value)
    elif tp is int and type(value) is int:
        problem = (limits or Range()).problem(value) if abs(value) <= INT_LIMIT else f"must be at most {INT_LIMIT} in size"
    elif tp in (str, bool) and type(value) is tp:
        return value
    else:
        raise ConfigError(f"{key} must be {getattr(tp, '__name__', tp)}, got {show(value)}", origin)
    if problem:
        raise ConfigError(f"{key} {problem}, got {show(value)}", origin)
    return value


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
