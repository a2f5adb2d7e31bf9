"""ONNX graphs for frames encoded at their own aspect instead of padded to SAM's square.

The MobileSAM ONNX pair is fixed to 1024 x 1024 (its reshapes are constants: OpenVINO cannot
re-shape it), so a 16:9 frame spends 43 % of the encoder's work on padding. These graphs are
exported from our PyTorch MobileSAM, whose weights are converted from that same pair
(``mobilesam-torch``), once per input size, and cached beside the weights: an encoder for
exactly ``h x w`` input and a decoder for its ``h/16 x w/16`` embedding grid. Exporting needs
PyTorch (``samtrack[torch]``); running them does not.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .. import weights
from ..errors import WeightsError
from ..outputs import StagedOutputDir

SOURCE = "mobilesam-torch"
FOLDER = "mobilesam-onnx-unpadded"
DECODER = "sam_low_res_all.onnx"


class UnpaddedGraphs:
    """Finds, or exports on first use, the ``(encoder.onnx, sam.onnx)`` pair for an input size.

    Args:
        log: told when an export runs (it takes a few seconds).
        source: the ``mobilesam-torch`` state_dict to export from; None: the cached one
            (converted from the ONNX pair on first use).
    """

    def __init__(self, log: weights.Log = weights.log_stderr, source: Path | None = None) -> None:
        self.log = log
        self._source = source
        self._digest: str | None = None

    def paths(self, input_size: tuple[int, int]) -> tuple[Path, Path]:
        """The pair for encoder inputs of ``input_size`` (``(h, w)``, multiples of 16)."""
        source = self._source_checkpoint()
        # Keyed by the weights' hash, so that other weights never reuse these graphs.
        if self._digest is None:
            self._digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
        digest = self._digest
        h, w = input_size
        folder = weights.cache_dir() / FOLDER / digest / f"{h}x{w}"
        # The decoder stops at the low-res logits of all four outputs
        # (export_decoder(full_size=False)); an older cache's "sam.onnx" (full size) and
        # "sam_low_res.onnx" (one output) are not reused.
        encoder, decoder = folder / "encoder.onnx", folder / DECODER
        if not (encoder.is_file() and decoder.is_file()):
            self._export(source, folder, input_size)
        return encoder, decoder

    def _source_checkpoint(self) -> Path:
        if self._source is None:
            # Through the weights registry, not the torch model's: with the graphs cached, a run
            # never imports PyTorch (+190 MB resident).
            (file,) = weights.get_spec(SOURCE).files
            self._source = weights.resolve(SOURCE, None, log=self.log) / file.name
        return self._source

    def _export(self, source: Path, folder: Path, input_size: tuple[int, int]) -> None:
        try:
            from .sam.build import build_sam
            from .sam.export import export_decoder, export_encoder
        except ImportError:
            raise WeightsError("encoding unpadded frames with mobilesam-onnx needs a one-time export of the "
                               "encoder per frame size, which needs PyTorch: pip install 'samtrack[torch]'") from None

        h, w = input_size
        self.log(f"exporting the MobileSAM ONNX encoder for {w}x{h} inputs (once per frame size) into {folder.parent}")
        model = build_sam(SOURCE, source)
        # Staged: a killed export never leaves a half-written graph that a later run would load.
        with StagedOutputDir(folder) as staging:
            export_encoder(model, staging / "encoder.onnx", input_size)
            export_decoder(model, staging / DECODER, grid=(h // 16, w // 16), full_size=False)
