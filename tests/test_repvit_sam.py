"""RepViT-SAM and EdgeSAM: our models against the official code (golden fixtures of reduced-depth
configurations, made by ``tools/repvit_reference/make_golden.py``), the official checkpoint
layouts, strict loading, their weights entries, and ``samtrack run --segmenter NAME`` end to end
with random weights."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from . import fakes
from . import repvit_golden as rg
from . import sam_golden as g

if os.environ.get("SAMTRACK_REQUIRE_TORCH") == "1":
    import torch  # noqa: F401  (CI installs the torch extra: a missing torch must fail here)
torch = pytest.importorskip("torch", reason="the torch extra is not installed")

from samtrack import weights  # noqa: E402
from samtrack.errors import WeightsError  # noqa: E402
from samtrack.segmenters.sam import build  # noqa: E402
from samtrack.segmenters.sam_torch import SamTorch  # noqa: E402

TOL = 1e-4
MODELS = ["repvit-sam", "edgesam"]


@pytest.fixture(scope="module", params=MODELS)
def reduced(request) -> tuple[str, dict, dict, object]:
    """(name, the fixture, the seeded random weights, our model with them) of a reduced-depth
    model. Tests must not change the model (SamTorch gets a copy)."""
    name = request.param
    with np.load(rg.fixture(name)) as data:
        golden = dict(data)
    model = rg.reduced_model(name)
    weights_ = g.random_state_dict(model.state_dict())
    build.load_state_dict(model, weights_)
    return name, golden, weights_, model


def _decode(model, embedding: torch.Tensor, case: dict) -> tuple[np.ndarray, np.ndarray]:
    masks, iou = g.our_decode(model, embedding, case)
    chosen = g.case_outputs(case)  # ours always gives all four masks
    return masks[:, chosen].numpy(), iou[:, chosen].numpy()


def _sub(masks: np.ndarray) -> np.ndarray:
    return masks[..., :: rg.MASK_STRIDE, :: rg.MASK_STRIDE]


def test_inputs_and_weights_are_the_ones_the_fixture_was_made_from(reduced) -> None:
    _, golden, weights_, _ = reduced
    assert int(golden["seed"]) == g.SEED
    np.testing.assert_allclose(g.checksum(g.encoder_input()), golden["input_checksum"], rtol=1e-12)
    flat = np.concatenate([weights_[k].numpy().ravel() for k in sorted(weights_) if weights_[k].dtype.is_floating_point])
    np.testing.assert_allclose(g.checksum(flat), golden["weights_checksum"], rtol=1e-12)


def test_embedding_and_masks_equal_the_official_model(reduced) -> None:
    """The training-layout encoder, then SAM's decoder on its embedding (points prompt)."""
    name, golden, _, model = reduced
    embedding = model.encode(torch.from_numpy(g.encoder_input()))
    sub = embedding.numpy()[:, :, :: rg.EMBED_STRIDE, :: rg.EMBED_STRIDE]
    assert np.abs(sub - golden["embedding_sub"]).max() < TOL
    np.testing.assert_allclose(g.checksum(embedding.numpy()), golden["embedding_checksum"], rtol=1e-5)
    masks, iou = _decode(model, embedding, rg.CASES["points"])
    assert np.abs(_sub(masks) - golden["e2e_points/low_res_sub"]).max() < TOL
    assert np.abs(iou - golden["e2e_points/iou"]).max() < TOL


def test_prepared_encoder_equals_the_official_model(reduced) -> None:
    """SamTorch's inference model: every BatchNorm and RepVGGDW branch folded, channels-last."""
    import copy

    name, golden, _, model = reduced
    segmenter = SamTorch(copy.deepcopy(model), name)
    encoder = segmenter.model.image_encoder
    assert not any(type(m).__name__ in ("Conv2d_BN", "RepVGGDW", "BatchNorm2d") for m in encoder.modules())
    image = torch.from_numpy(g.encoder_input()).contiguous(memory_format=torch.channels_last)
    sub = segmenter.model.encode(image).numpy()[:, :, :: rg.EMBED_STRIDE, :: rg.EMBED_STRIDE]
    assert np.abs(sub - golden["embedding_sub"]).max() < TOL


