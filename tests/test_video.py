"""Frame readers (video files, frame folders), frame selection, the palette and the overlay writer."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import pytest
from PIL import Image

from samtrack import video
from samtrack.errors import InputError
from samtrack.overlay import OverlayWriter, PointsDrawing, render_overlay
from samtrack.palette import davis_palette
from samtrack.video import (
    DecordVideoReader,
    FrameFolderReader,
    OpenCVVideoReader,
    open_video,
    resize_longest_side,
    select_frames,
)

from .conftest import load_frame


def write_video(
    path: Path, frames: list[np.ndarray], fps: float = 10, codec: str = "libx264", faststart: bool = False
) -> Path:
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames[0].shape[:2] if frames else (48, 64)
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def grey_frames(n: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Uniform frames whose grey level encodes their index (survives lossy coding)."""
    return [np.full((height, width, 3), 10 + 12 * i, np.uint8) for i in range(n)]


def frame_level(frame: np.ndarray) -> int:
    return round((float(frame.mean()) - 10) / 12)


def noise_frames(n: int, height: int = 120, width: int = 160) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def grey_mp4(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("videos") / "grey.mp4", grey_frames(15), fps=12.5)


def decord_fails(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise RuntimeError("simulated decord failure")

    monkeypatch.setattr(decord, "VideoReader", fail)


# --- video files ---------------------------------------------------------------------------


def test_video_file_info(grey_mp4: Path) -> None:
    reader = open_video(grey_mp4)
    assert isinstance(reader, DecordVideoReader)
    assert len(reader) == reader.info.n_frames == 15
    assert reader.info.fps == pytest.approx(12.5)
    assert (reader.info.height, reader.info.width) == (48, 64)
    assert reader.info.path == grey_mp4
    reader.close()


def test_video_index_reads_in_any_order(grey_mp4: Path) -> None:
    reader = open_video(str(grey_mp4))
    for index in [0, 1, 2, 9, 3, 14, 13, 0, 7, 8]:
        frame = reader.read(index)
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        assert frame_level(frame) == index
    with pytest.raises(IndexError):
        reader.read(15)
    with pytest.raises(IndexError):
        reader.read(-1)


def test_video_rgb_order(tmp_path: Path) -> None:
    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 0] = 255
    path = write_video(tmp_path / "red.mp4", [red] * 3)
    for reader in [open_video(path), OpenCVVideoReader(path)]:
        r, g, b = reader.read(1).reshape(-1, 3).mean(axis=0)
        assert r > 200 and g < 40 and b < 40, type(reader).__name__


