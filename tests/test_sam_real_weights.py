"""Our PyTorch MobileSAM on the converted real weights against the ONNX pair they came from, on
real DAVIS frames: same embeddings, same masks."""
from __future__ import annotations

import os

import numpy as np
import pytest

from .conftest import load_frame, load_gt

if os.environ.get("SAMTRACK_REQUIRE_TORCH") == "1":
    import torch  # noqa: F401
torch = pytest.importorskip("torch", reason="the torch extra is not installed")

from samtrack.segmenters.sam.build import build_sam  # noqa: E402
from samtrack.segmenters.sam_torch import SamTorch  # noqa: E402

FRAMES = [("bear", 0), ("soccerball", 10), ("dance-jump", 20)]


@pytest.fixture(scope="module")
def torch_segmenter(mobilesam_torch_checkpoint):
    return SamTorch(build_sam("mobilesam", mobilesam_torch_checkpoint), "mobilesam")


def _prompts(gt: np.ndarray, rng: np.random.Generator) -> list[dict]:
    ys, xs = np.nonzero(gt)
    pick = rng.choice(len(xs), 4, replace=False)
    positives = np.stack([xs[pick], ys[pick]], 1).astype(np.float32)
    oy, ox = np.nonzero(~gt)
    far = rng.choice(len(ox), 1)
    negative = np.stack([ox[far], oy[far]], 1).astype(np.float32)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
    return [
        dict(points=positives[:1], labels=np.array([1])),  # one click: the best multimask output
        dict(points=np.concatenate([positives, negative]), labels=np.array([1, 1, 1, 1, 0])),
        dict(points=positives[:2], labels=np.array([1, 1]), box=box),
        dict(box=box),
    ]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b))


@pytest.mark.parametrize("seq,index", FRAMES)
def test_torch_mobilesam_agrees_with_the_onnx_pair(davis16, segmenter, torch_segmenter, seq: str, index: int) -> None:
    frame, gt = load_frame(davis16, seq, index), load_gt(davis16, seq, index)
    onnx_embedding = segmenter.encode(frame)
    ours = torch_segmenter.encode(frame)
    a, b = onnx_embedding.numpy().ravel(), ours.numpy().ravel()
    cosine = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cosine >= 0.9999, cosine
    rng = np.random.default_rng(0)
    for prompt in _prompts(gt, rng):
        first = segmenter.decode(onnx_embedding, **prompt)
        second = torch_segmenter.decode(ours, **prompt)
        assert _iou(first.mask, second.mask) >= 0.99
        assert abs(first.iou - second.iou) < 0.01
        # With the mask prompt fed back, as the pipeline's second pass does.
        refined_onnx = segmenter.decode(onnx_embedding, **prompt, mask_input=first.low_res_logits)
        refined_ours = torch_segmenter.decode(ours, **prompt, mask_input=second.low_res_logits)
        assert _iou(refined_onnx.mask, refined_ours.mask) >= 0.99


def test_our_batched_onnx_decoder_equals_sams_export_one_by_one(davis16, mobilesam_checkpoint,
                                                               mobilesam_torch_checkpoint, tmp_path) -> None:
    """Our decoder exported with a batch dimension, on onnxruntime, against the ONNX pair's own
    single-prompt decoder: prompt sets of different lengths, with and without mask prompts."""
    from samtrack.segmenters import Prompt
    from samtrack.segmenters.mobilesam_onnx import MobileSamOnnx
    from samtrack.segmenters.sam.export import export_decoder

    export_decoder(build_sam("mobilesam", mobilesam_torch_checkpoint), tmp_path / "sam_batched.onnx")
    onnx = MobileSamOnnx(mobilesam_checkpoint / "encoder.onnx", mobilesam_checkpoint / "sam.onnx",
                         batched_decoder=tmp_path / "sam_batched.onnx")
    frame, gt = load_frame(davis16, "bear", 0), load_gt(davis16, "bear", 0)
    embedding = onnx.encode(frame)
    prompts = [Prompt(**p) for p in _prompts(gt, np.random.default_rng(1))]
    first = onnx.decode_batch(embedding, prompts)
    prompts += [Prompt(p.points, p.labels, p.box, mask_input=f.low_res_logits) for p, f in zip(prompts, first)]
    together = onnx.decode_batch(embedding, prompts)
    for prompt, batched in zip(prompts, together):
        alone = onnx.decode(embedding, prompt.points, prompt.labels, prompt.box, prompt.mask_input)
        assert np.abs(alone.logits - batched.logits).max() < 1e-3
        assert abs(alone.iou - batched.iou) < 1e-4
        assert _iou(alone.mask, batched.mask) > 0.999
    # Another frame size than the export's example: the upscaling sizes stay dynamic.
    from samtrack.segmenters import ImageEmbedding

    wide = ImageEmbedding(embedding.features, original_size=(720, 1280), input_size=(576, 1024))
    alone = onnx.decode(wide, prompts[1].points, prompts[1].labels)
    (batched,) = onnx.decode_batch(wide, [Prompt(prompts[1].points, prompts[1].labels)])
    assert batched.logits.shape == (720, 1280)
    assert np.abs(alone.logits - batched.logits).max() < 1e-3