def test_decoder_equals_the_official_decoder(reduced) -> None:
    """SAM's cases, and EdgeSAM's own decoder (``num_multimask_outputs`` 1, 3 and 4)."""
    name, golden, _, model = reduced
    cases = rg.EDGESAM_CASES if name == "edgesam" else rg.CASES
    for case_name, case in cases.items():
        masks, iou = _decode(model, torch.from_numpy(g.decoder_embedding()), case)
        reference = golden[f"{case_name}/low_res_sub"]
        assert _sub(masks).shape == reference.shape, case_name
        assert np.abs(_sub(masks) - reference).max() < TOL, case_name
        assert np.abs(iou - golden[f"{case_name}/iou"]).max() < TOL, case_name


@pytest.mark.parametrize("name", MODELS)
def test_our_model_has_the_official_checkpoint_layout(name: str) -> None:
    """Every key and shape of the full-size official model (dumped from it), so the official
    checkpoint loads with strict=True. (EdgeSAM lists its attention's projections q, v, k; the
    order does not matter to loading.)"""
    official = {k: shape for k, shape in json.loads(rg.keys_fixture(name).read_text())}
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in build.build_sam(name).state_dict().items()}
    assert ours == official


def test_the_encoders_differ_where_the_checkpoints_do() -> None:
    with torch.device("meta"):
        repvit, edge = build.build_sam("repvit-sam").image_encoder, build.build_sam("edgesam").image_encoder
    assert repvit.input_multiple == 16 and edge.input_multiple == 32
    assert "features.1.token_mixer.0.bn.weight" in repvit.state_dict()  # RepVGGDW's BatchNorm after the sum
    assert "features.1.token_mixer.0.conv1.bn.weight" in edge.state_dict()  # its 1x1 branch's own BatchNorm
    assert "fuse_stage3.op_list.0.weight" in edge.state_dict() and not hasattr(repvit, "fuse_stage2")


def test_edgesam_encodes_unpadded_frames_at_multiples_of_32() -> None:
    model = rg.reduced_model("edgesam")
    segmenter = SamTorch(model, "edgesam", unpadded=True)
    # 854 x 480 -> 1024 x 575.5: padded to 1024 x 576 (a multiple of 32), a 64 x 36 grid.
    embedding = segmenter.encode(np.zeros((480, 854, 3), np.uint8))
    assert tuple(embedding.features.shape) == (1, 256, 36, 64)
    with pytest.raises(ValueError, match="multiples of 32"):
        model.image_encoder(torch.zeros(1, 3, 1024, 1008))


# -- loading -----------------------------------------------------------------------------------


def test_a_checkpoint_of_another_architecture_is_named(tmp_path: Path) -> None:
    with torch.device("meta"):
        layout = build.build_sam("mobilesam").state_dict()
    state = {k: torch.zeros(v.shape) for k, v in layout.items()}
    path = tmp_path / "mobile_sam.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"mobile_sam\.pt: this is a checkpoint of mobilesam / mobilesam-torch, "
                                           r"not of the RepViT SAM being built; choose that model \(--segmenter mobilesam\)"):
        build.build_sam("edgesam", path)


def test_edgesam_checkpoint_loads_strictly_and_wrapped(tmp_path: Path) -> None:
    model = build.build_sam("edgesam")
    state = g.random_state_dict(model.state_dict())
    path = tmp_path / "edge_sam.pth"
    torch.save({"model": state}, path)  # a training-style wrapper is unwrapped
    loaded = build.build_sam("edgesam", path)
    assert torch.equal(loaded.state_dict()["image_encoder.fuse_stage2.weight"], state["image_encoder.fuse_stage2.weight"])
    state.pop("image_encoder.neck.0.weight")
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"edge_sam\.pth: state_dict does not fit RepViT SAM: 1 missing \(image_encoder\.neck\.0\.weight\)"):
        build.build_sam("edgesam", path)


# -- weights entries -----------------------------------------------------------------------------


