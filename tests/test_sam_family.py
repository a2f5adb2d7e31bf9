"""EfficientViT-SAM and EfficientSAM against their official code (golden fixtures made by
``tools/sam_family_reference/make_golden.py fixtures``), their input handling, checkpoint
loading, and ``samtrack run --segmenter NAME`` end to end with random weights."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from . import sam_family_golden as g

if os.environ.get("SAMTRACK_REQUIRE_TORCH") == "1":
    import torch  # noqa: F401  (CI installs the torch extra: a missing torch must fail here)
torch = pytest.importorskip("torch", reason="the torch extra is not installed")

from samtrack.errors import ConfigError, WeightsError  # noqa: E402
from samtrack.segmenters import ImageEmbedding, Prompt, transforms  # noqa: E402
from samtrack.segmenters.sam import build  # noqa: E402
from samtrack.segmenters.sam.build import EFFICIENTSAM_INPUTS, REGISTRY, load_state_dict  # noqa: E402
from samtrack.segmenters.sam_torch import SamTorch  # noqa: E402

TOL = 1e-4
FAMILY_NAMES = [n for n in REGISTRY if n.startswith(("efficientvit-sam", "efficientsam"))]


def _build(name: str):
    """Our model for a fixture's configuration (tests/sam_family_golden.py)."""
    spec = g.FIXTURE_MODELS[name]
    if spec["family"] == "efficientvit":
        return build.build_efficientvit_sam(spec["variant"], spec.get("depths"), spec.get("neck_depth")).eval()
    return build.build_efficientsam(spec["embed_dim"], spec["num_heads"], spec["depth"]).eval()


_CACHE: dict[str, tuple] = {}


def _model(name: str):
    """(model with the fixture's random weights, the weights, the fixture), built once per module."""
    if name not in _CACHE:
        model = _build(name)
        weights = g.random_state_dict(model.state_dict())
        load_state_dict(model, weights)
        with np.load(g.fixture_path(name)) as data:
            _CACHE[name] = (model, weights, dict(data))
    return _CACHE[name]


def _family(name: str) -> str:
    return g.FIXTURE_MODELS[name]["family"]


def _inputs(name: str) -> transforms.InputSpec:
    if _family(name) == "efficientsam":
        return EFFICIENTSAM_INPUTS
    return REGISTRY[f"efficientvit-sam-{g.FIXTURE_MODELS[name]['variant']}"].inputs


def _decode(model, embedding: torch.Tensor, case: dict, family: str) -> tuple[np.ndarray, np.ndarray]:
    """All four outputs of one case through our prompt layout (as the segmenter builds it)."""
    if family == "efficientsam":
        pts, lab = np.array(case["points"], np.float32), np.array(case["labels"])
        box = np.concatenate([pts[lab == 2][0], pts[lab == 3][0]]) if 2 in lab else None
        pts, lab = pts[lab < 2], lab[lab < 2]
        prompt = Prompt(pts if len(pts) else None, lab if len(pts) else None, box)
        coords, labels, _ = transforms.batch_prompt_tokens([prompt], (1024, 1024), spec=EFFICIENTSAM_INPUTS)
        masks, iou = model.decode(embedding, torch.from_numpy(coords), torch.from_numpy(labels))
    else:
        masks, iou = g.our_decode(model, embedding, case)
    return masks.numpy(), iou.numpy()


def _cases(name: str) -> dict:
    return g.SAM_CASES if _family(name) == "efficientvit" else g.EFFICIENTSAM_CASES


@pytest.mark.parametrize("name", list(g.FIXTURE_MODELS))
def test_weights_inputs_and_layout_are_the_fixtures(name: str) -> None:
    """Same seed, inputs and random weights as when the fixture was made, and every key and shape
    of the official state_dict in order (so its checkpoints load with strict=True)."""
    model, weights, golden = _model(name)
    assert int(golden["seed"]) == g.SEED
    np.testing.assert_allclose(g.checksum(g.encoder_input(int(golden["input_size"]))), golden["input_checksum"], rtol=1e-12)
    flat = np.concatenate([v.numpy().ravel() for v in weights.values() if v.dtype.is_floating_point])
    np.testing.assert_allclose(g.checksum(flat), golden["weights_checksum"], rtol=1e-12)
    assert [f"{k} {tuple(v.shape)}" for k, v in _build(name).state_dict().items()] == list(golden["keys"])


