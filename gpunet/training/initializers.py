"""Initial parameters, drawn on the host so every device starts from the same numbers."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

# The output layer starts 10x smaller than He-normal so the first logits are
# near zero: the loss at step 0 is then close to ln(classes), the value a
# correct network must start from (a check the seed's author never had).
OUTPUT_SCALE = 0.1


def he_normal(sizes: Sequence[int], seed: int, dtype: str = "float32") -> list[np.ndarray]:
    """[w1, b1, w2, b2, ...] for layer widths `sizes` (inputs first, classes last).

    Weights ~ N(0, 2 / fan_in), which keeps the scale of ReLU activations
    steady through the layers (the seed's uniform(-0.5, 0.5) did not); biases 0.
    Drawn in float64 from numpy's Generator(seed), then cast, so float32 and
    float64 runs start from the same values, rounded.
    """
    rng = np.random.default_rng(seed)
    params = []
    last = len(sizes) - 2
    for i, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        w = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
        if i == last:
            w *= OUTPUT_SCALE
        params += [w.astype(dtype), np.zeros(fan_out, dtype=dtype)]
    return params