def test_format_decided_by_content_not_extension(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mkv", grey_frames(4))
    renamed = path.rename(tmp_path / "clip.dat")
    reader = open_video(renamed)
    assert len(reader) == 4 and frame_level(reader.read(3)) == 3


def test_opencv_fallback_when_decord_fails(grey_mp4: Path, monkeypatch) -> None:
    decord_fails(monkeypatch)
    reader = open_video(grey_mp4)
    assert isinstance(reader, OpenCVVideoReader)
    assert (len(reader), reader.info.height, reader.info.width) == (15, 48, 64)
    assert reader.info.fps == pytest.approx(12.5)
    for index in [0, 1, 2, 10, 4, 14, 0, 1]:
        assert frame_level(reader.read(index)) == index
    reader.close()


def test_opencv_sequential_reads_do_not_seek(grey_mp4: Path) -> None:
    class SeekCounter:
        def __init__(self, capture) -> None:
            self.capture, self.seeks = capture, 0

        def set(self, *args):
            self.seeks += 1
            return self.capture.set(*args)

        def __getattr__(self, name):
            return getattr(self.capture, name)

    reader = OpenCVVideoReader(grey_mp4)
    reader._capture = counter = SeekCounter(reader._capture)
    assert [frame_level(reader.read(i)) for i in range(15)] == list(range(15))
    assert counter.seeks == 1  # back to frame 0 after the first frame decoded at open
    assert frame_level(reader.read(5)) == 5 and frame_level(reader.read(6)) == 6
    assert counter.seeks == 2


def test_raw_stream_falls_back_and_is_counted(tmp_path: Path) -> None:
    # A raw H.264 stream has no container index: decord cannot open it, and OpenCV reports no
    # usable frame count, so the frames are counted by demuxing.
    path = tmp_path / "clip.h264"
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in grey_frames(6):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    reader = open_video(path)
    assert isinstance(reader, OpenCVVideoReader)
    assert len(reader) == 6
    assert [frame_level(reader.read(i)) for i in [0, 1, 5, 2, 3]] == [0, 1, 5, 2, 3]


def test_truncated_video_frames_raise_input_error(tmp_path: Path) -> None:
    # Index at the front, data cut in half: the file opens, the second half cannot be decoded.
    full = write_video(tmp_path / "full.mp4", noise_frames(30), faststart=True).read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(full[: len(full) // 2])
    reader = open_video(path)
    with pytest.raises(InputError, match="cannot decode frame") as info:
        for index in range(len(reader)):
            reader.read(index)
    assert info.value.path == path
    assert index > 0  # the first half did decode


# --- errors ---------------------------------------------------------------------------------


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nope.mp4"


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.mp4"
    path.write_text("not a video\n" * 100)
    return path


def _empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.mp4"
    path.touch()
    return path


def _truncated(tmp_path: Path) -> Path:
    data = write_video(tmp_path / "full.mp4", noise_frames(10)).read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[:2048])
    return path


def _no_frames_avi(tmp_path: Path) -> Path:
    return write_video(tmp_path / "zero.avi", [])


def _no_frames_mp4(tmp_path: Path) -> Path:
    return write_video(tmp_path / "zero.mp4", [])


def _empty_folder(tmp_path: Path) -> Path:
    path = tmp_path / "frames"
    path.mkdir()
    return path


def _folder_without_images(tmp_path: Path) -> Path:
    path = tmp_path / "frames"
    path.mkdir()
    (path / "readme.txt").write_text("hello")
    (path / "sub.jpg").mkdir()
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (_missing, "no such file"),
        (_text, "cannot be opened as a video"),
        (_empty_file, "empty"),
        (_truncated, "cannot be opened as a video"),
        (_no_frames_avi, "no frames"),
        (_no_frames_mp4, "cannot be opened as a video"),
        (_empty_folder, "no images"),
        (_folder_without_images, "no images"),
    ],
)
def test_open_errors_are_clean(make, message: str, tmp_path: Path, capfd) -> None:
    path = make(tmp_path)
    capfd.readouterr()
    with pytest.raises(InputError, match=message) as info:
        open_video(path)
    assert info.value.path == path
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    # decord and FFmpeg log failed opens to fd 2 from C; none of it may reach the user
    assert capfd.readouterr().err == ""


# --- frame folders --------------------------------------------------------------------------


def test_folder_natural_order_and_formats(tmp_path: Path) -> None:
    names = ["10.png", "2.JPG", "1.jpeg", "frame_100.png", "frame_11.png"]
    for i, name in enumerate(names):
        Image.new("RGB", (40, 30), (20 * (i + 1), 0, 0)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "._1.jpg").write_bytes(b"macOS metadata")  # hidden: ignored
    reader = open_video(tmp_path)
    assert isinstance(reader, FrameFolderReader)
    assert [p.name for p in reader.files] == ["1.jpeg", "2.JPG", "10.png", "frame_11.png", "frame_100.png"]
    assert (len(reader), reader.info.height, reader.info.width) == (5, 30, 40)
    assert reader.info.fps == video.DEFAULT_FPS
    frame = reader.read(2)  # 10.png
    assert frame.shape == (30, 40, 3) and frame.dtype == np.uint8
    assert tuple(frame[0, 0]) == (20, 0, 0)