@pytest.mark.parametrize("name", list(g.FIXTURE_MODELS))
def test_embedding_and_masks_equal_the_official_model(name: str) -> None:
    """The encoder on the fixture's input, its first prompt case decoded on that embedding, and
    every case on a random embedding: all four masks and IoUs within 1e-4."""
    model, _, golden = _model(name)
    embedding = model.encode(torch.from_numpy(g.encoder_input(int(golden["input_size"]))))
    assert embedding.shape == (1, 256, 64, 64)
    sub = embedding.numpy()[:, :, :: g.EMBED_STRIDE, :: g.EMBED_STRIDE]
    assert np.abs(sub - golden["embedding_sub"]).max() < TOL
    np.testing.assert_allclose(g.checksum(embedding.numpy()), golden["embedding_checksum"], rtol=1e-5)
    cases = _cases(name)
    first = next(iter(cases))
    masks, iou = _decode(model, embedding, cases[first], _family(name))
    assert np.abs(masks[..., :: g.MASK_STRIDE, :: g.MASK_STRIDE] - golden[f"e2e_{first}/low_res_sub"]).max() < TOL
    assert np.abs(iou - golden[f"e2e_{first}/iou"]).max() < TOL
    for case_name, case in cases.items():
        masks, iou = _decode(model, torch.from_numpy(g.decoder_embedding()), case, _family(name))
        reference = golden[f"{case_name}/low_res_sub"]
        assert masks[..., :: g.MASK_STRIDE, :: g.MASK_STRIDE].shape == reference.shape
        assert np.abs(masks[..., :: g.MASK_STRIDE, :: g.MASK_STRIDE] - reference).max() < TOL, case_name
        assert np.abs(iou - golden[f"{case_name}/iou"]).max() < TOL, case_name


