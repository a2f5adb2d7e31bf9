"""The on-disk embedding cache: hits return the same embedding, other frames miss."""
from __future__ import annotations

import numpy as np

from samtrack.segmenters import ImageEmbedding, MaskPrediction
from samtrack.segmenters.cache import EmbeddingCache


class CountingSegmenter:
    name = "counting"

    def __init__(self) -> None:
        self.encodes = 0

    def encode(self, image):
        self.encodes += 1
        features = np.full((1, 4, 2, 2), float(image.mean()), np.float32)
        return ImageEmbedding(features=features, original_size=image.shape[:2], input_size=(7, 9))

    def decode(self, embedding, points=None, labels=None, box=None, mask_input=None):
        return MaskPrediction(logits=np.zeros(embedding.original_size, np.float32), iou=0.5,
                              low_res_logits=np.zeros((256, 256), np.float32))


def test_hit_returns_the_same_embedding_without_encoding(tmp_path):
    inner = CountingSegmenter()
    cache = EmbeddingCache(inner, tmp_path)
    frame = np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    first = cache.encode(frame)
    second = EmbeddingCache(CountingSegmenter(), tmp_path).encode(frame.copy())  # a new process, same folder
    assert inner.encodes == 1
    assert np.array_equal(first.features, second.features)
    assert second.original_size == (12, 16) and second.input_size == (7, 9)
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_changed_frame_misses(tmp_path):
    inner = CountingSegmenter()
    cache = EmbeddingCache(inner, tmp_path)
    frame = np.zeros((12, 16, 3), np.uint8)
    cache.encode(frame)
    frame[3, 4, 1] = 1
    changed = cache.encode(frame)
    assert inner.encodes == 2 and cache.misses == 2 and cache.hits == 0
    assert changed.features[0, 0, 0, 0] == np.float32(frame.mean())


def test_the_caches_give_all_outputs_as_the_wrapped_segmenter_does(tmp_path):
    """``decode.multimask`` is switched off for a segmenter without all of SAM's outputs: a cache
    in front of one that has them must say so (an ablation run with the cache once lost them)."""
    from samtrack.segmenters.base import gives_all_outputs
    from samtrack.segmenters.cache import RecentEmbeddings

    inner = CountingSegmenter()
    assert not gives_all_outputs(EmbeddingCache(inner, tmp_path))
    inner.all_outputs = True
    assert gives_all_outputs(EmbeddingCache(inner, tmp_path)) and gives_all_outputs(RecentEmbeddings(inner))
    assert gives_all_outputs(RecentEmbeddings(EmbeddingCache(inner, tmp_path)))
