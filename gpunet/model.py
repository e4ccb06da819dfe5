"""The network's math, written once against the array API.

A multilayer perceptron: ReLU hidden layers, a softmax output, cross-entropy
loss. Samples are rows: `x` is (n, inputs), a layer's weight `w` is
(inputs, outputs) and its bias `b` is (outputs,). Parameters are a flat list
[w1, b1, w2, b2, ...] so optimizers can treat them alike.

This module imports neither numpy nor cupy: every function derives `xp` from
the arrays it is given, so the same lines run on numpy, cupy and
array-api-strict. Nothing here reads a value back to the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpunet.backend import array_namespace

Array = Any


def layers(params: Sequence[Array]) -> list[tuple[Array, Array]]:
    """The (weight, bias) pairs of the flat parameter list."""
    return list(zip(params[0::2], params[1::2]))


def forward(params: Sequence[Array], x: Array) -> tuple[Array, list[Array]]:
    """The output layer's logits, and each layer's input (which backward needs)."""
    xp = array_namespace(x)
    inputs = []
    h = x
    pairs = layers(params)
    for i, (w, b) in enumerate(pairs):
        inputs.append(h)
        h = h @ w + b
        if i < len(pairs) - 1:
            h = xp.maximum(h, 0.0)
    return h, inputs


def log_softmax(logits: Array) -> Array:
    """log(softmax) with the row maximum subtracted first, so exp never overflows."""
    xp = array_namespace(logits)
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))


def one_hot(labels: Array, num_classes: int, dtype: Any) -> Array:
    """(n,) integer labels -> (n, num_classes) rows of 0 and 1 in `dtype`."""
    xp = array_namespace(labels)
    classes = xp.arange(num_classes, dtype=labels.dtype)
    return xp.astype(labels[:, None] == classes, dtype)


def cross_entropy(logits: Array, targets: Array) -> Array:
    """Mean over samples of -log p(true class); `targets` is one-hot."""
    xp = array_namespace(logits)
    return -xp.sum(targets * log_softmax(logits)) / logits.shape[0]


def gradient_sums(params: Sequence[Array], x: Array, targets: Array) -> tuple[Array, list[Array]]:
    """Summed (not averaged) loss and parameter gradients over the rows of `x`.

    Sums are the unit of work: sums over disjoint chunks of the samples add up
    to the sum over all of them, so a full batch can be split freely.
    """
    xp = array_namespace(x)
    logits, inputs = forward(params, x)
    logp = log_softmax(logits)
    loss_sum = -xp.sum(targets * logp)
    delta = xp.exp(logp) - targets  # d(loss_sum)/d(logits): softmax minus one-hot
    grads: list[Array] = [None] * len(params)
    for i in range(len(params) // 2 - 1, -1, -1):
        a = inputs[i]
        grads[2 * i] = a.T @ delta
        # One gradient per neuron: summing over the batch axis only (the seed
        # summed over every axis and moved all of a layer's biases together).
        grads[2 * i + 1] = xp.sum(delta, axis=0)
        if i > 0:
            # ReLU passes gradient where its output was positive; `a` is that output.
            delta = xp.where(a > 0, delta @ params[2 * i].T, 0.0)
    return loss_sum, grads


def loss_and_gradients(params: Sequence[Array], x: Array, targets: Array) -> tuple[Array, list[Array]]:
    """Mean loss over the samples and its gradient with respect to every parameter."""
    loss_sum, grads = gradient_sums(params, x, targets)
    n = x.shape[0]
    return loss_sum / n, [g / n for g in grads]


def evaluation_sums(params: Sequence[Array], x: Array, targets: Array, labels: Array) -> tuple[Array, list[Array]]:
    """Summed loss and the number of correct predictions, both read from the output layer."""
    xp = array_namespace(x)
    logits, _ = forward(params, x)
    loss_sum = -xp.sum(targets * log_softmax(logits))
    correct = xp.sum(xp.astype(xp.argmax(logits, axis=1) == labels, logits.dtype))
    return loss_sum, [correct]


def evaluate(params: Sequence[Array], x: Array, targets: Array, labels: Array) -> tuple[Array, Array]:
    """Mean loss and accuracy, from the output layer (the seed read its accuracy from a hidden one)."""
    loss_sum, (correct,) = evaluation_sums(params, x, targets, labels)
    n = x.shape[0]
    return loss_sum / n, correct / n


def predict(params: Sequence[Array], x: Array) -> Array:
    """The most probable class of each row."""
    xp = array_namespace(x)
    logits, _ = forward(params, x)
    return xp.argmax(logits, axis=1)
