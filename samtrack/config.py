"""Typed configuration: dataclasses loaded from YAML presets with ``--set`` overrides.

Every knob of the pipeline lives here, so a preset file fully describes a run. Loading is
strict: an unknown key or a value of the wrong type is a :class:`ConfigError` that names the
file and the key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError

PointMethod = Literal["random", "kmedoids", "shi-tomasi", "mixed"]
SegmenterName = Literal["mobilesam-onnx", "mobilesam"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["fp32", "fp16", "bf16"]
MultimaskChoice = Literal["off", "best_iou", "consistent"]


@dataclass
class SamplingConfig:
    """How query points are drawn from a mask."""

    positive_method: PointMethod = "kmedoids"
    negative_method: PointMethod = "mixed"
    n_positive: int = 8
    n_negative: int = 1
    # Other objects' positive points double as this object's negatives (SAM-PT does this).
    other_objects_as_negative: bool = True
    # K-Medoids runs on at most this many mask pixels, drawn at random, to bound its cost.
    kmedoids_max_pixels: int = 1000
    # Shi-Tomasi corners come from the mask eroded by this many pixels (skipped when too thin).
    shi_tomasi_erode: int = 3
    # Negatives are drawn from a band this many pixels wide outside the mask ("mixed" also
    # draws from anywhere outside it).
    negative_band: int = 32
    # With user clicks, also add points sampled from the first SAM mask to the clicks.
    extra_points_from_clicks: bool = False
    seed: int = 0


@dataclass
class LKConfig:
    """Pyramidal Lucas-Kanade parameters (OpenCV)."""

    win_size: int = 21
    max_level: int = 3
    max_iters: int = 30
    epsilon: float = 0.01
    # A point whose forward-backward round trip misses by more than this (pixels) is lost.
    fb_threshold: float = 1.5
    # Tracks on frames downscaled so that their longest side is at most this (0 = as given).
    longest_side: int = 0


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
    iters: int = 6
    # Side of the grid of extra points tracked beside the queries, which gives the tracker
    # context (null: 6 offline, none online); SAM-PT adds its grid every few frames (offline
    # only: an online stream's length is not known in advance).
    support_grid: int | None = None
    support_grid_every: int = 0
    # A point is visible above this (null: 0.9 on the visibility probability offline, 0.6 on
    # visibility x confidence online).
    visibility_threshold: float | None = None


@dataclass
class TrackerConfig:
    # lk, cotracker3, cotracker3-online, or auto: cotracker3 where PyTorch sees a CUDA device,
    # else lk. (A run without a config picks its preset the same way: sam_pt_cotracker or
    # samtrack.)
    name: str = "lk"
    # Frames per tracker call when re-initialisation is off (bounds memory on long videos).
    window: int = 16
    # A learned tracker (one that can find a point again after an occlusion) also re-queries,
    # at the start of each window, the points lost at most this many frames before it, from
    # the frame they were last seen on.
    lookback: int = 8
    lk: LKConfig = field(default_factory=LKConfig)
    cotracker: CoTrackerConfig = field(default_factory=CoTrackerConfig)


@dataclass
class SegmenterConfig:
    # mobilesam-onnx: the ONNX pair on onnxruntime; mobilesam: our PyTorch model.
    name: SegmenterName = "mobilesam-onnx"
    # A directory (ONNX) or state_dict file (PyTorch) with the weights; None = the weights
    # cache (fetched on first use).
    checkpoint: str | None = None
    # onnxruntime / OpenVINO / PyTorch intra-op threads; None = the runtime's default (all cores).
    threads: int | None = None
    # mobilesam-onnx: what runs the encoder: auto (OpenVINO where the samtrack[openvino] extra is
    # installed, 1.36x faster here with equal outputs; else onnxruntime), openvino, onnxruntime.
    backend: Literal["auto", "openvino", "onnxruntime"] = "auto"
    # PyTorch only: where to run (auto: cuda, else mps, else cpu) and in what precision
    # (fp16/bf16 autocast on CUDA only).
    device: Device = "auto"
    precision: Precision = "fp32"
    # Encode a frame at its own aspect (sides padded to multiples of 16) instead of padded to
    # the 1024 square: a 16:9 frame then costs 56 % of the square's encoder work. null = the
    # segmenter's choice: the PyTorch ones encode unpadded (J&F 0.755 against 0.743 padded on the
    # shared DAVIS sequences, mean of 3 seeds), the ONNX encoder's graph is fixed to the square.
    unpadded: bool | None = None
    # PyTorch only: at most this many prompt sets per decoder call (a frame's objects are
    # decoded in chunks of it); null = 1 on CPU, where one batch of 16 measured 1.7x slower than
    # 16 calls on 2 cores, and unlimited on CUDA/MPS.
    max_batch: int | None = None
    # PyTorch only: which MobileSAM weights: auto (the official checkpoint when cached, else
    # the ones converted from the ONNX pair), mobilesam (official) or mobilesam-torch.
    weights: Literal["auto", "mobilesam", "mobilesam-torch"] = "auto"
    # A folder caching frame embeddings on disk (for benchmarks and ablations); None = off.
    embedding_cache: str | None = None


@dataclass
class DecodeConfig:
    """SAM-PT's decoder passes per object and frame."""

    # Pass 2: positives + negatives, prompted with pass 1's low-res logits.
    use_negative_pass: bool = True
    # Further passes that add the current mask's box and the previous low-res logits.
    refine_iters: int = 12
    # Prompt each frame with the object's low-res logits from the frame before (one pass with
    # all points instead of passes 1 and 2): keeps parts that have no point on them this frame.
    mask_memory: bool = False
    # A mask over this many times the area of the object's last accepted mask is rejected for
    # that mask moved by its points' motion (0 = accept any mask).
    max_growth: float = 0.0
    # A mask whose predicted IoU is below this is dropped (the object is empty on that frame).
    iou_threshold: float = 0.7
    # Foreground floor for merging objects: a pixel is background unless some object's logit
    # exceeds it.
    merge_threshold: float = 0.0
    # Choose each object's final mask among all of SAM's outputs (needs the PyTorch segmenter):
    # off (the single-mask output, or the best multimask one for one-token prompts, as SAM's
    # ONNX export does), best_iou (the multimask output with the highest predicted IoU), or
    # consistent (the output that best overlaps the object's mask on the frame before).
    multimask: MultimaskChoice = "off"


