"""One video's results folder as ``samtrack run`` writes it: masks/, overlay.mp4, tracks.json,
config.yaml and any exports (see the README's Outputs and Exports). ``samtrack run`` and ``samtrack batch`` both go through
:func:`write_results`, so a video segmented in a batch, on any runner, gives the same files."""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Mapping, Sequence

import yaml

from .background import InOrderWorker
from .errors import SamtrackError
from .fileio import os_errors
from .outputs import TracksRecorder, write_label_png


def open_state(video: str | Path, config):
    """An :class:`~samtrack.api.InferenceState` on ``video`` (a file or a folder of frames) that
    keeps the frames the overlay needs: it draws frames the pipeline has just read, a tracking
    window at a time, so they are kept rather than decoded (and seeked back to) twice."""
    from .api import InferenceState
    from .video import ReadAhead, RecentFrames, open_video

    size = config.tracking_window + config.tracker.lookback + 1
    return InferenceState.open(RecentFrames(ReadAhead(open_video(video)), size=size), config.video)


def write_results(predictor, state, names: Mapping[int, str | None], folder: Path,
                  tick: Callable[[], None] = lambda: None, formats: Sequence[str] = (), feather: float = 0.0,
                  first_scores: Mapping[int, float] | None = None) -> int:
    """Segment ``state``'s video with ``predictor`` and write its results into ``folder``.

    Args:
        predictor: a :class:`~samtrack.api.VideoPredictor`; its config's ``output`` says which
            files are written.
        state: the video with its prompts (see :func:`open_state`).
        names: object id -> name, for tracks.json.
        folder: an empty folder (a staging folder: the caller renames it into place).
        tick: called once per processed frame.
        formats: export formats to write as well (:mod:`samtrack.export`; checked by the caller).
        feather: edge softening of mattes and cut-outs, in pixels.
        first_scores: object id -> its automatic mask's score on the first frame (``--everything``),
            for instances.json.

    Returns:
        The number of frames processed.
    """
    from .everything import InstanceRecorder

    config = predictor.config
    info = state.reader.info
    (folder / "masks").mkdir()
    recorder = TracksRecorder(info, names) if config.output.tracks else None
    instances = InstanceRecorder(sorted(names), dict(first_scores or {})) if config.output.instances else None
    with ExitStack() as stack:
        overlay = stack.enter_context(_overlay_writer(folder / "overlay.mp4", info.fps, config)) if config.output.overlay else None
        exporter = stack.enter_context(_exporter(folder, list(formats), info, names, config, feather)) if formats else None
        # Entered last, so it finishes (or drops) its writes before the writers above close.
        writer = stack.enter_context(InOrderWorker())
        for result in predictor.segment_video(state):
            # "io" is the time the pipeline waits for the writer (a full queue), not the writing.
            with predictor.timings.measure("io"):
                if recorder is not None:
                    recorder.add(result)
                if instances is not None:
                    instances.add(result)
                # Frames are read here, not on the writer's thread: the reader is the pipeline's.
                frame = state.reader.read(result.frame_index) if overlay or (exporter and exporter.needs_frames) else None
                writer.submit(_write_frame, folder, result, frame, overlay, exporter)
            tick()
    # overlay.mp4 and the exports are finished (the stack closed) before the folder is committed.
    if recorder is not None:
        recorder.write(folder / "tracks.json")
    if instances is not None:
        instances.write(folder / "instances.json", recorder.video if recorder else {"path": str(info.path)})
    (folder / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return len(state.frame_indices)


def _write_frame(folder: Path, result, frame, overlay, exporter) -> None:
    # A full disk or a lost mount is not a usage error, but it still gets one line, not a traceback.
    with os_errors(folder, SamtrackError, doing=f"cannot write the results of frame {result.frame_index}"):
        write_label_png(folder / "masks" / f"{result.frame_index:05d}.png", result.label_map)
        if overlay is not None:
            overlay.write(frame, result.label_map, _drawings(result))
        if exporter is not None:
            exporter.add(result.frame_index, frame if exporter.needs_frames else None, result.label_map)


def _overlay_writer(path: Path, fps: float, config):
    from .overlay import OverlayWriter

    return OverlayWriter(path, fps=fps / config.video.stride, alpha=config.output.overlay_alpha,
                         radius=config.output.point_radius)


def _exporter(folder: Path, formats: list[str], info, names, config, feather: float):
    from .export import Exporter

    return Exporter(folder, formats, info, names, fps=info.fps / config.video.stride, feather=feather)


def _drawings(result):
    from .overlay import PointsDrawing

    return [PointsDrawing(obj_id=o, xy=p.xy, visible=p.visible, positive=p.labels == 1) for o, p in result.points.items()]
