"""SAM ViT-B/L/H, HQ-SAM ViT-B/L/H and Light HQ-SAM: our models against the official code
(golden fixtures from ``tools/sam_reference/make_golden_vit.py``; reduced ViTs, see
:mod:`tests.sam_vit_golden`), the official checkpoint layouts, their weights entries, and
``samtrack run --segmenter NAME`` end to end with random weights."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from . import sam_golden as g
from . import sam_vit_golden as gv

if os.environ.get("SAMTRACK_REQUIRE_TORCH") == "1":
    import torch  # noqa: F401  (CI installs the torch extra: a missing torch must fail here)
torch = pytest.importorskip("torch", reason="the torch extra is not installed")

from samtrack import weights  # noqa: E402
from samtrack.cli import main  # noqa: E402
from samtrack.errors import WeightsError  # noqa: E402
from samtrack.segmenters import Prompt  # noqa: E402
from samtrack.segmenters.sam import build  # noqa: E402
from samtrack.segmenters.sam.build import build_mobilesam, build_sam, build_sam_vit, load_state_dict  # noqa: E402
from samtrack.segmenters.sam_torch import SamTorch  # noqa: E402

from .test_weights import CDN_URL, FakeHub, headers, leftovers, sha  # noqa: E402

TOL = 1e-4
REPO = Path(__file__).resolve().parents[1]
NAMES = ["sam-vit-b", "sam-vit-l", "sam-vit-h", "hq-sam-vit-b", "hq-sam-vit-l", "hq-sam-vit-h", "light-hq-sam"]


def _ours(model: str):
    """Our model of fixture ``model``, with the fixture's random weights loaded."""
    if model == "light_hq_sam":
        sam = build_mobilesam(hq=True)
    else:
        sam = build_sam_vit(*gv.REDUCED_VIT, hq=gv.is_hq(model))
    weights_ = g.random_state_dict(sam.state_dict())
    load_state_dict(sam, weights_)
    return sam.eval(), weights_


@pytest.fixture(scope="module", params=list(gv.MODELS))
def case(request):
    with np.load(gv.MODELS[request.param]) as data:
        golden = dict(data)
    sam, weights_ = _ours(request.param)
    embedding, early = sam.encode_with_early(torch.from_numpy(g.encoder_input()))
    return request.param, golden, sam, weights_, embedding, early


def _decode(sam, embedding, early, spec: dict, hq: bool):
    masks, iou = g.our_decode(sam, embedding, spec, early_features=early)
    if not spec["multimask"]:
        return masks[:, :1].numpy(), iou[:, :1].numpy()
    if not hq:
        return masks[:, 1:].numpy(), iou[:, 1:].numpy()
    # HQ-SAM's multimask output is one mask: the best of SAM's three (plus the HQ mask).
    best = int(iou[0, 1:].argmax()) + 1
    return masks[:, best : best + 1].numpy(), iou[:, best : best + 1].numpy()


def test_inputs_and_weights_are_the_ones_the_fixture_was_made_from(case) -> None:
    _, golden, _, weights_, _, _ = case
    assert int(golden["seed"]) == g.SEED
    np.testing.assert_allclose(g.checksum(g.encoder_input()), golden["input_checksum"], rtol=1e-12)
    flat = np.concatenate([v.numpy().ravel() for v in weights_.values() if v.dtype.is_floating_point])
    np.testing.assert_allclose(g.checksum(flat), golden["weights_checksum"], rtol=1e-12)


def test_embedding_and_early_features_equal_the_official_encoder(case) -> None:
    model, golden, _, _, embedding, early = case
    sub = embedding.numpy()[:, :, :: g.EMBED_STRIDE, :: g.EMBED_STRIDE]
    assert sub.shape == golden["embedding_sub"].shape
    assert np.abs(sub - golden["embedding_sub"]).max() < TOL
    np.testing.assert_allclose(g.checksum(embedding.numpy()), golden["embedding_checksum"], rtol=1e-5)
    if gv.is_hq(model):
        sub = early.numpy()[:, :, :: g.EMBED_STRIDE, :: g.EMBED_STRIDE]
        assert np.abs(sub - golden["early_sub"]).max() < TOL
        np.testing.assert_allclose(g.checksum(early.numpy()), golden["early_checksum"], rtol=1e-5)
    else:
        assert early is None


