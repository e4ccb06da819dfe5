"""Update rules. Each updates the parameter arrays in place, on their own device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpunet.backend import array_namespace

Array = Any


class GD:
    """Plain gradient descent, as in the seed: p -= lr * g.

    `slots` holds an optimizer's per-parameter state arrays by name and
    `steps` its update count: together, what a checkpoint must keep.
    """

    def __init__(self, params: Sequence[Array], lr: float) -> None:
        self.lr = lr
        self.steps = 0
        self.slots: dict[str, list[Array]] = {}

    def _zeros(self, params: Sequence[Array]) -> list[Array]:
        return [array_namespace(p).zeros_like(p) for p in params]

    def step(self, params: Sequence[Array], grads: Sequence[Array]) -> None:
        for p, g in zip(params, grads):
            p -= self.lr * g
        self.steps += 1


class Momentum(GD):
    """Heavy-ball momentum: v = beta * v + g; p -= lr * v."""

    def __init__(self, params: Sequence[Array], lr: float, beta: float = 0.9) -> None:
        super().__init__(params, lr)
        self.beta = beta
        self.slots = {"velocity": self._zeros(params)}

    def step(self, params: Sequence[Array], grads: Sequence[Array]) -> None:
        for p, g, v in zip(params, grads, self.slots["velocity"]):
            v *= self.beta
            v += g
            p -= self.lr * v
        self.steps += 1


class Adam(GD):
    """Adam (Kingma & Ba, 2015) with bias correction."""

    def __init__(
        self, params: Sequence[Array], lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        super().__init__(params, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.slots = {"m": self._zeros(params), "v": self._zeros(params)}

    def step(self, params: Sequence[Array], grads: Sequence[Array]) -> None:
        xp = array_namespace(params[0])
        self.steps += 1
        # Bias corrections are host floats (the step count lives on the host);
        # eps is added after correcting v, as PyTorch does, so the two agree.
        step_size = self.lr / (1 - self.beta1**self.steps)
        v_scale = 1 / (1 - self.beta2**self.steps) ** 0.5
        for p, g, m, v in zip(params, grads, self.slots["m"], self.slots["v"]):
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * (g * g)
            p -= step_size * m / (xp.sqrt(v) * v_scale + self.eps)


OPTIMIZERS = {"gd": GD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name: str, params: Sequence[Array], lr: float) -> GD:
    return OPTIMIZERS[name](params, lr)
