"""Update rules over one flat parameter vector, in place, on its own device.

Parameters, gradients and each state slot are single vectors (gpunet.core.flat),
and each rule's arithmetic is one `fusable` function: one kernel per update on
a GPU, whatever the number of layers.
"""

from __future__ import annotations

from typing import Any

from gpunet.device.backend import Array, array_namespace, fusable


@fusable
def gd_update(p: Array, g: Array, lr: float, xp: Any) -> None:
    p -= lr * g


@fusable
def momentum_update(p: Array, g: Array, v: Array, lr: float, beta: float, xp: Any) -> None:
    v *= beta
    v += g
    p -= lr * v


@fusable
def adam_update(
    p: Array,
    g: Array,
    m: Array,
    v: Array,
    beta1: float,
    one_minus_beta1: float,
    beta2: float,
    one_minus_beta2: float,
    step_size: float,
    v_scale: float,
    eps: float,
    xp: Any,
) -> None:
    # 1 - beta is computed on the host and passed in: see the rule in gpunet.device.backend.fusable.
    m *= beta1
    m += one_minus_beta1 * g
    v *= beta2
    v += one_minus_beta2 * (g * g)
    p -= step_size * m / (xp.sqrt(v) * v_scale + eps)


class GD:
    """Plain gradient descent, as in the seed: p -= lr * g.

    `slots` holds an optimizer's state vectors by name and `steps` its update
    count: together, what a checkpoint must keep.
    """

    def __init__(self, params: Array, lr: float) -> None:
        self.lr = lr
        self.steps = 0
        self.slots: dict[str, Array] = {}

    def step(self, params: Array, grads: Array) -> None:
        gd_update(params, grads, self.lr)
        self.steps += 1


class Momentum(GD):
    """Heavy-ball momentum: v = beta * v + g; p -= lr * v."""

    def __init__(self, params: Array, lr: float, beta: float = 0.9) -> None:
        super().__init__(params, lr)
        self.beta = beta
        self.slots = {"velocity": array_namespace(params).zeros_like(params)}

    def step(self, params: Array, grads: Array) -> None:
        momentum_update(params, grads, self.slots["velocity"], self.lr, self.beta)
        self.steps += 1


class Adam(GD):
    """Adam (Kingma & Ba, 2015) with bias correction."""

    def __init__(self, params: Array, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        super().__init__(params, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        xp = array_namespace(params)
        self.slots = {"m": xp.zeros_like(params), "v": xp.zeros_like(params)}

    def step(self, params: Array, grads: Array) -> None:
        self.steps += 1
        # Bias corrections are host floats (the step count lives on the host);
        # eps is added after correcting v, as PyTorch does, so the two agree.
        step_size = self.lr / (1 - self.beta1**self.steps)
        v_scale = 1 / (1 - self.beta2**self.steps) ** 0.5
        m, v = self.slots["m"], self.slots["v"]
        b1, b2 = self.beta1, self.beta2
        adam_update(params, grads, m, v, b1, 1 - b1, b2, 1 - b2, step_size, v_scale, self.eps)


OPTIMIZERS = {"gd": GD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name: str, params: Array, lr: float) -> GD:
    return OPTIMIZERS[name](params, lr)