@pytest.mark.parametrize("name", list(g.CASES))
def test_masks_and_ious_equal_the_official_decoder(case, name: str) -> None:
    """From the encoder's own embedding: points (SAM's padding point), one click, points + box,
    box + mask prompt, multimask output."""
    model, golden, sam, _, embedding, early = case
    masks, iou = _decode(sam, embedding, early, g.CASES[name], gv.is_hq(model))
    reference = golden[f"{name}/low_res_sub"]
    assert masks[..., :: g.MASK_STRIDE, :: g.MASK_STRIDE].shape == reference.shape
    assert np.abs(masks[..., :: g.MASK_STRIDE, :: g.MASK_STRIDE] - reference).max() < TOL
    assert np.abs(iou - golden[f"{name}/iou"]).max() < TOL


def test_segmenter_on_the_fixture(case) -> None:
    """SamTorch's prepared model (channels-last) encodes as the fixture, and HQ decoding needs the
    early features it keeps on the embedding."""
    model, golden, _, weights_, _, _ = case
    sam = build_mobilesam(hq=True) if model == "light_hq_sam" else build_sam_vit(*gv.REDUCED_VIT, hq=gv.is_hq(model))
    load_state_dict(sam, weights_)
    segmenter = SamTorch(sam, model)
    embedding, early = segmenter.model.encode_with_early(
        torch.from_numpy(g.encoder_input()).contiguous(memory_format=torch.channels_last))
    assert np.abs(embedding.numpy()[:, :, :: g.EMBED_STRIDE, :: g.EMBED_STRIDE] - golden["embedding_sub"]).max() < TOL
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    encoded = segmenter.encode(frame)
    assert (encoded.early_features is not None) == gv.is_hq(model)
    prediction = segmenter.decode(encoded, np.array([[20.0, 30.0]]), np.array([1]))
    assert prediction.logits.shape == (48, 64) and np.isfinite(prediction.logits).all()
    if gv.is_hq(model):
        encoded.early_features = None
        with pytest.raises(ValueError, match="early features"):
            segmenter.decode(encoded, np.array([[20.0, 30.0]]), np.array([1]))


def test_batched_hq_decoding_equals_one_by_one() -> None:
    sam, weights_ = _ours("hq_sam_vit")
    segmenter = SamTorch(sam, "hq-sam-vit-b", max_batch=8)
    embedding = segmenter.encode(np.random.default_rng(1).integers(0, 255, (90, 160, 3), dtype=np.uint8))
    prompts = [
        Prompt(np.array([[10.0, 20.0]]), np.array([1])),
        Prompt(np.array([[30.0, 10.0], [5.0, 6.0], [40.0, 30.0]]), np.array([1, 1, 0])),
        Prompt(box=np.array([10.0, 10.0, 100.0, 80.0])),
    ]
    together = segmenter.decode_batch(embedding, prompts, candidates=True)
    for prompt, batched in zip(prompts, together):
        alone = segmenter.decode(embedding, prompt.points, prompt.labels, prompt.box)
        assert abs(alone.iou - batched.iou) < 1e-5
        assert np.abs(alone.low_res_logits - batched.low_res_logits).max() < 1e-4


def test_unpadded_vit_equals_padded_on_a_square_frame() -> None:
    """Unpadded encoding (our extension for ViTs) is the padded one where there is no padding,
    and on a wide frame keeps the 16:9 grid."""
    sam, weights_ = _ours("sam_vit")
    frame = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    padded = SamTorch(sam, "sam-vit-b").encode(frame).numpy()
    sam2 = build_sam_vit(*gv.REDUCED_VIT)
    load_state_dict(sam2, weights_)
    unpadded = SamTorch(sam2, "sam-vit-b", unpadded=True)
    assert np.abs(unpadded.encode(frame).numpy() - padded).max() < 1e-5
    wide = unpadded.encode(np.zeros((90, 160, 3), np.uint8))
    assert wide.features.shape == (1, 256, 36, 64)