@pytest.mark.parametrize("name,file", [("repvit-sam", "repvit_sam.pt"), ("edgesam", "edge_sam.pth"), ("edgesam-3x", "edge_sam_3x.pth")])
def test_registry_entries(name: str, file: str) -> None:
    spec = weights.get_spec(build.REGISTRY[name].weights)
    (wf,) = spec.files
    assert wf.name == file and wf.url.startswith("https://") and wf.url.endswith("/" + file)
    assert (wf.sha256 is None) == (name == "repvit-sam") == (wf.pin_note is not None)
    assert ("non-commercial" in spec.licence) == name.startswith("edgesam")


def test_missing_weights_say_how_to_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMTRACK_HOME", str(tmp_path))
    monkeypatch.setattr(weights, "_urlopen", lambda *a, **k: pytest.fail("a test must not download"))
    with pytest.raises(WeightsError, match="edgesam weights are not in .*samtrack weights fetch edgesam"):
        weights.cached_path("edgesam")


def _url_spec(tmp_path: Path, blob: bytes, **file_options) -> weights.ModelSpec:
    served = tmp_path / "served" / "ckpt.pt"
    served.parent.mkdir(exist_ok=True)
    served.write_bytes(blob)
    return weights.ModelSpec(name="fake-pinned", description="test", licence="MIT", source="test",
                             files=(weights.WeightFile("ckpt.pt", url=served.as_uri(), **file_options),))


def test_a_file_with_nothing_published_is_pinned_on_first_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMTRACK_HOME", str(tmp_path / "home"))
    blob = b"release asset " * 1000
    spec = _url_spec(tmp_path, blob, size=None, sha256=None, pin_note="nothing published")
    monkeypatch.setitem(weights.REGISTRY, spec.name, spec)
    directory = weights.fetch(spec.name, log=lambda _: None)
    record = json.loads((directory / ".verified.json").read_text())["ckpt.pt"]
    assert record["pinned"] == "first download" and record["size"] == len(blob)
    (directory / "ckpt.pt").write_bytes(b"X" + blob[1:])
    with pytest.raises(WeightsError, match="sha256 differs from the one pinned at first download"):
        weights.cached_path(spec.name)
    with pytest.raises(ValueError, match="needs a sha256 or a git blob id"):
        # Nothing to verify by, and not flagged.
        weights.ModelSpec(name="x", description="", licence="", source="",
                          files=(weights.WeightFile("x", size=None, sha256=None, url="https://x"),))


def test_a_sha256_without_a_published_size_is_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    monkeypatch.setenv("SAMTRACK_HOME", str(tmp_path / "home"))
    blob = b"lfs file " * 1000
    spec = _url_spec(tmp_path, blob, size=None, sha256=hashlib.sha256(blob).hexdigest())
    monkeypatch.setitem(weights.REGISTRY, spec.name, spec)
    assert (weights.fetch(spec.name, log=lambda _: None) / "ckpt.pt").read_bytes() == blob
    (tmp_path / "served" / "ckpt.pt").write_bytes(blob + b"!")
    (tmp_path / "home" / spec.name / "ckpt.pt").unlink()
    with pytest.raises(WeightsError, match="ckpt.pt does not match the registry"):
        weights.fetch(spec.name, log=lambda _: None)