def test_folder_grey_and_rgba_frames_read_as_rgb(tmp_path: Path) -> None:
    Image.new("L", (8, 6), 77).save(tmp_path / "0.png")
    Image.new("RGBA", (8, 6), (1, 2, 3, 4)).save(tmp_path / "1.png")
    reader = open_video(tmp_path)
    assert tuple(reader.read(0)[0, 0]) == (77, 77, 77)
    assert tuple(reader.read(1)[0, 0]) == (1, 2, 3)


def test_folder_size_mismatch_names_the_file(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30)).save(tmp_path / "0.png")
    Image.new("RGB", (40, 31)).save(tmp_path / "1.png")
    reader = open_video(tmp_path)  # checked lazily, on read
    reader.read(0)
    with pytest.raises(InputError, match="40x31.*40x30") as info:
        reader.read(1)
    assert info.value.path == tmp_path / "1.png"


def test_folder_unreadable_frame_names_the_file(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30)).save(tmp_path / "0.jpg")
    good = tmp_path / "0.jpg"
    (tmp_path / "1.jpg").write_bytes(good.read_bytes()[:200])  # truncated JPEG
    (tmp_path / "2.jpg").write_text("not an image")
    reader = open_video(tmp_path)
    for index in (1, 2):
        with pytest.raises(InputError, match="cannot read image") as info:
            reader.read(index)
        assert info.value.path == reader.files[index] and "\n" not in str(info.value)


def test_folder_first_image_unreadable(tmp_path: Path) -> None:
    (tmp_path / "0.png").write_text("not an image")
    with pytest.raises(InputError, match="cannot read image"):
        open_video(tmp_path)


def test_davis_frame_folder(davis16: Path) -> None:
    folder = davis16 / "JPEGImages" / "480p" / "bear"
    reader = open_video(folder)
    assert len(reader) == len(list(folder.glob("*.jpg")))
    assert (reader.info.height, reader.info.width) == (480, 854)
    for index in (0, len(reader) - 1):
        np.testing.assert_array_equal(reader.read(index), load_frame(davis16, "bear", index))


# --- selection and resizing -----------------------------------------------------------------


def test_select_frames() -> None:
    assert select_frames(10) == list(range(10))
    assert select_frames(10, start=3, stride=3) == [3, 6, 9]
    assert select_frames(10, start=1, stride=2, max_frames=3) == [1, 3, 5]
    assert select_frames(10, start=9, max_frames=5) == [9]
    with pytest.raises(InputError, match="start frame 10") as info:
        select_frames(10, start=10, path="clip.mp4")
    assert info.value.path == Path("clip.mp4")
    for bad in [dict(start=-1), dict(stride=0), dict(max_frames=0)]:
        with pytest.raises(ValueError):
            select_frames(10, **bad)


def test_resize_longest_side() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (480, 854, 3), dtype=np.uint8)
    assert resize_longest_side(frame, None) is frame
    assert resize_longest_side(frame, 854) is frame
    small = resize_longest_side(frame, 427)
    assert small.shape == (240, 427, 3) and small.dtype == np.uint8
    # area interpolation averages: the mean colour is kept
    np.testing.assert_allclose(small.mean(axis=(0, 1)), frame.mean(axis=(0, 1)), atol=1.0)
    assert resize_longest_side(np.zeros((1000, 10), np.uint8), 100).shape == (100, 1)


# --- palette and overlay --------------------------------------------------------------------


def test_davis_palette() -> None:
    palette = davis_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert palette[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert palette[8].tolist() == [64, 0, 0] and palette[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in palette}) == 256
    with pytest.raises(ValueError):
        palette[1] = 0  # shared and cached: read-only


def scene(height: int = 60, width: int = 80) -> tuple[np.ndarray, np.ndarray]:
    frame = np.full((height, width, 3), 100, np.uint8)
    labels = np.zeros((height, width), np.uint8)
    labels[10:30, 10:30] = 1
    labels[35:55, 40:70] = 2
    return frame, labels


