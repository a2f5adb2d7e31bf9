"""Our PyTorch SAM against the official code (golden fixture), strict loading, batched and
unpadded decoding. The fixture was made by ``tools/sam_reference/make_golden.py``."""
from __future__ import annotations

import os

import numpy as np
import pytest

from . import sam_golden as g

if os.environ.get("SAMTRACK_REQUIRE_TORCH") == "1":
    import torch  # noqa: F401  (CI installs the torch extra: a missing torch must fail here)
torch = pytest.importorskip("torch", reason="the torch extra is not installed")

from samtrack.errors import WeightsError  # noqa: E402
from samtrack.segmenters import Prompt  # noqa: E402
from samtrack.segmenters.sam.build import build_sam, load_state_dict  # noqa: E402
from samtrack.segmenters.sam_torch import SamTorch  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def golden() -> dict:
    with np.load(g.FIXTURE) as data:
        return dict(data)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    sam = build_sam("mobilesam")
    weights = g.random_state_dict(sam.state_dict())
    load_state_dict(sam, weights)
    return sam, weights


def _segmenter(weights: dict, **options) -> SamTorch:
    """A SamTorch on its own copy of the model (it prepares the model for inference in place)."""
    sam = build_sam("mobilesam")
    load_state_dict(sam, weights)
    return SamTorch(sam, "mobilesam", **options)


def _decode_case(sam, embedding: torch.Tensor, case: dict) -> tuple[np.ndarray, np.ndarray]:
    masks, iou = g.our_decode(sam, embedding, case)
    chosen = g.case_outputs(case)
    return masks[:, chosen].numpy(), iou[:, chosen].numpy()


def test_inputs_and_weights_are_the_ones_the_fixture_was_made_from(golden, model) -> None:
    _, weights = model
    assert int(golden["seed"]) == g.SEED
    np.testing.assert_allclose(g.checksum(g.encoder_input()), golden["input_checksum"], rtol=1e-12)
    flat = np.concatenate([v.numpy().ravel() for v in weights.values() if v.dtype.is_floating_point])
    np.testing.assert_allclose(g.checksum(flat), golden["weights_checksum"], rtol=1e-12)


def test_image_embedding_equals_the_official_tinyvit(golden, model) -> None:
    sam, _ = model
    embedding = sam.encode(torch.from_numpy(g.encoder_input())).numpy()
    sub = embedding[:, :, :: g.EMBED_STRIDE, :: g.EMBED_STRIDE]
    assert np.abs(sub - golden["embedding_sub"]).max() < TOL
    np.testing.assert_allclose(g.checksum(embedding), golden["embedding_checksum"], rtol=1e-5)
    masks, iou = _decode_case(sam, torch.from_numpy(embedding), g.CASES["points"])
    assert np.abs(masks[..., :: g.MASK_STRIDE, :: g.MASK_STRIDE] - golden["e2e_points/low_res_sub"]).max() < TOL
    assert np.abs(iou - golden["e2e_points/iou"]).max() < TOL


def test_prepared_encoder_equals_the_official_tinyvit(golden, model) -> None:
    """SamTorch's inference model (BatchNorm folded, channels-last) against the fixture too."""
    segmenter = _segmenter(model[1])
    embedding = segmenter.model.encode(
        torch.from_numpy(g.encoder_input()).contiguous(memory_format=torch.channels_last)).numpy()
    sub = embedding[:, :, :: g.EMBED_STRIDE, :: g.EMBED_STRIDE]
    assert np.abs(sub - golden["embedding_sub"]).max() < TOL
    assert not any(type(m).__name__ == "Conv2d_BN" for m in segmenter.model.image_encoder.modules())


@pytest.mark.parametrize("name", list(g.CASES))
def test_decoder_equals_the_official_decoder(golden, model, name: str) -> None:
    """Points only (SAM's padding point), points + box, box + mask prompt, multimask output."""
    sam, _ = model
    masks, iou = _decode_case(sam, torch.from_numpy(g.decoder_embedding()), g.CASES[name])
    reference = golden[f"{name}/low_res_sub"]
    assert masks[..., :: g.MASK_STRIDE, :: g.MASK_STRIDE].shape == reference.shape
    assert np.abs(masks[..., :: g.MASK_STRIDE, :: g.MASK_STRIDE] - reference).max() < TOL
    assert np.abs(iou - golden[f"{name}/iou"]).max() < TOL


def test_masks_upscaled_to_the_frame_as_the_official_postprocessing(golden, model) -> None:
    segmenter = _segmenter(model[1])
    embedding = _embedding(g.decoder_embedding(), input_size=(576, 1024))
    case = g.CASES["points"]
    scale = np.array([g.ORIGINAL_SIZE[1] / 1024, g.ORIGINAL_SIZE[0] / 576], np.float32)
    # Points given in frame pixels map back to the case's 1024-frame coordinates.
    prediction = segmenter.decode(embedding, np.array(case["points"], np.float32) * scale, np.array(case["labels"]))
    ys, xs = golden["postprocess/yx"].T
    assert np.abs(prediction.logits[ys, xs] - golden["postprocess/logits"]).max() < 1e-3
    reference = np.unpackbits(golden["postprocess/mask_packed"])[: prediction.mask.size].reshape(prediction.mask.shape)
    assert (prediction.mask != reference.astype(bool)).mean() < 1e-4


def _embedding(features: np.ndarray, input_size=(1024, 1024), original_size=None):
    from samtrack.segmenters import ImageEmbedding

    return ImageEmbedding(features=torch.from_numpy(features), original_size=original_size or g.ORIGINAL_SIZE,
                          input_size=input_size)


