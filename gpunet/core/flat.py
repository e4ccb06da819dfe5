"""Parameters, gradients and optimizer state as one flat vector each.

The network wants a list of shaped arrays [w1, b1, w2, b2, ...]; the optimizer
wants one vector, so that an update is a handful of whole-buffer operations
(one fused kernel on a GPU) instead of that handful per array. The trainer
keeps the vector and hands the network views of it: the same memory, so an
update of the vector is an update of every layer.

Array-API only, like the model: no numpy, no cupy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from math import prod

from gpunet.device.backend import Array, array_namespace


def flatten(arrays: Sequence[Array]) -> Array:
    """One new vector holding every array's elements, in order (one concatenation)."""
    xp = array_namespace(arrays[0])
    return xp.concat([xp.reshape(a, (-1,)) for a in arrays])


@dataclass(frozen=True)
class Layout:
    """The shapes packed into a flat vector, in order."""

    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, arrays: Sequence[Array]) -> Layout:
        return cls(tuple(tuple(a.shape) for a in arrays))

    @property
    def size(self) -> int:
        return sum(prod(s) for s in self.shapes)

    def views(self, flat: Array) -> list[Array]:
        """The shaped arrays inside `flat`, sharing its memory on numpy and cupy."""
        xp = array_namespace(flat)
        if flat.shape != (self.size,):
            raise ValueError(f"a flat vector of {self.size} elements was expected, got shape {flat.shape}")
        bounds = pairwise(accumulate((prod(s) for s in self.shapes), initial=0))
        return [xp.reshape(flat[a:b], shape) for (a, b), shape in zip(bounds, self.shapes)]
