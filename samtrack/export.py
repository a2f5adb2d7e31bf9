"""Exports that compositing and editing software imports: mattes, cut-outs, COCO RLE.

Every format is written from the same stream of results (frame, label map, points), one frame
at a time, so nothing is held in memory but the open encoders and, for COCO, the run-length
codes. Mattes and cut-outs are per object, at the original frame size and the processed frame
rate, optionally feathered (:func:`matte`).

Formats (``EXPORT_FORMATS``) and what each writes under the export folder:

``labels``       ``masks/%05d.png``: the indexed label PNGs (``samtrack run``'s masks).
``overlay``      ``overlay.mp4``: masks and points drawn over the frames (H.264).
``matte-png``    ``matte/object_<id>/%05d.png``: 8-bit grey alpha mattes (255 object, 0 not).
``matte-ffv1``   ``matte/object_<id>.mkv``: the same mattes as a lossless FFV1 video (grey).
``matte-luma``   ``matte/object_<id>_luma.mp4``: a black/white matte as H.264 (yuv420p), for
                 editors that take luma mattes; lossy, so edges are approximate.
``cutout-png``   ``cutout/object_<id>/%05d.png``: the frame with the matte as alpha (RGBA,
                 straight alpha).
``cutout-webm``  ``cutout/object_<id>.webm``: the cut-out as VP9 with alpha (plays in browsers).
``cutout-mov``   ``cutout/object_<id>.mov``: the cut-out as ProRes 4444 with alpha.
``coco``         ``coco_rle.json``: every object's mask on every frame as COCO RLE
                 (pycocotools), see :class:`CocoRleWriter`.

Videos whose codec needs even sides (H.264, VP9 in yuva420p) are padded by repeating the last
row or column, so they are at most one pixel larger than the frames, as ``overlay.mp4``.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import cv2
import numpy as np
from PIL import Image

from .errors import InputError
from .outputs import atomic_write, encode_rle, write_label_png
from .overlay import VideoFileWriter

if TYPE_CHECKING:
    from .overlay import PointsDrawing
    from .video import VideoInfo

EXPORT_FORMATS: dict[str, str] = {
    "labels": "indexed label PNGs (masks/)",
    "overlay": "overlay video, H.264 (overlay.mp4)",
    "matte-png": "per-object 8-bit alpha matte PNG sequence (matte/object_<id>/)",
    "matte-ffv1": "per-object lossless matte video, FFV1 in MKV (matte/object_<id>.mkv)",
    "matte-luma": "per-object black/white luma matte, H.264 (matte/object_<id>_luma.mp4)",
    "cutout-png": "per-object cut-out with alpha, RGBA PNG sequence (cutout/object_<id>/)",
    "cutout-webm": "per-object cut-out with alpha, VP9 in WebM (cutout/object_<id>.webm)",
    "cutout-mov": "per-object cut-out with alpha, ProRes 4444 in MOV (cutout/object_<id>.mov)",
    "coco": "every mask as COCO RLE (coco_rle.json)",
}
# What an export may create at the top of its folder (a results folder holding only these and
# samtrack run's own files is an earlier result, which may be replaced).
EXPORT_ENTRIES = frozenset({"masks", "overlay.mp4", "matte", "cutout", "coco_rle.json"})
COCO_VERSION = 1


def parse_formats(values: Sequence[str], source: str = "--export") -> list[str]:
    """Comma-separated or repeated format names -> a de-duplicated list in the given order."""
    formats: list[str] = []
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if not name:
                continue
            if name == "all":
                formats.extend(f for f in EXPORT_FORMATS if f not in formats)
                continue
            if name not in EXPORT_FORMATS:
                raise InputError(f"unknown export format {name!r}; choose from {', '.join(EXPORT_FORMATS)}, all", source)
            if name not in formats:
                formats.append(name)
    return formats


def matte(label_map: np.ndarray, obj_id: int, feather: float = 0.0) -> np.ndarray:
    """The object's alpha matte: uint8 ``[H, W]``, 255 on the object, 0 elsewhere.

    ``feather`` > 0 softens the edge over about that many pixels on each side (a Gaussian blur
    with sigma ``feather / 2``); 0 gives the hard matte, equal to ``label_map == obj_id``.
    """
    hard = (label_map == obj_id).astype(np.uint8) * 255
    if feather <= 0:
        return hard
    size = 2 * int(np.ceil(feather)) + 1
    # Blur in float so the edge ramps smoothly; round back to 8 bits once.
    soft = cv2.GaussianBlur(hard.astype(np.float32), (size, size), sigmaX=feather / 2, borderType=cv2.BORDER_REPLICATE)
    return np.clip(np.rint(soft), 0, 255).astype(np.uint8)


# Encoder settings per video format: (suffix, codec, stored pixel format, container, options,
# needs even sides, the pixel format frames are given in).
_VIDEO_FORMATS: dict[str, tuple[str, str, str, str, dict[str, str], bool, str]] = {
    "matte-ffv1": (".mkv", "ffv1", "gray", "matroska", {"level": "3"}, False, "gray"),
    # Full-range grey in a 4:2:0 H.264: editors read the luma as the matte; crf 12 keeps edges.
    "matte-luma": ("_luma.mp4", "libx264", "yuv420p", "mp4", {"crf": "12", "preset": "veryfast"}, True, "gray"),
    # crf with b=0 is libvpx's constant-quality mode; alpha_mode is set by FFmpeg for yuva. Not the
    # realtime deadline: it trades quality for the time left, so the output would vary with the load.
    "cutout-webm": (".webm", "libvpx-vp9", "yuva420p", "webm", {"crf": "20", "b": "0", "deadline": "good", "cpu-used": "5"}, True, "rgba"),
    "cutout-mov": (".mov", "prores_ks", "yuva444p10le", "mov", {"profile": "4444", "alpha_bits": "16"}, False, "rgba"),
}


class CocoRleWriter:
    """Collects every object's mask as COCO RLE; writes ``coco_rle.json``.

    The file (version 1), frames in input-video indices::

        {"version": 1,
         "video": {"path": "bear.mp4", "width": 854, "height": 480, "fps": 24.0, "n_frames": 82},
         "frames": [0, 1, 2],
         "objects": [{"id": 1, "name": "bear",
                      "segmentations": [{"size": [480, 854], "counts": "..."}, null, ...],
                      "areas": [1234, 0, ...], "bboxes": [[x, y, w, h], null, ...]}]}

    ``segmentations[k]`` belongs to ``frames[k]``; null where the object is absent. ``counts`` is
    the compressed RLE string of ``pycocotools.mask.encode`` (column-major, as COCO), which
    ``pycocotools.mask.decode`` reads back.
    """

    def __init__(self, path: str | Path, info: "VideoInfo", names: Mapping[int, str | None], fps: float) -> None:
        self.path = Path(path)
        self.video = {"path": str(info.path), "width": int(info.width), "height": int(info.height),
                      "fps": float(fps), "n_frames": int(info.n_frames)}
        self.names = dict(names)
        self.frames: list[int] = []
        self.objects: dict[int, dict[str, list]] = {i: {"segmentations": [], "areas": [], "bboxes": []} for i in self.names}

    def add(self, frame_index: int, label_map: np.ndarray) -> None:
        self.frames.append(int(frame_index))
        for obj_id, record in self.objects.items():
            mask = label_map == obj_id
            if not mask.any():
                record["segmentations"].append(None)
                record["areas"].append(0)
                record["bboxes"].append(None)
                continue
            rle = encode_rle(mask)
            record["segmentations"].append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"]})
            ys, xs = np.nonzero(mask)
            record["areas"].append(int(len(xs)))
            # COCO's [x, y, width, height] of the pixels (pycocotools' toBbox gives the same).
            x0, y0 = int(xs.min()), int(ys.min())
            record["bboxes"].append([float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)])

    def write(self) -> None:
        objects = [{"id": i, "name": self.names.get(i), **self.objects[i]} for i in sorted(self.objects)]
        with atomic_write(self.path, "w") as f:
            json.dump({"version": COCO_VERSION, "video": self.video, "frames": self.frames, "objects": objects}, f,
                      separators=(",", ":"))


class Exporter:
    """Writes the chosen formats into ``folder`` from results given one frame at a time.

    Usage::

        with Exporter(folder, ["matte-png", "cutout-webm"], info, names, fps=24.0) as exporter:
            for result in predictor.segment_video(state):
                exporter.add(result.frame_index, reader.read(result.frame_index), result.label_map)

    An exception inside the block deletes the partial videos (the caller's StagedOutputDir
    removes the rest).
    """

    def __init__(
        self,
        folder: str | Path,
        formats: Sequence[str],
        info: "VideoInfo",
        names: Mapping[int, str | None],
        fps: float,
        feather: float = 0.0,
        overlay_alpha: float = 0.5,
        point_radius: int = 4,
    ) -> None:
        """
        Args:
            folder: an existing folder to write into.
            formats: names from ``EXPORT_FORMATS``.
            info: the input video (its size is the mattes' size).
            names: object id -> name (or None): the objects to export.
            fps: the frame rate of the exported videos (the input's over the stride).
            feather: matte edge softness in pixels (0: hard; COCO and labels stay hard).
            overlay_alpha, point_radius: for ``overlay``.
        """
        unknown = [f for f in formats if f not in EXPORT_FORMATS]
        if unknown:
            raise InputError(f"unknown export format {unknown[0]!r}; choose from {', '.join(EXPORT_FORMATS)}")
        if feather < 0:
            raise InputError(f"--feather must be >= 0, got {feather}")
        self.folder = Path(folder)
        self.formats = list(formats)
        self.ids = sorted(int(i) for i in names)
        self.feather = float(feather)
        self.n_frames = 0
        self._videos: list[tuple[str, int, VideoFileWriter]] = []
        self._overlay = None
        self._coco = CocoRleWriter(self.folder / "coco_rle.json", info, names, fps) if "coco" in self.formats else None
        try:
            if "labels" in self.formats:
                (self.folder / "masks").mkdir(exist_ok=True)
            for kind, fmt in (("matte", "matte-png"), ("cutout", "cutout-png")):
                if fmt in self.formats:
                    for obj_id in self.ids:
                        (self.folder / kind / f"object_{obj_id}").mkdir(parents=True, exist_ok=True)
            for fmt, (suffix, codec, pix_fmt, container, options, even, _) in _VIDEO_FORMATS.items():
                if fmt in self.formats:
                    kind = fmt.split("-")[0]
                    (self.folder / kind).mkdir(exist_ok=True)
                    for obj_id in self.ids:
                        path = self.folder / kind / f"object_{obj_id}{suffix}"
                        self._videos.append((fmt, obj_id, VideoFileWriter(path, fps, codec, pix_fmt, container, options, even)))
            if "overlay" in self.formats:
                from .overlay import OverlayWriter

                self._overlay = OverlayWriter(self.folder / "overlay.mp4", fps=fps, alpha=overlay_alpha, radius=point_radius)
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> "Exporter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close() if exc_type is None else self.abort()

    @property
    def needs_frames(self) -> bool:
        """Whether :meth:`add` needs the RGB frame (cut-outs and the overlay do)."""
        return any(f.startswith("cutout") or f == "overlay" for f in self.formats)

    def add(
        self,
        frame_index: int,
        frame: np.ndarray | None,
        label_map: np.ndarray,
        points: list["PointsDrawing"] | None = None,
    ) -> None:
        """Export one frame: ``frame`` RGB uint8 ``[H, W, 3]`` (None when :attr:`needs_frames`
        is False), ``label_map`` uint8 ``[H, W]`` of object ids, ``points`` for the overlay."""
        if frame is None and self.needs_frames:
            raise ValueError("the cut-out and overlay exports need the frame")
        name = f"{frame_index:05d}.png"
        if "labels" in self.formats:
            write_label_png(self.folder / "masks" / name, label_map)
        if self._coco is not None:
            self._coco.add(frame_index, label_map)
        if self._overlay is not None:
            self._overlay.write(frame, label_map, points)
        mattes = {obj_id: matte(label_map, obj_id, self.feather) for obj_id in self.ids}
        cutouts: dict[int, np.ndarray] = {}
        if frame is not None and any(f.startswith("cutout") for f in self.formats):
            cutouts = {obj_id: np.dstack([frame, alpha]) for obj_id, alpha in mattes.items()}
        for obj_id in self.ids:
            if "matte-png" in self.formats:
                _write_png(self.folder / "matte" / f"object_{obj_id}" / name, mattes[obj_id])
            if "cutout-png" in self.formats:
                _write_png(self.folder / "cutout" / f"object_{obj_id}" / name, cutouts[obj_id])
        for fmt, obj_id, writer in self._videos:
            if fmt.startswith("matte"):
                writer.write(mattes[obj_id], "gray")
            else:
                writer.write(cutouts[obj_id], "rgba")
        self.n_frames += 1

    def close(self) -> None:
        """Finish every file; raises when no frame was exported."""
        if self.n_frames == 0:
            self.abort()
            raise InputError("nothing to export: no frame has a result")
        for _, _, writer in self._videos:
            writer.close()
        if self._overlay is not None:
            self._overlay.close()
        if self._coco is not None:
            self._coco.write()

    def abort(self) -> None:
        for _, _, writer in self._videos:
            writer.abort()
        if self._overlay is not None:
            self._overlay._abort()


def export_results(
    folder: str | Path,
    formats: Sequence[str],
    info: "VideoInfo",
    names: Mapping[int, str | None],
    fps: float,
    results,
    read_frame: Callable[[int], np.ndarray],
    feather: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Export ``results`` (an iterable of objects with ``frame_index``, ``label_map`` and
    optionally ``points``) into ``folder`` atomically (a StagedOutputDir); ``read_frame(i)``
    gives frame i when a format needs it; ``progress(n)`` is called after each frame.
    Returns the number of frames exported."""
    from .outputs import StagedOutputDir

    with StagedOutputDir(folder) as staging, Exporter(staging, formats, info, names, fps, feather) as exporter:
        for result in results:
            frame = read_frame(result.frame_index) if exporter.needs_frames else None
            exporter.add(result.frame_index, frame, result.label_map, _drawings(result))
            if progress is not None:
                progress(exporter.n_frames)
        n = exporter.n_frames
    return n


def _drawings(result) -> list["PointsDrawing"] | None:
    points = getattr(result, "points", None)
    if not points:
        return None
    from .overlay import PointsDrawing

    return [PointsDrawing(obj_id=o, xy=p.xy, visible=p.visible, positive=p.labels == 1) for o, p in points.items()]


def _write_png(path: Path, pixels: np.ndarray) -> None:
    # compress_level 1: mattes are mostly flat and compress well already; level 6 is 3x slower.
    with atomic_write(path) as f:
        Image.fromarray(pixels).save(f, format="PNG", compress_level=1)
