"""The network's math, written once against the array API.

A multilayer perceptron: ReLU hidden layers, a softmax output, cross-entropy
loss. Samples are rows: `x` is (n, inputs), a layer's weight `w` is
(inputs, outputs) and its bias `b` is (outputs,). Parameters are a flat list
[w1, b1, w2, b2, ...] so optimizers can treat them alike.

This module imports neither numpy nor cupy: every function derives `xp` from
the arrays it is given, so the same lines run on numpy, cupy and
array-api-strict. Nothing here reads a value back to the host.

The elementwise steps of the training gradient are `fusable` functions: each
is one kernel on a GPU (see gpunet.device.backend.fusable) and plain array code
elsewhere. They take `xp` as an argument rather than deriving it, because
cupy's fusion traces them with the raw cupy module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpunet.device.backend import array_namespace, fusable

Array = Any


def layers(params: Sequence[Array]) -> list[tuple[Array, Array]]:
    """The (weight, bias) pairs of the flat parameter list."""
    return list(zip(params[0::2], params[1::2]))


@fusable
def bias_relu(z: Array, b: Array, xp: Any) -> Array:
    return xp.maximum(z + b, 0.0)


@fusable
def relu_backward(delta: Array, out: Array, xp: Any) -> Array:
    """The gradient through a ReLU: it passes where the unit's output was positive.

    sign() of that output is exactly 1 there and 0 elsewhere.
    """
    return delta * xp.sign(out)


@fusable
def sum_exp(z: Array, z_max: Array, xp: Any) -> Array:
    """softmax's denominator per column, each column shifted by its maximum."""
    return xp.sum(xp.exp(z - z_max), axis=0)


@fusable
def cross_entropy_sum(z: Array, z_max: Array, sum_e: Array, targets: Array, xp: Any) -> Array:
    """-sum(targets * log_softmax(z)) over a (classes, samples) block."""
    return -xp.sum(targets * ((z - z_max) - xp.log(sum_e)))


@fusable
def softmax_minus_targets(z: Array, z_max: Array, sum_e: Array, targets: Array, xp: Any) -> Array:
    """d(cross-entropy sum)/d(logits): softmax minus one-hot."""
    return xp.exp((z - z_max) - xp.log(sum_e)) - targets


def hidden_activations(params: Sequence[Array], x: Array) -> list[Array]:
    """The input of every layer: `x`, then each hidden layer's ReLU output."""
    acts = [x]
    for w, b in layers(params)[:-1]:
        acts.append(bias_relu(acts[-1] @ w, b))
    return acts


def output_logits_t(params: Sequence[Array], h: Array) -> Array:
    """The output layer's logits, transposed: (classes, samples).

    Transposed on purpose: every reduction over the classes (max, sum, argmax)
    then runs along the leading axis, which numpy does ~40x faster than along
    a trailing axis only 10 long; BLAS takes the transposes for free.
    """
    w, b = params[-2], params[-1]
    return w.T @ h.T + b[:, None]


def logits_t(params: Sequence[Array], x: Array) -> Array:
    """The whole network, input to output logits, as (classes, samples)."""
    return output_logits_t(params, hidden_activations(params, x)[-1])


def forward(params: Sequence[Array], x: Array) -> Array:
    """The output layer's logits, (samples, classes)."""
    return logits_t(params, x).T


def softmax_shift(logits: Array, axis: int) -> Array:
    """What log_softmax subtracts before exp: the maximum along `axis`, so exp never overflows.

    The seed subtracted nothing, and its softmax overflowed on raw pixels.
    """
    xp = array_namespace(logits)
    return xp.max(logits, axis=axis, keepdims=True)


def log_softmax(logits: Array, axis: int = 1) -> Array:
    """log(softmax) along `axis`, computed stably (see softmax_shift)."""
    xp = array_namespace(logits)
    shifted = logits - softmax_shift(logits, axis)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def one_hot(labels: Array, num_classes: int, dtype: Any) -> Array:
    """(n,) integer labels -> (n, num_classes) rows of 0 and 1 in `dtype`."""
    xp = array_namespace(labels)
    classes = xp.arange(num_classes, dtype=labels.dtype)
    return xp.astype(labels[:, None] == classes, dtype)


