"""The DAVIS / PASCAL VOC colour map, shared by overlays and indexed-PNG masks."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def davis_palette() -> np.ndarray:
    """The 256-entry colour map of DAVIS and PASCAL VOC annotations.

    Entry ``k`` is the colour of object id ``k`` (``0`` is black, the background; ``1`` is
    ``(128, 0, 0)``, ``2`` is ``(0, 128, 0)``, ...). It is built the standard way: the bits of
    ``k`` are dealt out in turn to R, G and B, from each channel's most significant bit down.

    Returns:
        uint8 ``[256, 3]`` RGB, read-only (the array is cached; copy it to modify it).
    """
    ids = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.uint8)
    for j in range(8):
        for channel in range(3):
            bit = (ids >> (3 * j + channel)) & 1
            palette[:, channel] |= (bit << (7 - j)).astype(np.uint8)
    palette.flags.writeable = False
    return palette