@pytest.mark.parametrize("name,key", [
    ("sam-vit-b", "sam/vit_b"), ("sam-vit-l", "sam/vit_l"), ("sam-vit-h", "sam/vit_h"),
    ("hq-sam-vit-b", "hq-sam/vit_b"), ("hq-sam-vit-l", "hq-sam/vit_l"), ("hq-sam-vit-h", "hq-sam/vit_h"),
    ("light-hq-sam", "hq-sam/vit_tiny"),
])
def test_our_models_have_the_official_checkpoint_layouts(name: str, key: str) -> None:
    """Every key and shape of the official models, in order (dumped from the official builders,
    tests/fixtures/sam_vit_state_dict_keys.json), so their checkpoints load with strict=True."""
    official = json.loads((REPO / "tests" / "fixtures" / "sam_vit_state_dict_keys.json").read_text())[key]
    with torch.device("meta"):  # shapes only: ViT-H's 2.5 GB are never allocated
        ours = [[k, list(v.shape)] for k, v in build.REGISTRY[name].builder().state_dict().items()]
    assert ours == official


def test_a_checkpoint_of_another_architecture_is_one_clear_error(tmp_path: Path, capsys) -> None:
    """A ViT-L checkpoint given to ViT-B (simulated: our ViT-L's keys on the meta device are
    not loadable, so a reduced ViT stands in) and a SAM one given to HQ-SAM."""
    sam, weights_ = _ours("sam_vit")
    path = tmp_path / "sam_vit_small.pth"
    torch.save(weights_, path)
    with pytest.raises(WeightsError, match=r"sam_vit_small\.pth: state_dict does not fit ViT \(768-wide, 12 blocks\) SAM: "
                                           r".*mis-shaped \(image_encoder\.pos_embed \(1, 64, 64, 64\) != \(1, 64, 64, 768\)"):
        build_sam("sam-vit-b", path)
    mobile = tmp_path / "mobile_sam.pt"
    torch.save(g.random_state_dict(build_sam("mobilesam").state_dict()), mobile)
    with pytest.raises(WeightsError, match=r"mobile_sam\.pt: this is a checkpoint of mobilesam / mobilesam-torch, "
                                           r"not of the TinyViT HQ-SAM being built; choose that model \(--segmenter mobilesam\)"):
        build_sam("light-hq-sam", mobile)
    clip = REPO / "examples" / "bear.mp4"
    code = main(["run", str(clip), "--points", str(REPO / "examples" / "clicks.json"), "--out", str(tmp_path / "out"),
                 "--segmenter", "light-hq-sam", "--checkpoint", str(path), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and "sam_vit_small.pth: state_dict does not fit TinyViT HQ-SAM" in err[0], err
    assert not (tmp_path / "out").exists()


def _reduced_entry(name: str) -> build.SamEntry:
    entry = build.REGISTRY[name]
    if name == "light-hq-sam":
        return entry  # full size: TinyViT is small
    return build.SamEntry(lambda: build_sam_vit(*gv.REDUCED_VIT, hq=name.startswith("hq-")), entry.weights,
                          unpadded=entry.unpadded)


@pytest.mark.parametrize("name", NAMES)
def test_samtrack_run_with_each_model(name: str, tmp_path: Path, monkeypatch, capsys) -> None:
    """`samtrack run --segmenter NAME` end to end on 2 frames of bear.mp4, with RANDOM weights
    (the masks mean nothing; the plumbing is what is tested), ViTs reduced as in the fixtures."""
    monkeypatch.setenv("SAMTRACK_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setitem(build.REGISTRY, name, _reduced_entry(name))
    sam = build.REGISTRY[name].builder()
    checkpoint = tmp_path / "random.pth"
    torch.save(g.random_state_dict(sam.state_dict()), checkpoint)
    out = tmp_path / "out"
    code = main(["run", str(REPO / "examples" / "bear.mp4"), "--points", str(REPO / "examples" / "clicks.json"),
                 "--out", str(out), "--segmenter", name, "--checkpoint", str(checkpoint), "--device", "cpu",
                 "--max-frames", "2", "--no-overlay"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"segmenter {name}: {checkpoint} on cpu, frames {'unpadded' if name == 'light-hq-sam' else 'padded to the square'}" in err
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00000.png", "00001.png"]
    assert json.loads((out / "tracks.json").read_text())["frames"] == [0, 1]


def test_unknown_segmenter_lists_the_known_ones(tmp_path: Path, capsys) -> None:
    from samtrack.config import SegmenterConfig
    from samtrack.errors import ConfigError
    from samtrack.segmenters import build_segmenter

    config = SegmenterConfig()
    object.__setattr__(config, "name", "sam-vit-x")
    with pytest.raises(ConfigError, match="unknown segmenter 'sam-vit-x'; available: .*sam-vit-b, sam-vit-l, sam-vit-h, "
                                          "hq-sam-vit-b, hq-sam-vit-l, hq-sam-vit-h, light-hq-sam"):
        build_segmenter(config)


# -- weights entries ----------------------------------------------------------------------------

SAM_FILES = {
    "sam-vit-b": ("sam_vit_b_01ec64.pth", 375_042_383, "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    "sam-vit-l": ("sam_vit_l_0b3195.pth", 1_249_524_607, "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "sam-vit-h": ("sam_vit_h_4b8939.pth", 2_564_550_879, "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
}
HQ_FILES = {"hq-sam-vit-b": "sam_hq_vit_b.pth", "hq-sam-vit-l": "sam_hq_vit_l.pth", "hq-sam-vit-h": "sam_hq_vit_h.pth",
            "light-hq-sam": "sam_hq_vit_tiny.pth"}


def test_weights_entries_name_the_official_files() -> None:
    for name, (file, size, sha256) in SAM_FILES.items():
        (wf,) = weights.get_spec(name).files
        assert (wf.name, wf.size, wf.sha256) == (file, size, sha256)
        assert wf.url == f"https://dl.fbaipublicfiles.com/segment_anything/{file}"
        assert weights.get_spec(name).licence == "Apache-2.0"
    for name, file in HQ_FILES.items():
        (wf,) = weights.get_spec(name).files
        assert (wf.name, wf.size, wf.sha256, wf.announced) == (file, None, None, True)
        assert wf.url == f"https://huggingface.co/lkeab/hq-sam/resolve/main/{file}"
        assert weights.get_spec(name).licence == "Apache-2.0"
    for name in NAMES:
        assert build.REGISTRY[name].weights == name


def test_weights_list_shows_them(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SAMTRACK_HOME", str(tmp_path))
    assert main(["weights", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for name in NAMES:
        assert "Apache-2.0" in rows[name] and "not cached" in rows[name]
    assert "375.0 MB" in rows["sam-vit-b"] and "2564.6 MB" in rows["sam-vit-h"]


def test_an_offline_model_says_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SAMTRACK_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="sam-vit-b weights are not in .*; run `samtrack weights fetch sam-vit-b`"):
        weights.cached_path("sam-vit-b")


BLOB = b"an HQ-SAM-shaped checkpoint " * 1000
HQ_URL = "https://huggingface.co/lkeab/hq-sam/resolve/main/sam_hq_vit_tiny.pth"


def test_hq_download_is_verified_by_the_announced_sha256_then_pinned(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SAMTRACK_HOME", str(home))
    hub = FakeHub(BLOB, headers(X_Linked_Etag=f'"{sha(BLOB)}"', Location=CDN_URL))
    monkeypatch.setattr(weights, "_urlopen", hub)
    directory = weights.fetch("light-hq-sam", log=lambda _: None)
    assert hub.opened == [HQ_URL] and (directory / "sam_hq_vit_tiny.pth").read_bytes() == BLOB
    record = json.loads((directory / ".verified.json").read_text())["sam_hq_vit_tiny.pth"]
    assert record["sha256"] == sha(BLOB) and record["pinned"].startswith("first download")
    assert weights.cached_path("light-hq-sam") == directory
    # Changed on disk: refused against the pin.
    (directory / "sam_hq_vit_tiny.pth").write_bytes(BLOB[::-1])
    with pytest.raises(WeightsError, match="corrupt \\(sha256 differs from the one pinned"):
        weights.cached_path("light-hq-sam")
    assert leftovers(home) == []


def test_hq_download_is_refused_when_nothing_or_something_else_is_announced(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SAMTRACK_HOME", str(home))
    monkeypatch.setattr(weights, "_urlopen", FakeHub(BLOB, headers()))
    with pytest.raises(WeightsError, match="announced no sha256 to verify sam_hq_vit_tiny.pth by; download "
                                           ".* by hand and pass it as --checkpoint FILE"):
        weights.fetch("light-hq-sam", log=lambda _: None)
    monkeypatch.setattr(weights, "_urlopen", FakeHub(BLOB, headers(X_Linked_Etag=f'"{"0" * 64}"')))
    with pytest.raises(WeightsError, match="does not match the registry"):
        weights.fetch("light-hq-sam", log=lambda _: None)
    assert not (home / "light-hq-sam" / "sam_hq_vit_tiny.pth").exists() and leftovers(home) == []
    # A copy made by hand has nothing to be checked by: refused, pointing at --checkpoint.
    copy = tmp_path / "sam_hq_vit_tiny.pth"
    copy.write_bytes(BLOB)
    with pytest.raises(WeightsError, match="no published hash to check a copy by.*--checkpoint"):
        weights.import_file("light-hq-sam", copy)


def test_mobilesam_weights_choice_is_refused_for_other_models() -> None:
    from samtrack.config import SegmenterConfig
    from samtrack.errors import ConfigError

    with pytest.raises(ConfigError, match="segmenter.weights=mobilesam-torch picks MobileSAM weights; sam-vit-b"):
        SamTorch.from_config(SegmenterConfig(name="sam-vit-b", weights="mobilesam-torch", device="cpu"))


def test_embedding_cache_keeps_the_early_features(tmp_path: Path) -> None:
    from samtrack.segmenters.cache import EmbeddingCache

    sam, _ = _ours("hq_sam_vit")
    cached = EmbeddingCache(SamTorch(sam, "hq-sam-vit-b"), tmp_path)
    frame = np.random.default_rng(3).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    fresh, again = cached.encode(frame), cached.encode(frame)
    assert (cached.misses, cached.hits) == (1, 1)
    np.testing.assert_array_equal(np.asarray(again.early_features), fresh.early_features.numpy())
    a = cached.decode(fresh, np.array([[10.0, 10.0]]), np.array([1]))
    b = cached.decode(again, np.array([[10.0, 10.0]]), np.array([1]))
    np.testing.assert_array_equal(a.low_res_logits, b.low_res_logits)


def test_api_takes_the_names_too(tmp_path: Path, monkeypatch) -> None:
    """VideoPredictor.from_config with segmenter.name=hq-sam-vit-b (reduced, RANDOM weights):
    a click, then two propagated frames."""
    from samtrack import VideoPredictor

    monkeypatch.setitem(build.REGISTRY, "hq-sam-vit-b", _reduced_entry("hq-sam-vit-b"))
    checkpoint = tmp_path / "random.pth"
    torch.save(g.random_state_dict(build.REGISTRY["hq-sam-vit-b"].builder().state_dict()), checkpoint)
    predictor = VideoPredictor.from_config("samtrack", [
        "segmenter.name=hq-sam-vit-b", f"segmenter.checkpoint={checkpoint}", "segmenter.device=cpu",
        "video.max_frames=2"], log=lambda _: None)
    assert predictor.pipeline.segmenter.name == "hq-sam-vit-b"
    state = predictor.init_state(REPO / "examples" / "bear.mp4")
    preview = predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[311, 290]], labels=[1])
    assert preview.mask(1).shape == (480, 854)
    assert [r.frame_index for r in predictor.propagate_in_video(state)] == [0, 1]
