"""An on-disk cache of image embeddings, for benchmarks that decode the same frames many times.

The encoder is most of a frame's cost on CPU (about 0.6 s of 0.8 s with MobileSAM), and an
ablation re-runs only what comes after it. Entries are keyed by the segmenter's name and the
frame's pixels, so a changed frame or model can never be served a stale embedding.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..outputs import atomic_write
from .base import ImageEmbedding, MaskPrediction, Prompt, Segmenter, as_numpy, gives_all_outputs


class EmbeddingCache:
    """Wraps a :class:`Segmenter`: ``encode`` reads the cache first, ``decode`` is unchanged."""

    def __init__(self, segmenter: Segmenter, folder: str | Path) -> None:
        self.segmenter = segmenter
        self.name = segmenter.name
        # Segmenter options that change the embedding (e.g. unpadded encoding) change its id.
        self.folder = Path(folder) / getattr(segmenter, "embedding_id", segmenter.name)
        self.hits = 0
        self.misses = 0

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        key = hashlib.sha1(np.ascontiguousarray(image).data).hexdigest() + f"-{image.shape[0]}x{image.shape[1]}"
        path = self.folder / key[:2] / f"{key}.npz"
        if path.is_file():
            with np.load(path) as data:
                self.hits += 1
                return ImageEmbedding(
                    features=data["features"],
                    original_size=tuple(int(v) for v in data["original_size"]),
                    input_size=tuple(int(v) for v in data["input_size"]),
                    early_features=data["early_features"] if "early_features" in data else None,
                )
        embedding = self.segmenter.encode(image)
        self.misses += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            early = {} if embedding.early_features is None else {"early_features": as_numpy(embedding.early_features)}
            np.savez(f, features=embedding.numpy(), original_size=embedding.original_size,
                     input_size=embedding.input_size, **early)
        return embedding

    @property
    def all_outputs(self) -> bool:
        return gives_all_outputs(self.segmenter)

    def decode(self, embedding: ImageEmbedding, points=None, labels=None, box=None, mask_input=None) -> MaskPrediction:
        return self.segmenter.decode(embedding, points, labels, box=box, mask_input=mask_input)

    def decode_batch(self, embedding: ImageEmbedding, prompts: Sequence[Prompt], candidates: bool = False) -> list[MaskPrediction]:
        return self.segmenter.decode_batch(embedding, prompts, candidates=candidates)


class RecentEmbeddings:
    """Wraps a :class:`Segmenter`: ``encode`` keeps the embeddings of the last ``size`` frames
    in memory, so that clicking again and again on one frame (an interactive editor) costs a
    decoder call, not an encoder call. Keyed by the frame's pixels, as :class:`EmbeddingCache`.
    """

    def __init__(self, segmenter: Segmenter, size: int = 4) -> None:
        self.segmenter = segmenter
        self.name = segmenter.name
        self.size = size
        self._recent: dict[str, ImageEmbedding] = {}
        self.hits = 0
        self.misses = 0

    def __getattr__(self, attr: str):
        if attr == "segmenter":  # not set yet (e.g. while unpickling)
            raise AttributeError(attr)
        # Anything else the pipeline asks of a segmenter (e.g. its options) is the wrapped one's.
        return getattr(self.segmenter, attr)

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        key = hashlib.sha1(np.ascontiguousarray(image).data).hexdigest() + f"-{image.shape}"
        embedding = self._recent.pop(key, None)
        if embedding is None:
            embedding = self.segmenter.encode(image)
            self.misses += 1
        else:
            self.hits += 1
        self._recent[key] = embedding  # re-inserted last: the dict's order is the use order
        while len(self._recent) > self.size:
            del self._recent[next(iter(self._recent))]
        return embedding

    def decode(self, embedding: ImageEmbedding, points=None, labels=None, box=None, mask_input=None) -> MaskPrediction:
        return self.segmenter.decode(embedding, points, labels, box=box, mask_input=mask_input)

    def decode_batch(self, embedding: ImageEmbedding, prompts: Sequence[Prompt], candidates: bool = False) -> list[MaskPrediction]:
        return self.segmenter.decode_batch(embedding, prompts, candidates=candidates)