def test_render_overlay_colours_objects_only() -> None:
    frame, labels = scene()
    before = frame.copy(), labels.copy()
    image = render_overlay(frame, labels, alpha=0.5)
    palette = davis_palette().astype(int)
    assert image.shape == frame.shape and image.dtype == np.uint8
    np.testing.assert_array_equal(frame, before[0])
    np.testing.assert_array_equal(labels, before[1])
    # inside each object, away from its outline: an alpha blend with the object's colour
    for obj, (y, x) in [(1, (20, 20)), (2, (45, 55))]:
        np.testing.assert_allclose(image[y, x], (100 + palette[obj]) / 2, atol=1)
    # the outline is the pure colour, drawn inside the mask
    np.testing.assert_array_equal(image[10, 20], palette[1])
    np.testing.assert_array_equal(image[35, 55], palette[2])
    # background is untouched, right up to the mask edge
    background = labels == 0
    np.testing.assert_array_equal(image[background], frame[background])
    # alpha 0 leaves the interior as it was
    np.testing.assert_array_equal(render_overlay(frame, labels, alpha=0.0)[20, 20], frame[20, 20])


def test_render_overlay_points() -> None:
    frame, labels = scene()
    xy = np.array([[70, 10], [50, 10], [70, 25], [50, 25]], np.float32)
    drawing = PointsDrawing(
        obj_id=3,
        xy=xy,
        visible=np.array([True, False, True, False]),
        positive=np.array([True, True, False, False]),
    )
    image = render_overlay(frame, labels, [drawing], radius=4)
    colour = davis_palette()[3]
    # visible points are filled with the object colour, occluded ones are hollow
    np.testing.assert_array_equal(image[10, 70], colour)
    np.testing.assert_array_equal(image[10, 50], frame[10, 50])
    assert not np.array_equal(image[10, 46:55], frame[10, 46:55])  # the ring is there
    np.testing.assert_array_equal(image[25, 70], colour)
    np.testing.assert_array_equal(image[25, 50], frame[25, 50])
    # negative points are squares: their corner region is drawn, a circle's is not
    assert not np.array_equal(image[21, 66], frame[21, 66])
    np.testing.assert_array_equal(image[6, 66], frame[6, 66])
    # nothing drawn far from the points and masks
    np.testing.assert_array_equal(image[:5, 35:45], frame[:5, 35:45])


def test_points_drawing_checks_shapes() -> None:
    with pytest.raises(ValueError, match="object 1"):
        PointsDrawing(1, np.zeros((3, 2), np.float32), np.ones(2, bool), np.ones(3, bool))
    PointsDrawing(1, np.zeros((0, 2), np.float32), np.ones(0, bool), np.ones(0, bool))