def test_batched_decoding_equals_one_by_one(model) -> None:
    """Prompts of different lengths, with and without a mask prompt, in one call."""
    segmenter = _segmenter(model[1], max_batch=64)
    embedding = _embedding(g.decoder_embedding(), input_size=(576, 1024))
    rng = np.random.default_rng(0)
    low_res = (3 * rng.standard_normal((256, 256))).astype(np.float32)
    prompts = [
        Prompt(np.array([[100.0, 200.0]]), np.array([1])),
        Prompt(np.array([[300.0, 100.0], [50.0, 60.0], [400.0, 300.0], [10.0, 10.0]]), np.array([1, 1, 0, 0]),
               mask_input=low_res),
        Prompt(box=np.array([100.0, 100.0, 500.0, 400.0])),
        Prompt(np.array([[200.0, 200.0], [220.0, 250.0]]), np.array([1, 0]), box=np.array([150.0, 150.0, 300.0, 320.0])),
    ]
    batched = segmenter.decode_batch(embedding, prompts, candidates=True)
    for prompt, together in zip(prompts, batched):
        alone = segmenter.decode(embedding, prompt.points, prompt.labels, prompt.box, prompt.mask_input)
        assert abs(alone.iou - together.iou) < 1e-5
        assert np.abs(alone.low_res_logits - together.low_res_logits).max() < 1e-4
        assert np.abs(alone.logits - together.logits).max() < 1e-4
        assert len(together.candidates) == 4
        assert any(np.array_equal(c.low_res_logits, together.low_res_logits) for c in together.candidates)
    chunked = _segmenter(model[1], max_batch=3).decode_batch(embedding, prompts)
    for a, b in zip(batched, chunked):
        assert np.abs(a.logits - b.logits).max() < 1e-4
    assert _segmenter(model[1]).max_batch == 1  # on CPU, where batching measured no faster


def test_single_decode_picks_its_mask_as_the_onnx_export(model) -> None:
    """One click (+ padding point) takes the best multimask output; three tokens the single mask."""
    segmenter = _segmenter(model[1])
    embedding = _embedding(g.decoder_embedding(), input_size=(576, 1024))
    one = segmenter.decode_batch(embedding, [Prompt(np.array([[100.0, 200.0]]), np.array([1]))], candidates=True)[0]
    ious = [c.iou for c in one.candidates]
    assert one.iou == max(ious[1:])
    two = segmenter.decode_batch(embedding, [Prompt(np.array([[1.0, 2.0], [3, 4]]), np.array([1, 0]))], candidates=True)[0]
    assert two.iou == two.candidates[0].iou


def test_unpadded_encoding_equals_padded_on_a_square_frame(model) -> None:
    segmenter = _segmenter(model[1])
    unpadded_segmenter = _segmenter(model[1], unpadded=True)
    frame = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    padded = segmenter.encode(frame)
    unpadded = unpadded_segmenter.encode(frame)
    assert padded.features.shape == unpadded.features.shape == (1, 256, 64, 64)
    assert torch.equal(padded.features, unpadded.features)


def test_unpadded_encoding_of_a_wide_frame(model) -> None:
    """854x480 -> 1024x576 input -> a 64x36 grid; its masks come back at the frame's size and the
    decoder's position encoding is the square grid's, cropped."""
    sam, weights = model
    frame = np.random.default_rng(2).integers(0, 256, (480, 854, 3), dtype=np.uint8)
    segmenter = _segmenter(weights, unpadded=True)
    embedding = segmenter.encode(frame)
    assert embedding.features.shape == (1, 256, 36, 64)
    prediction = segmenter.decode(embedding, np.array([[400.0, 240.0]]), np.array([1]))
    assert prediction.logits.shape == (480, 854)
    assert prediction.low_res_logits.shape == (144, 256)
    full = sam.prompt_encoder.get_dense_pe()
    assert torch.equal(sam.prompt_encoder.get_dense_pe((36, 64)), full[:, :, :36, :64])
    with pytest.raises(ValueError, match="mask_input must be"):
        segmenter.decode(embedding, np.array([[1.0, 2.0]]), np.array([1]), mask_input=np.zeros((256, 256), np.float32))


def test_strict_loading_names_the_bad_keys(model, tmp_path) -> None:
    _, weights = model
    fresh = build_sam("mobilesam")
    missing = dict(weights)
    missing.pop("mask_decoder.iou_token.weight")
    with pytest.raises(WeightsError, match=r"1 missing \(mask_decoder\.iou_token\.weight\)"):
        load_state_dict(fresh, missing)
    extra = dict(weights, **{"mask_decoder.hq_token.weight": torch.zeros(1, 256)})
    with pytest.raises(WeightsError, match="1 unexpected"):
        load_state_dict(fresh, extra)
    shaped = dict(weights, **{"mask_decoder.mask_tokens.weight": torch.zeros(3, 256)})
    with pytest.raises(WeightsError, match=r"mis-shaped \(mask_decoder\.mask_tokens\.weight \(3, 256\) != \(4, 256\)\)"):
        load_state_dict(fresh, shaped)
    path = tmp_path / "ckpt.pt"
    torch.save(missing, path)
    with pytest.raises(WeightsError, match="ckpt.pt: state_dict does not fit"):
        build_sam("mobilesam", path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a loadable PyTorch checkpoint"):
        build_sam("mobilesam", path)


def test_our_model_has_the_official_checkpoint_layout() -> None:
    """Every key and shape of mobile_sam.pt, in order (dumped from the official model), so the
    official checkpoint loads with strict=True."""
    import json
    from pathlib import Path

    official = json.loads((Path(__file__).parent / "fixtures" / "mobilesam_state_dict_keys.json").read_text())
    ours = [[k, list(v.shape)] for k, v in build_sam("mobilesam").state_dict().items()]
    assert ours == official