@pytest.mark.parametrize("name", list(g.FIXTURE_MODELS))
def test_segmenter_prepares_frames_and_masks_as_the_official_code(name: str) -> None:
    """SamTorch's inference model (BatchNorm folded, channels-last) gives the same embedding; its
    preprocessing and upscaling to a 480 x 854 frame match the official ones."""
    _, weights, golden = _model(name)
    model = _build(name)
    load_state_dict(model, weights)
    segmenter = SamTorch(model, name, unpadded=False, inputs=_inputs(name))
    size = int(golden["input_size"])
    x = torch.from_numpy(g.encoder_input(size)).contiguous(memory_format=torch.channels_last)
    sub = segmenter.model.encode(x).numpy()[:, :, :: g.EMBED_STRIDE, :: g.EMBED_STRIDE]
    assert np.abs(sub - golden["embedding_sub"]).max() < TOL

    tensor, input_size = transforms.preprocess_spec(g.frame(), _inputs(name))
    assert tensor.shape == (1, 3, size, size)
    ours = tensor[tuple(golden["preprocess/idx"].T)]
    if _family(name) == "efficientsam":  # the same bilinear stretch, in float
        assert np.abs(ours - golden["preprocess/values"]).max() < 1e-4
        assert input_size == (1024, 1024)
    else:
        # OpenCV against the reference's PIL filter (854 -> 512: INTER_AREA, 1.3
        # grey levels apart on average; see transforms); the zero padding is exact.
        assert np.abs(ours - golden["preprocess/values"]).mean() < 0.05
        assert (tensor[0, :, size * 9 // 16:] == 0).all() and input_size == (576, 1024)

    case = _cases(name)[next(iter(_cases(name)))]
    frame_h, frame_w = g.ORIGINAL_SIZE
    scale = np.array([frame_w / 1024, frame_h / input_size[0]], np.float32)
    embedding = ImageEmbedding(torch.from_numpy(g.decoder_embedding()), g.ORIGINAL_SIZE, input_size)
    prediction = segmenter.decode_batch(embedding, [Prompt(np.array(case["points"], np.float32) * scale,
                                                           np.array(case["labels"]))], candidates=True)[0]
    single = prediction.candidates[0].logits
    assert single.shape == g.ORIGINAL_SIZE
    assert np.abs(single[tuple(golden["postprocess/idx"].T)] - golden["postprocess/values"]).max() < 1e-3


def test_efficientsam_prompt_layout() -> None:
    """Six tokens per prompt: box corners first, points after, cut at six, padded with invalid
    points at (-1, -1); coordinates scaled per axis (the frame is stretched to the square)."""
    prompts = [
        Prompt(np.array([[427.0, 240.0]]), np.array([1])),
        Prompt(np.array([[10.0 * i, 5.0 * i] for i in range(1, 8)]), np.array([1, 0, 1, 1, 1, 1, 0]),
               box=np.array([100.0, 50.0, 300.0, 200.0])),
    ]
    coords, labels, real = transforms.batch_prompt_tokens(prompts, (480, 854), spec=EFFICIENTSAM_INPUTS)
    assert coords.shape == (2, 6, 2)
    np.testing.assert_allclose(coords[0, 0], [427 * 1024 / 854, 240 * 1024 / 480], rtol=1e-6)
    assert labels[0].tolist() == [1, -1, -1, -1, -1, -1] and (coords[0, 1:] == -1).all()
    assert labels[1].tolist() == [2, 3, 1, 0, 1, 1]
    np.testing.assert_allclose(coords[1, 1], [300 * 1024 / 854, 200 * 1024 / 480], rtol=1e-6)
    assert real.tolist() == [[True] + [False] * 5, [True] * 6]


def test_efficientsam_batches_ignores_mask_prompts_and_refuses_unpadded() -> None:
    model, _, _ = _model("efficientsam-vitt")
    segmenter = SamTorch(model, "efficientsam-vitt", max_batch=8)
    embedding = ImageEmbedding(torch.from_numpy(g.decoder_embedding()), g.ORIGINAL_SIZE, (1024, 1024))
    low_res = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    prompts = [Prompt(np.array([[100.0, 200.0]]), np.array([1])),
               Prompt(np.array([[300.0, 100.0], [50.0, 60.0]]), np.array([1, 0]), box=np.array([20.0, 30.0, 400.0, 300.0])),
               Prompt(box=np.array([100.0, 100.0, 500.0, 400.0]), mask_input=low_res)]
    batched = segmenter.decode_batch(embedding, prompts)
    for prompt, together in zip(prompts, batched):
        alone = segmenter.decode(embedding, prompt.points, prompt.labels, prompt.box)  # no mask prompt
        assert np.abs(alone.low_res_logits - together.low_res_logits).max() < 1e-4
        assert np.abs(alone.logits - together.logits).max() < 1e-4
    with pytest.raises(ValueError, match="mask_input must be"):
        segmenter.decode(embedding, np.array([[1.0, 2.0]]), np.array([1]), mask_input=np.zeros((64, 64), np.float32))
    with pytest.raises(ConfigError, match="encodes only its square input"):
        SamTorch(model, "efficientsam-vitt", unpadded=True)


def test_wrong_architecture_and_wrapped_checkpoints(tmp_path) -> None:
    """A checkpoint of another model is one error naming the file; the official wrappers
    ({"model": ...} for EfficientSAM, {"state_dict": ...} for EfficientViT, ViT-S's zip) load."""
    import zipfile

    from samtrack.torch_models import read_state_dict

    mobile = tmp_path / "mobile_sam.pt"
    torch.save({"image_encoder.patch_embed.seq.0.c.weight": torch.zeros(32, 3, 3, 3)}, mobile)
    with pytest.raises(WeightsError, match=r"mobile_sam\.pt: state_dict does not fit EfficientSamViT SAM: \d+ missing"):
        build.build_sam("efficientsam-vitt", mobile)
    state = {"a": torch.arange(3.0), "b": torch.ones(2, 2)}
    for wrapper in ("model", "state_dict"):
        path = tmp_path / f"{wrapper}.pt"
        torch.save({wrapper: state, "epoch": 3}, path)
        assert torch.equal(read_state_dict(path)["b"], state["b"])
    inner = tmp_path / "efficient_sam_vits.pt"
    torch.save({"model": state}, inner)
    zipped = tmp_path / "efficient_sam_vits.pt.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.write(inner, "efficient_sam_vits.pt")
    assert torch.equal(read_state_dict(zipped)["a"], state["a"])


def test_every_model_is_registered_with_its_weights_and_inputs() -> None:
    """Names -> segmenter, config literal, weights entry with a licence and a real URL; the
    encoder input sizes of the papers; a name nobody knows lists the known ones."""
    from typing import get_args

    from samtrack import weights
    from samtrack.config import SegmenterName
    from samtrack.segmenters import SEGMENTERS

    assert len(FAMILY_NAMES) == 7
    for name in FAMILY_NAMES:
        assert name in SEGMENTERS and name in get_args(SegmenterName)
        spec = weights.get_spec(REGISTRY[name].weights)
        assert spec.licence == "Apache-2.0"
        (wf,) = spec.files
        assert wf.url.startswith("https://") and wf.url.endswith(REGISTRY[name].checkpoint_name)
        assert wf.sha256 or wf.git_blob_sha1 or wf.pin_note
    assert {n: REGISTRY[n].inputs.encoder_size for n in FAMILY_NAMES} == {
        "efficientvit-sam-l0": 512, "efficientvit-sam-l1": 512, "efficientvit-sam-l2": 512,
        "efficientvit-sam-xl0": 1024, "efficientvit-sam-xl1": 1024, "efficientsam-vitt": 1024, "efficientsam-vits": 1024}
    with pytest.raises(WeightsError, match="unknown SAM model 'efficientsam-vitb'; known: .*efficientsam-vits"):
        build.build_sam("efficientsam-vitb")


def _random_weights_run(monkeypatch, tmp_path, name: str, extra: tuple[str, ...] = ()) -> None:
    """``samtrack run --segmenter NAME`` on 2 frames with RANDOM weights (no checkpoint exists on
    this machine): the cache lookup and the file load are replaced by seeded random tensors."""
    from samtrack.cli import main

    monkeypatch.setattr(build, "cached_checkpoint", lambda entry, log=None: tmp_path / f"{entry}-random.pt")
    monkeypatch.setattr(build, "load_checkpoint",
                        lambda model, path: load_state_dict(model, g.random_state_dict(model.state_dict()), str(path)))
    out = tmp_path / "out"
    examples = Path(__file__).resolve().parents[1] / "examples"
    assert main(["run", str(examples / "bear.mp4"), "--points", str(examples / "clicks.json"), "--out", str(out), "--max-frames", "2",
                 "--segmenter", name, "--device", "cpu", "--no-overlay", "--quiet", *extra]) == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00000.png", "00001.png"]
    assert (out / "tracks.json").is_file()


@pytest.mark.parametrize("name", ["efficientvit-sam-l0", "efficientsam-vitt"])
def test_run_end_to_end_with_random_weights(monkeypatch, tmp_path, name: str) -> None:
    _random_weights_run(monkeypatch, tmp_path, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in FAMILY_NAMES if n not in ("efficientvit-sam-l0", "efficientsam-vitt")])
def test_run_end_to_end_with_random_weights_larger_models(monkeypatch, tmp_path, name: str) -> None:
    _random_weights_run(monkeypatch, tmp_path, name)


def test_pin_on_first_download_checks_the_announced_sha256(tmp_path, monkeypatch) -> None:
    """An EfficientViT-SAM-shaped entry (no published hash): the first download is checked against
    the sha256 Hugging Face announces and pinned; a changed file is refused afterwards. Never
    touches the network."""
    import hashlib
    import io
    import json
    from email.message import Message

    from samtrack import weights

    monkeypatch.setenv("SAMTRACK_HOME", str(tmp_path / "cache"))
    real = weights.get_spec("efficientvit-sam-l0")
    spec = weights.ModelSpec(name="fake-evit", description="test", licence=real.licence, source=real.source,
                             files=real.files)
    monkeypatch.setitem(weights.REGISTRY, spec.name, spec)
    body = b"an EfficientViT-SAM-shaped checkpoint" * 1000

    def hub(announced: str):
        message = Message()
        message["X-Linked-Etag"] = f'"{announced}"'
        return lambda url, timeout: (io.BytesIO(body), [(url, message)])

    monkeypatch.setattr(weights, "_urlopen", hub("0" * 64))
    with pytest.raises(WeightsError, match="does not match the sha256 its server announced"):
        weights.fetch("fake-evit", log=lambda _: None)
    monkeypatch.setattr(weights, "_urlopen", hub(hashlib.sha256(body).hexdigest()))
    directory = weights.fetch("fake-evit", log=lambda _: None)
    record = json.loads((directory / ".verified.json").read_text())["efficientvit_sam_l0.pt"]
    assert record["sha256"] == hashlib.sha256(body).hexdigest() and record["pinned"] == "first download"
    (directory / "efficientvit_sam_l0.pt").write_bytes(body[:-1] + b"!")
    with pytest.raises(WeightsError, match="corrupt .sha256 differs from the one pinned at first download"):
        weights.cached_path("fake-evit")