# -- end to end ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["edgesam", "repvit-sam"])
def test_samtrack_run_with_random_weights(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``samtrack run --segmenter NAME`` on a short clip, with a checkpoint of random weights
    (marked so: the masks mean nothing). EdgeSAM runs full size; RepViT-SAM's reduced-depth
    configuration stands in for its builder (20 s a frame at full size on these 2 cores)."""
    from PIL import Image

    from samtrack.cli import main

    if name == "repvit-sam":
        import copy

        template = rg.reduced_model(name)
        monkeypatch.setitem(build.REGISTRY, name, build.SamEntry(lambda: copy.deepcopy(template), weights=name))
    model = build.REGISTRY[name].builder()
    checkpoint = tmp_path / f"{name}-random-weights.pt"
    torch.save(g.random_state_dict(model.state_dict()), checkpoint)
    frames, mask = fakes.colour_clip(tmp_path, n=3)
    out = tmp_path / "out"
    code = main(["run", str(frames), "--mask", str(mask), "--out", str(out), "--segmenter", name, "--device", "cpu",
                 "--checkpoint", str(checkpoint), "--config", "fast", "--no-overlay"])
    assert code == 0
    assert f"segmenter {name}: {checkpoint}" in capsys.readouterr().err
    written = sorted((out / "masks").iterdir())
    assert len(written) == 3
    assert all(np.asarray(Image.open(p)).shape == (40, 60) for p in written)


def test_the_family_bench_times_every_registered_architecture(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The benchmark iterates the registry (models sharing a builder once) and prints its table;
    a reduced-depth EdgeSAM stands in for the registry here (nothing is timed against a bound)."""
    import copy

    from samtrack.eval import sam_family_bench

    template = rg.reduced_model("edgesam")
    builder = lambda: copy.deepcopy(template)  # noqa: E731
    monkeypatch.setattr(build, "REGISTRY", {"edgesam": build.SamEntry(builder, "edgesam"),
                                            "edgesam-3x": build.SamEntry(builder, "edgesam-3x")})
    assert sam_family_bench.main(["--repeats", "1", "--devices", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "load average (1, 5, 15 min): before" in out
    (row,) = [line for line in out.splitlines() if line.startswith("| edgesam")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:5] == ["edgesam / edgesam-3x", "1024x1024", f"{sum(p.numel() for p in template.parameters()) / 1e6:.1f}", "cpu", "fp32"]
    assert float(cells[5]) > 0 and float(cells[6]) > 0 and "EdgeSAM README" in cells[7]
    with pytest.raises(SystemExit, match="unknown model.*known: edgesam, edgesam-3x"):
        sam_family_bench.main(["--models", "sam-vit-z"])


def test_mobilesam_weights_choices_are_refused_for_the_other_models() -> None:
    from samtrack.config import load_config
    from samtrack.errors import ConfigError
    from samtrack.segmenters import build_segmenter

    config = load_config("samtrack", ["segmenter.name=edgesam", "segmenter.weights=mobilesam-torch",
                                      "segmenter.device=cpu"])
    with pytest.raises(ConfigError, match="segmenter.weights=mobilesam-torch picks MobileSAM weights; edgesam has its own"):
        build_segmenter(config.segmenter, log=lambda _: None)


def test_stability_choice_picks_the_steadiest_of_the_four_masks() -> None:
    """``decode.multimask=stability``: EdgeSAM's demo's choice among all four outputs."""
    from samtrack.decoding import select_candidate
    from samtrack.segmenters import MaskPrediction

    def candidate(low: np.ndarray, iou: float) -> MaskPrediction:
        return MaskPrediction(logits=np.kron(low, np.ones((4, 4), np.float32)), iou=iou, low_res_logits=low)

    yy, xx = np.mgrid[:16, :16]
    sharp = np.where((abs(yy - 8) < 4) & (abs(xx - 8) < 4), 10.0, -10.0).astype(np.float32)  # score 1
    soft = (4.0 - np.hypot(yy - 8, xx - 8)).astype(np.float32)  # a ramp: |> 1| / |> -1| < 1
    empty = np.full((16, 16), -5.0, np.float32)  # 0 / 0
    options = [candidate(soft, 0.9), candidate(empty, 0.99), candidate(sharp, 0.1), candidate(soft, 0.5)]
    chosen = select_candidate(MaskPrediction(logits=options[0].logits, iou=0.9, low_res_logits=soft,
                                             candidates=options), "stability", None)
    assert chosen is options[2]


def test_the_family_bench_feeds_each_model_its_own_input(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """EfficientViT-SAM-L encodes 512 x 512 and HQ-SAM's decoder takes the early features:
    both failed when every model was given SAM's 1024 input and a plain decode."""
    from samtrack.eval import sam_family_bench

    monkeypatch.setattr(build, "REGISTRY", {name: build.REGISTRY[name] for name in ("efficientvit-sam-l0", "light-hq-sam")})
    assert sam_family_bench.main(["--repeats", "1", "--devices", "cpu"]) == 0
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in capsys.readouterr().out.splitlines() if line.startswith("| "))}
    assert rows["efficientvit-sam-l0"][1] == "512x512" and rows["light-hq-sam"][1] == "1024x1024"
    assert all(float(rows[name][6]) > 0 for name in ("efficientvit-sam-l0", "light-hq-sam"))