@dataclass
class ReinitConfig:
    # Re-sample query points from the predicted mask every h frames (0 = never).
    every: int = 8
    # An object whose mask emptied is re-sampled from its last non-empty mask at the next
    # re-initialisation instead of staying empty forever.
    recover_lost: bool = True


@dataclass
class RedetectConfig:
    """Checking and re-detecting points by the object's look in the encoder's features."""

    enabled: bool = False
    # Feature vectors kept of the object (twice as many of its surroundings).
    bank_size: int = 300
    # With fewer positive points on object-like cells than this, new points are added...
    min_points: int = 3
    # ...this many, at the best object-like cells...
    add_points: int = 3
    # ...within this many times sqrt(last good mask area), plus 50 px, of that mask's centre.
    search_radius: float = 2.5
    # Positives added at the most object-like cells just outside the last mask (a part the mask
    # lost), scoring above grow_margin; 0 = none.
    grow_points: int = 0
    grow_margin: float = 0.0


@dataclass
class VideoConfig:
    start: int = 0
    stride: int = 1
    max_frames: int | None = None
    # Resize frames so their longest side is at most this for processing (None = as is);
    # masks are written back at the original size.
    longest_side: int | None = None


@dataclass
class OutputConfig:
    overlay: bool = True
    tracks: bool = True
    overlay_alpha: float = 0.5
    point_radius: int = 4
    # instances.json: every object's masks as COCO RLE, YouTube-VIS style (on with --everything).
    instances: bool = False


@dataclass
class AutoMaskConfig:
    """SAM's automatic mask generator (:mod:`samtrack.automask`); the defaults are those of the
    official ``SamAutomaticMaskGenerator``."""

    # A points_per_side x points_per_side grid of single-point prompts over the frame (each crop).
    points_per_side: int = 32
    # Prompts per decode_batch call (bounds the memory of the full-size candidate logits).
    points_per_batch: int = 64
    # Keep masks whose predicted IoU is above this (strictly), and whose stability score (the
    # IoU of the mask thresholded at +offset and at -offset) is at least stability_score_thresh.
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    # Box IoU above which the lower-scored mask is dropped (within a crop; by predicted IoU).
    box_nms_thresh: float = 0.7
    # Extra layers of crops (layer i: (2^i)^2 overlapping crops, each encoded on its own) with
    # points_per_side / crop_n_points_downscale_factor^i points per side; duplicates across crops
    # are dropped by box NMS preferring smaller crops.
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    # Fill holes and drop islands under this many pixels (0: off), then NMS again.
    min_mask_region_area: int = 0


@dataclass
class EverythingConfig:
    """Track everything (``samtrack run --everything``): the automatic masks of the first frame
    become the objects."""

    # Track at most this many masks (the highest predicted IoU first).
    max_objects: int = 100
    # A mask left with fewer pixels than this once overlaps are resolved is not tracked.
    min_area: int = 100
    automask: AutoMaskConfig = field(default_factory=AutoMaskConfig)