def cross_entropy(logits: Array, targets: Array) -> Array:
    """Mean over samples of -log p(true class); `logits` and one-hot `targets` are (samples, classes)."""
    xp = array_namespace(logits)
    return -xp.sum(targets * log_softmax(logits)) / logits.shape[0]


def column_sums(a: Array) -> Array:
    """Sum over the samples (rows) only: one bias gradient per neuron.

    The seed summed over every axis, so all biases of a layer moved together.
    A product with a vector of ones is BLAS work, which numpy does ~15x faster
    than sum(axis=0) over 16-wide rows.
    """
    xp = array_namespace(a)
    return xp.ones(a.shape[0], dtype=a.dtype) @ a


def gradient_sums(params: Sequence[Array], x: Array, targets: Array) -> tuple[Array, list[Array]]:
    """Summed (not averaged) loss and parameter gradients over the rows of `x`.

    Sums are the unit of work: sums over disjoint chunks of the samples add up
    to the sum over all of them, so a full batch can be split freely.
    """
    xp = array_namespace(x)
    acts = hidden_activations(params, x)
    # log_softmax along the classes, in the same operations as log_softmax(),
    # split so that the loss and the output gradient are one kernel each.
    z_t, targets_t = output_logits_t(params, acts[-1]), targets.T
    z_max = softmax_shift(z_t, axis=0)
    sum_e = sum_exp(z_t, z_max)
    loss_sum = cross_entropy_sum(z_t, z_max, sum_e, targets_t)
    delta_t = softmax_minus_targets(z_t, z_max, sum_e, targets_t)
    grads: list[Array] = [None] * len(params)
    grads[-2] = acts[-1].T @ delta_t.T  # (hidden, classes), contiguous: no extra copy when flattened
    grads[-1] = xp.sum(delta_t, axis=1)
    delta = delta_t.T  # the gradient at the output layer's pre-activations
    for j in range(len(params) // 2 - 1, 0, -1):  # hidden layer j (weights params[2j - 2]), last first
        delta = relu_backward(delta @ params[2 * j].T, acts[j])  # back through layer j + 1, then j's ReLU
        grads[2 * j - 2] = acts[j - 1].T @ delta
        grads[2 * j - 1] = column_sums(delta)
    return loss_sum, grads


def loss_and_gradients(params: Sequence[Array], x: Array, targets: Array) -> tuple[Array, list[Array]]:
    """Mean loss over the samples and its gradient with respect to every parameter."""
    loss_sum, grads = gradient_sums(params, x, targets)
    n = x.shape[0]
    return loss_sum / n, [g / n for g in grads]


def evaluation_sums(params: Sequence[Array], x: Array, targets: Array, labels: Array) -> tuple[Array, list[Array]]:
    """Summed loss and the number of correct predictions, both read from the output layer."""
    xp = array_namespace(x)
    logp_t = log_softmax(logits_t(params, x), axis=0)
    loss_sum = -xp.sum(targets.T * logp_t)
    correct = xp.sum(xp.astype(xp.argmax(logp_t, axis=0) == labels, logp_t.dtype))
    return loss_sum, [correct]


def evaluate(params: Sequence[Array], x: Array, targets: Array, labels: Array) -> tuple[Array, Array]:
    """Mean loss and accuracy, from the output layer (the seed read its accuracy from a hidden one)."""
    loss_sum, (correct,) = evaluation_sums(params, x, targets, labels)
    n = x.shape[0]
    return loss_sum / n, correct / n


def predict(params: Sequence[Array], x: Array) -> Array:
    """The most probable class of each row."""
    xp = array_namespace(x)
    return xp.argmax(logits_t(params, x), axis=0)


def confusion_matrix(params: Sequence[Array], x: Array, targets: Array) -> Array:
    """counts[i, j]: samples of true class i predicted as class j, counted on the device.

    A product of two one-hot matrices, so it is one matmul on any backend.
    """
    xp = array_namespace(x)
    predicted = one_hot(predict(params, x), targets.shape[1], targets.dtype)
    return xp.matmul(targets.T, predicted)