def test_low_res_decoder_upscaled_on_read_equals_the_full_size_graph(davis16, mobilesam_checkpoint,
                                                                     mobilesam_torch_checkpoint, tmp_path) -> None:
    """The unpadded path's decoder stops at the low-res logits and upscales a mask (cv2) only
    when it is read: it must equal the graph that upscales in the graph, on two frame sizes."""
    from samtrack.segmenters import ImageEmbedding, Prompt
    from samtrack.segmenters.base import UpscaledOnRead
    from samtrack.segmenters.backends import open_session
    from samtrack.segmenters.mobilesam_onnx import MobileSamOnnx
    from samtrack.segmenters.sam.export import export_decoder

    model = build_sam("mobilesam", mobilesam_torch_checkpoint)
    export_decoder(model, tmp_path / "full.onnx")
    export_decoder(model, tmp_path / "low.onnx", full_size=False)
    onnx = MobileSamOnnx(mobilesam_checkpoint / "encoder.onnx", mobilesam_checkpoint / "sam.onnx")
    full, low = open_session(tmp_path / "full.onnx", "onnxruntime"), open_session(tmp_path / "low.onnx", "onnxruntime")
    assert "orig_im_size" not in low.input_names
    frame, gt = load_frame(davis16, "bear", 0), load_gt(davis16, "bear", 0)
    embedding = onnx.encode(frame)
    prompts = [Prompt(**p) for p in _prompts(gt, np.random.default_rng(3))]
    for size in (embedding, ImageEmbedding(embedding.features, original_size=(720, 1280), input_size=(576, 1024))):
        expected = onnx._run_batched(full, size, prompts, (256, 256))
        lazy = onnx._run_batched(low, size, prompts, (256, 256))
        for want, got in zip(expected, lazy):
            assert isinstance(got, UpscaledOnRead) and got._logits is None  # nothing upscaled yet
            assert abs(want.iou - got.iou) < 1e-5
            assert np.abs(want.low_res_logits - got.low_res_logits).max() < 1e-4
            assert got.logits.shape == size.original_size
            assert np.abs(want.logits - got.logits).max() < 1e-3
            assert _iou(want.mask, got.mask) > 0.999
        # The low-res graph returns all four outputs: the same choice, with the others attached.
        for want, got in zip(lazy, onnx._run_batched(low, size, prompts, (256, 256), candidates=True)):
            assert len(got.candidates) == 4 and got.low_res_logits is not None
            assert sum(np.array_equal(c.low_res_logits, want.low_res_logits) for c in got.candidates) >= 1
            assert np.array_equal(got.low_res_logits, want.low_res_logits) and got.iou == want.iou


def test_run_with_the_torch_segmenter_matches_the_onnx_run(davis16, mobilesam_checkpoint, mobilesam_torch_checkpoint,
                                                          tmp_path) -> None:
    """`samtrack run --segmenter mobilesam` on 8 frames of bear gives the ONNX run's masks."""
    from PIL import Image

    from samtrack.cli import main

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(8):
        (frames / f"{i:05d}.jpg").symlink_to(davis16 / "JPEGImages" / "480p" / "bear" / f"{i:05d}.jpg")
    mask = davis16 / "Annotations" / "480p" / "bear" / "00000.png"
    # multimask off for both: SAM's square ONNX export gives one output per prompt (grow is off
    # there), the torch model all four.
    common = ["run", str(frames), "--mask", str(mask), "--no-overlay", "--quiet", "--set", "decode.multimask=off"]
    assert main([*common, "--out", str(tmp_path / "onnx"), "--checkpoint", str(mobilesam_checkpoint)]) == 0
    # Padded to the square like the ONNX encoder's input: the same model on the same input.
    assert main([*common, "--out", str(tmp_path / "torch"), "--segmenter", "mobilesam", "--device", "cpu",
                 "--set", "segmenter.unpadded=false", "--checkpoint", str(mobilesam_torch_checkpoint)]) == 0
    for i in range(8):
        a = np.asarray(Image.open(tmp_path / "onnx" / "masks" / f"{i:05d}.png")) > 0
        b = np.asarray(Image.open(tmp_path / "torch" / "masks" / f"{i:05d}.png")) > 0
        assert _iou(a, b) >= 0.98, i


