"""MobileSAM on onnxruntime (CPU): a TinyViT image encoder plus SAM's prompt encoder and mask
decoder, from the ``mobilesam-onnx`` weights (see :mod:`samtrack.weights`).

The decoder is SAM's standard ONNX export with a single output mask: it takes prompts already
mapped into the 1024-resized frame and returns logits at the original frame size. Frames encoded
unpadded use graphs exported from our PyTorch model (:mod:`.unpadded`), whose decoder stops at the
low-res logits: a mask is upscaled when the loop reads it (:class:`~.base.UpscaledOnRead`).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

from samtrack import weights
from samtrack.errors import WeightsError

from . import transforms
from .backends import GraphSession, open_session
from .base import DecodeOneByOne, ImageEmbedding, MaskPrediction, Prompt, UpscaledOnRead
from .unpadded import UnpaddedGraphs

LOW_RES = 256
_DECODER_INPUTS = {"image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"}


class MobileSamOnnx(DecodeOneByOne):
    """The :class:`~samtrack.segmenters.base.Segmenter` for MobileSAM ONNX weights.

    Args:
        encoder_path: ``encoder.onnx``: ``input`` float32 ``[B, 3, 1024, 1024]`` ->
            ``output`` float32 ``[B, 256, 64, 64]``.
        decoder_path: ``sam.onnx``: SAM's ONNX decoder export (single mask).
        threads: intra-op threads for each session; None = the runtime's default.
        backend: what runs the encoder, ``onnxruntime`` or ``openvino``
            (:mod:`.backends`); the decoder always runs on onnxruntime.
        batched_decoder: our decoder exported with a batch dimension
            (:func:`samtrack.segmenters.sam.export.export_decoder`): ``decode_batch`` then runs
            every prompt set in one call. Not the default: on 2 CPU cores it measured slower than
            one call per prompt set (``python -m samtrack.eval.segmenter_bench``).
        unpadded: encode frames at their own aspect (sides padded to multiples of 16), with the
            graphs these give per input size (:class:`~samtrack.segmenters.unpadded.UnpaddedGraphs`)
            instead of the square pair; None: SAM's square.
    """

    name = "mobilesam-onnx"

    @property
    def all_outputs(self) -> bool:
        """The unpadded grid decoder returns all four of SAM's outputs; SAM's square export one."""
        return self.unpadded is not None

    def __init__(
        self,
        encoder_path: str | Path,
        decoder_path: str | Path,
        threads: int | None = None,
        batched_decoder: str | Path | None = None,
        backend: str = "onnxruntime",
        unpadded: "UnpaddedGraphs | None" = None,
    ) -> None:
        self.encoder_path = Path(encoder_path)
        # The graph that encoded the last frame (the square's, or an unpadded size's).
        self.encoder_graph = self.encoder_path
        self._encoder = open_session(self.encoder_path, backend, threads)
        self._decoder = open_session(Path(decoder_path), "onnxruntime", threads)
        self._batched = None if batched_decoder is None else open_session(Path(batched_decoder), "onnxruntime", threads)
        self.backend = backend
        self.threads = threads
        self.unpadded = unpadded
        # Per unpadded input size (h, w): its encoder and grid decoder sessions.
        self._sized: dict[tuple[int, int], tuple[GraphSession, GraphSession]] = {}
        self._graph_paths: dict[tuple[int, int], Path] = {}
        self._encoder_input = self._encoder.input_names[0]
        names = set(self._decoder.input_names)
        if names != _DECODER_INPUTS:
            raise WeightsError(
                f"not a SAM ONNX decoder (inputs {sorted(names)}, expected {sorted(_DECODER_INPUTS)})", decoder_path
            )
        # Constant decoder inputs, allocated once: decode() runs many times per frame.
        self._no_mask = np.zeros((1, 1, LOW_RES, LOW_RES), dtype=np.float32)
        self._has_mask = np.ones(1, dtype=np.float32)
        self._has_no_mask = np.zeros(1, dtype=np.float32)

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | None, threads: int | None = None, log: weights.Log = weights.log_stderr,
        backend: str = "onnxruntime", unpadded: bool = False,
    ) -> "MobileSamOnnx":
        """Load from a directory holding ``encoder.onnx`` and ``sam.onnx``, or from the weights
        cache when ``checkpoint`` is None (fetched on first use, with progress told to ``log``);
        ``unpadded`` encodes frames at their own aspect (graphs exported per size on first use)."""
        directory = weights.resolve(cls.name, checkpoint, log=log)
        return cls(directory / "encoder.onnx", directory / "sam.onnx", threads=threads, backend=backend,
                   unpadded=UnpaddedGraphs(log) if unpadded else None)

    @property
    def embedding_id(self) -> str:
        """What an embedding cache keys this segmenter's embeddings by."""
        return self.name + ("-unpadded" if self.unpadded else "")

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Encode an RGB uint8 ``[H, W, 3]`` frame into a ``[1, 256, 64, 64]`` embedding
        (``[1, 256, h/16, w/16]`` unpadded, e.g. 36 x 64 for 16:9)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
        if self.unpadded is None:
            tensor, input_size = transforms.preprocess(image)
            (features,) = self._encoder.run({self._encoder_input: tensor})
        else:
            tensor, input_size = transforms.preprocess(image, multiple=transforms.PATCH)
            encoder, _ = self._graphs(tensor.shape[2:])
            (features,) = encoder.run({"input": tensor})
            self.encoder_graph = self._graph_paths[tuple(tensor.shape[2:])]
        return ImageEmbedding(features=features, original_size=image.shape[:2], input_size=input_size)

    def _graphs(self, input_size: tuple[int, int]) -> "tuple[GraphSession, GraphSession]":
        sessions = self._sized.get(tuple(input_size))
        if sessions is None:
            encoder, decoder = self.unpadded.paths(tuple(input_size))
            self._graph_paths[tuple(input_size)] = encoder
            sessions = self._sized[tuple(input_size)] = (
                open_session(encoder, self.backend, self.threads), open_session(decoder, "onnxruntime", self.threads))
        return sessions

    def decode(
        self,
        embedding: ImageEmbedding,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
    ) -> MaskPrediction:
        """:meth:`Segmenter.decode <samtrack.segmenters.base.Segmenter.decode>`: logits at the
        original frame size, the predicted IoU and ``[256, 256]`` low-res logits.

        Raises:
            ValueError: no prompt at all, or prompts of the wrong shape or label values.
        """
        if self.unpadded is not None:
            (prediction,) = self._decode_on_grid(embedding, [Prompt(points, labels, box, mask_input)])
            return prediction
        coords, point_labels = transforms.prompt_tokens(points, labels, box)
        coords = transforms.apply_coords(coords, embedding.original_size)[None]
        if mask_input is None:
            mask, has_mask = self._no_mask, self._has_no_mask
        else:
            mask_input = np.asarray(mask_input, dtype=np.float32)
            if mask_input.shape != (LOW_RES, LOW_RES):
                raise ValueError(f"mask_input must be [{LOW_RES}, {LOW_RES}], got {mask_input.shape}")
            mask, has_mask = mask_input.reshape(1, 1, LOW_RES, LOW_RES), self._has_mask
        masks, iou, low_res = self._decoder.run(
            {
                "image_embeddings": embedding.features,
                "point_coords": coords,
                "point_labels": point_labels[None],
                "mask_input": mask,
                "has_mask_input": has_mask,
                "orig_im_size": np.asarray(embedding.original_size, dtype=np.float32),
            },
        )
        return MaskPrediction(logits=masks[0, 0], iou=float(iou[0, 0]), low_res_logits=low_res[0, 0])

    def decode_batch(
        self, embedding: ImageEmbedding, prompts: Sequence[Prompt], candidates: bool = False
    ) -> list[MaskPrediction]:
        """One call per prompt set, or one call for all of them with ``batched_decoder``."""
        if self.unpadded is not None:
            # One call per prompt set (a batch is slower on few cores); the grid decoder gives
            # all four outputs, so candidates cost nothing more.
            return [self._decode_on_grid(embedding, [p], candidates)[0] for p in prompts]
        if self._batched is None or candidates or not prompts:
            return super().decode_batch(embedding, prompts, candidates)
        return self._run_batched(self._batched, embedding, prompts, (LOW_RES, LOW_RES))

    def _decode_on_grid(self, embedding: ImageEmbedding, prompts: Sequence[Prompt],
                        candidates: bool = False) -> list[MaskPrediction]:
        """Decode with the grid decoder of an unpadded embedding."""
        grid = embedding.features.shape[-2:]
        _, decoder = self._graphs((transforms.PATCH * grid[0], transforms.PATCH * grid[1]))
        return self._run_batched(decoder, embedding, prompts, (4 * grid[0], 4 * grid[1]), candidates)

    def _run_batched(self, session: "GraphSession", embedding: ImageEmbedding, prompts: Sequence[Prompt],
                     low_res_shape: tuple[int, int], candidates: bool = False) -> list[MaskPrediction]:
        """A graph of :func:`~samtrack.segmenters.sam.export.export_decoder` on ``prompts``;
        ``candidates`` (a low-res graph only) attaches all four of SAM's outputs to each."""
        coords, labels, valid = transforms.batch_prompt_tokens(prompts, embedding.original_size)
        masks, given = transforms.batch_mask_inputs(prompts, low_res_shape)
        feeds = {
            "image_embeddings": embedding.features,
            "point_coords": coords,
            "point_labels": labels,
            "token_mask": valid.astype(np.float32),
            "mask_input": masks,
            "has_mask_input": given.astype(np.float32),
        }
        if "orig_im_size" not in session.input_names:
            # A low-res graph (the unpadded ones): each mask is upscaled when it is read.
            iou, low_res = session.run(feeds)  # all four outputs: [B, 4], [B, 4, h, w]
            upscale = partial(transforms.upscale_logits, input_size=embedding.input_size,
                              original_size=embedding.original_size)
            out = []
            for i, k in enumerate(transforms.single_mask_index(iou, valid.sum(axis=1))):
                prediction = UpscaledOnRead(float(iou[i, k]), low_res[i, k], upscale)
                if candidates:
                    prediction.candidates = [UpscaledOnRead(float(iou[i, j]), low_res[i, j], upscale)
                                             for j in range(iou.shape[1])]
                out.append(prediction)
            return out
        feeds["orig_im_size"] = np.asarray(embedding.original_size, dtype=np.float32)
        logits, iou, low_res = session.run(feeds)
        return [MaskPrediction(logits=logits[i, 0], iou=float(iou[i, 0]), low_res_logits=low_res[i, 0])
                for i in range(len(prompts))]
