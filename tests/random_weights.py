"""Seeded random weights for the golden-fixture checks against official code.

Shared by the fixture generators under ``tools/*_reference`` (run beside the official code) and
the tests (run on ours): both rebuild the same weights from a seed, key by key, so fixtures never
store weights.
"""
from __future__ import annotations

import zlib
from typing import Mapping

import numpy as np


def random_state_dict(template: Mapping[str, "object"], seed: int, keep: tuple[str, ...] = ()) -> dict:
    """Seeded random values for every tensor of ``template`` (a state_dict), each key drawn from
    its own generator so that the result does not depend on key order.

    Scales keep a deep network's activations of order one: weights ``N(0, 1/fan_in)``, norms'
    scales ``1 + N(0, 0.1)``, biases ``N(0, 0.1)``, BatchNorm variances in [0.5, 1.5]; SAM's random
    Fourier matrix keeps its unit scale. Integer tensors keep the template's values, and so do
    the keys ending with any of ``keep`` (fixed tables such as a sin-cos embedding buffer).
    """
    import torch

    out = {}
    for key, value in template.items():
        if not value.dtype.is_floating_point or (keep and key.endswith(tuple(keep))):
            out[key] = value.clone()
            continue
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        shape = tuple(value.shape)
        if key.endswith("running_var"):
            array = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("positional_encoding_gaussian_matrix"):
            array = rng.standard_normal(shape)
        elif len(shape) == 1:
            array = (1.0 if key.endswith("weight") else 0.0) + 0.1 * rng.standard_normal(shape)
        else:
            array = rng.standard_normal(shape) / np.sqrt(max(1, int(np.prod(shape[1:]))))
        out[key] = torch.from_numpy(array.astype(np.float32))
    return out