def test_unpadded_onnx_graphs_equal_our_torch_model_unpadded(davis16, mobilesam_checkpoint, mobilesam_torch_checkpoint,
                                                             tmp_path, monkeypatch) -> None:
    """mobilesam-onnx with unpadded=true runs graphs exported from our PyTorch MobileSAM for the
    frame's own input size: they must give what that model gives unpadded, and be exported once."""
    from samtrack.segmenters.mobilesam_onnx import MobileSamOnnx
    from samtrack.segmenters.sam_torch import SamTorch
    from samtrack.segmenters.unpadded import UnpaddedGraphs

    monkeypatch.setenv("SAMTRACK_HOME", str(tmp_path / "cache"))
    # A wide strip of a DAVIS frame: a 1024x128 input, a 64 x 8 embedding grid (quick to export).
    frame = np.ascontiguousarray(load_frame(davis16, "bear", 0)[150:257])  # 107 rows: 128 after resizing
    gt = load_gt(davis16, "bear", 0)[150:257]
    graphs = UnpaddedGraphs(log=lambda message: None, source=mobilesam_torch_checkpoint)
    onnx = MobileSamOnnx(mobilesam_checkpoint / "encoder.onnx", mobilesam_checkpoint / "sam.onnx", unpadded=graphs)
    ours = SamTorch(build_sam("mobilesam-torch", mobilesam_torch_checkpoint), "mobilesam", device="cpu", unpadded=True)
    a, b = onnx.encode(frame), ours.encode(frame)
    assert a.features.shape == (1, 256, 8, 64) and a.input_size == b.input_size
    assert np.abs(a.features - b.numpy()).max() < 1e-4
    for prompt in _prompts(gt, np.random.default_rng(2)):
        first, second = onnx.decode(a, **prompt), ours.decode(b, **prompt)
        assert first.low_res_logits.shape == (32, 256)
        assert np.abs(first.logits - second.logits).max() < 1e-3
        assert abs(first.iou - second.iou) < 1e-4
        again = onnx.decode(a, **prompt, mask_input=first.low_res_logits)
        assert np.abs(again.logits - ours.decode(b, **prompt, mask_input=second.low_res_logits).logits).max() < 1e-3
    (encoder, decoder) = graphs.paths((128, 1024))
    stamp = encoder.stat().st_mtime_ns, decoder.stat().st_mtime_ns
    UnpaddedGraphs(log=lambda message: pytest.fail(f"exported again: {message}"), source=mobilesam_torch_checkpoint).paths((128, 1024))
    assert (encoder.stat().st_mtime_ns, decoder.stat().st_mtime_ns) == stamp



def test_cached_unpadded_graphs_run_without_importing_torch(davis16, mobilesam_checkpoint, mobilesam_torch_checkpoint,
                                                            tmp_path) -> None:
    """The first run of a frame size exports its graphs (PyTorch); later runs only load them,
    so they never import PyTorch (190 MB resident)."""
    import subprocess
    import sys

    home = tmp_path / "cache"
    home.mkdir()
    (home / "mobilesam-onnx").symlink_to(mobilesam_checkpoint, target_is_directory=True)
    (home / "mobilesam-torch").symlink_to(mobilesam_torch_checkpoint.parent, target_is_directory=True)
    frame = tmp_path / "strip.png"
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(load_frame(davis16, "bear", 0)[150:257])).save(frame)  # a 1024x128 input
    script = (
        "import sys, numpy as np; from PIL import Image\n"
        "from samtrack.config import SegmenterConfig; from samtrack.segmenters import build_segmenter\n"
        "segmenter = build_segmenter(SegmenterConfig(), log=lambda m: None)\n"
        f"embedding = segmenter.encode(np.asarray(Image.open({str(frame)!r})))\n"
        "assert embedding.features.shape == (1, 256, 8, 64), embedding.features.shape\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "SAMTRACK_HOME": str(home)}
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    assert [r.stdout.split() for r in runs] == [["True"], ["False"]]