@dataclass
class Config:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    reinit: ReinitConfig = field(default_factory=ReinitConfig)
    redetect: RedetectConfig = field(default_factory=RedetectConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    everything: EverythingConfig = field(default_factory=EverythingConfig)

    @property
    def tracking_window(self) -> int:
        """Frames per tracker call: from one re-initialisation to the next, or
        ``tracker.window`` when points are never re-initialised."""
        return self.reinit.every + 1 if self.reinit.every > 0 else self.tracker.window

    def validate(self) -> "Config":
        """Check value ranges the types cannot express; returns self."""
        checks = [
            (self.sampling.n_positive >= 1, "sampling.n_positive must be >= 1"),
            (self.sampling.n_negative >= 0, "sampling.n_negative must be >= 0"),
            (self.sampling.kmedoids_max_pixels >= 1, "sampling.kmedoids_max_pixels must be >= 1"),
            (self.tracker.window >= 2, "tracker.window must be >= 2"),
            (self.tracker.lookback >= 0, "tracker.lookback must be >= 0"),
            (self.tracker.cotracker.iters >= 1, "tracker.cotracker.iters must be >= 1"),
            (self.tracker.cotracker.support_grid is None or self.tracker.cotracker.support_grid >= 0,
             "tracker.cotracker.support_grid must be >= 0"),
            (self.tracker.cotracker.support_grid_every >= 0, "tracker.cotracker.support_grid_every must be >= 0"),
            (self.tracker.cotracker.visibility_threshold is None or 0 <= self.tracker.cotracker.visibility_threshold < 1,
             "tracker.cotracker.visibility_threshold must be in [0, 1)"),
            (self.tracker.lk.win_size >= 3, "tracker.lk.win_size must be >= 3"),
            (self.tracker.lk.fb_threshold > 0, "tracker.lk.fb_threshold must be > 0"),
            (self.decode.refine_iters >= 0, "decode.refine_iters must be >= 0"),
            (self.reinit.every >= 0, "reinit.every must be >= 0 (0 = off)"),
            (self.decode.max_growth == 0 or self.decode.max_growth > 1, "decode.max_growth must be 0 (off) or > 1"),
            (self.redetect.bank_size >= 1, "redetect.bank_size must be >= 1"),
            (self.redetect.min_points >= 0, "redetect.min_points must be >= 0"),
            (self.redetect.add_points >= 0, "redetect.add_points must be >= 0"),
            (self.redetect.search_radius > 0, "redetect.search_radius must be > 0"),
            (self.video.start >= 0, "video.start must be >= 0"),
            (self.video.stride >= 1, "video.stride must be >= 1"),
            (self.video.max_frames is None or self.video.max_frames >= 1, "video.max_frames must be >= 1"),
            (self.video.longest_side is None or self.video.longest_side >= 16, "video.longest_side must be >= 16"),
            (0.0 <= self.output.overlay_alpha <= 1.0, "output.overlay_alpha must be in [0, 1]"),
            (self.segmenter.max_batch is None or self.segmenter.max_batch >= 1, "segmenter.max_batch must be >= 1"),
            (1 <= self.everything.max_objects <= 254, "everything.max_objects must be in [1, 254]"),
            (min(self.everything.automask.points_per_side, self.everything.automask.points_per_batch,
                 self.everything.automask.crop_n_points_downscale_factor) >= 1 and self.everything.automask.crop_n_layers >= 0,
             "everything.automask: points_per_side, points_per_batch and crop_n_points_downscale_factor must be >= 1, "
             "crop_n_layers >= 0"),
            (self.decode.multimask == "off" or self.segmenter.name != "mobilesam-onnx",
             "decode.multimask needs all of SAM's outputs, which the mobilesam-onnx decoder does not give; "
             "use segmenter.name=mobilesam"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS = ("samtrack", "sam_pt", "sam_pt_reinit", "sam_pt_cotracker", "fast", "everything")
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


def load_config(source: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a config from a preset name or a YAML file, then apply ``key.path=value`` overrides.

    ``None`` gives the built-in defaults (which equal the ``sam_pt_reinit`` preset).
    """
    data: dict[str, Any] = {}
    origin = "defaults"
    if source is not None:
        text, origin = _read_source(source)
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML ({_one_line(exc)})", origin) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("top level must be a mapping of sections", origin)
        data = loaded
    # The file is checked on its own first, so that its mistakes are blamed on it and an
    # override's mistakes on the override.
    config = _build(Config, data, origin)
    if overrides:
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--set {item!r}: expected key.path=value")
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError:
                value = raw
            _set_path(data, key.strip().split("."), value, f"--set {item}")
        config = _build(Config, data, "--set")
    return config.validate()


def _read_source(source: str | Path) -> tuple[str, str]:
    name = str(source)
    if name in PRESETS:
        return resources.files("samtrack.configs").joinpath(f"{name}.yaml").read_text(), f"preset {name}"
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"no such config file or preset (presets: {', '.join(PRESETS)})", path)
    return path.read_text(), str(path)


def _set_path(data: dict[str, Any], keys: list[str], value: Any, where: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def _build(cls: type, data: Any, origin: str, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'top level'} must be a mapping, got {type(data).__name__}", origin)
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' (known: {', '.join(sorted(names))})", origin)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, origin, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, origin: str, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, origin, key + ".")
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
                return _coerce(option, value, origin, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin_tp is Literal:
        if value not in get_args(tp):
            choices = ", ".join(map(str, get_args(tp)))
            raise ConfigError(f"{key} must be one of {choices}, got {value!r}", origin)
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ConfigError(f"{key} must be {getattr(tp, '__name__', tp)}, got {value!r}", origin)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