def read_stream(path: Path) -> tuple[tuple[str, str, int, float, int, int], list[np.ndarray]]:
    """((codec, pix_fmt, n_frames, fps, width, height), decoded RGB frames) of an mp4."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        props = (stream.codec_context.name, stream.format.name, len(frames), float(stream.average_rate))
        return props + (stream.width, stream.height), frames


def test_overlay_writer_writes_h264_atomically(tmp_path: Path) -> None:
    path = tmp_path / "overlay.mp4"
    frame, labels = scene()
    with OverlayWriter(path, fps=12) as writer:
        for _ in range(7):
            writer.write(frame, labels)
        assert not path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.mp4"]
    props, frames = read_stream(path)
    assert props == ("h264", "yuv420p", 7, 12.0, 80, 60)
    expected = render_overlay(frame, labels).astype(int)
    assert np.abs(frames[3].astype(int) - expected).mean() < 3
    assert len(open_video(path)) == 7


def test_overlay_writer_odd_size_is_padded(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    frame, labels = scene(47, 65)
    with OverlayWriter(path, fps=24) as writer:
        writer.write(frame, labels)
        writer.write(frame, labels)
    props, frames = read_stream(path)
    assert props == ("h264", "yuv420p", 2, 24.0, 66, 48)
    assert np.abs(frames[0][:47, :65].astype(int) - render_overlay(frame, labels).astype(int)).mean() < 3


def test_overlay_writer_exception_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "overlay.mp4"
    path.write_bytes(b"previous result")
    frame, labels = scene()
    with pytest.raises(KeyboardInterrupt):
        with OverlayWriter(path, fps=24) as writer:
            writer.write(frame, labels)
            raise KeyboardInterrupt
    assert path.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.mp4"]


def test_overlay_writer_rejects_size_change_and_empty_video(tmp_path: Path) -> None:
    frame, labels = scene()
    with pytest.raises(ValueError, match="first frame"):
        with OverlayWriter(tmp_path / "a.mp4", fps=24) as writer:
            writer.write(frame, labels)
            writer.write(frame[:-2], labels[:-2])
    with pytest.raises(ValueError, match="before any frame"):
        with OverlayWriter(tmp_path / "b.mp4", fps=24):
            pass
    assert list(tmp_path.iterdir()) == []


def test_recent_frames_decodes_a_frame_read_twice_in_a_row_once():
    from samtrack.video import RecentFrames

    from .fakes import ArrayVideo

    frames = [np.full((4, 6, 3), i, np.uint8) for i in range(5)]
    inner = ArrayVideo([f.copy() for f in frames])
    decoded = []
    original = inner.read
    inner.read = lambda i: (decoded.append(i), original(i).copy())[1]
    reader = RecentFrames(inner, size=2)
    for i in (0, 1, 1, 0, 2, 2, 1):  # reading 2 pushes out 1, the least recently read
        assert np.array_equal(reader.read(i), frames[i])
    assert decoded == [0, 1, 2, 1]
    assert len(reader) == 5 and reader.info is inner.info
    with pytest.raises(ValueError):
        reader.read(2)[0, 0, 0] = 9  # shared with every caller, so read-only


class _LoggedVideo:
    """Frames 0..n-1 filled with their index; logs each decode and the thread it ran on."""

    def __init__(self, n: int, corrupt: int | None = None) -> None:
        from .fakes import ArrayVideo

        self.inner = ArrayVideo([np.full((4, 6, 3), i, np.uint8) for i in range(n)])
        self.info = self.inner.info
        self.decoded: list[int] = []
        self.threads: set[str] = set()
        self.corrupt = corrupt
        self.closed = False

    def __len__(self) -> int:
        return len(self.inner)

    def read(self, index: int) -> np.ndarray:
        import threading

        self.threads.add(threading.current_thread().name)
        self.decoded.append(index)
        if index == self.corrupt:
            from samtrack.errors import InputError

            raise InputError(f"frame {index} is corrupt")
        return self.inner.read(index).copy()

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("order", [list(range(10)), list(range(9, -1, -1)), list(range(0, 10, 3)), [0, 5, 2, 7, 7, 1]])
def test_read_ahead_gives_each_frame_and_guesses_the_next(order: list[int]) -> None:
    import threading

    from samtrack.video import ReadAhead

    inner = _LoggedVideo(10)
    reader = ReadAhead(inner)
    for i in order:
        assert np.array_equal(reader.read(i), np.full((4, 6, 3), i, np.uint8))
    assert len(reader) == 10 and reader.info is inner.info
    reader.close()
    assert inner.closed and inner.threads and threading.current_thread().name not in inner.threads
    steps = [b - a for a, b in zip(order, order[1:])]
    if len(set(steps)) == 1:
        # A steady walk decodes each frame once; the only waste is the first guess (a step of 1)
        # and the guess past the end.
        extra = list(inner.decoded)
        for i in order:
            extra.remove(i)
        assert len(extra) <= 2 and not set(extra) & set(order)


def test_read_ahead_fails_on_the_bad_frame_only_when_it_is_asked_for() -> None:
    from samtrack.errors import InputError
    from samtrack.video import ReadAhead

    reader = ReadAhead(_LoggedVideo(6, corrupt=3))
    assert reader.read(2)[0, 0, 0] == 2  # frame 3, guessed next, fails in the background
    assert reader.read(0)[0, 0, 0] == 0  # a jump elsewhere is unaffected by it
    with pytest.raises(InputError, match="frame 3 is corrupt"):
        reader.read(3)
    with pytest.raises(IndexError):
        reader.read(6)
    reader.close()
