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

from gpunet.device.backend import Array, array_namespace, fusable, matmul_into


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
def logits_max(z: Array, b: Array, xp: Any) -> Array:
    """Each sample's largest logit: the shift that keeps exp() finite (see softmax_shift).

    `z` is (classes, samples) without its bias, `b` the bias as a (classes, 1)
    column: adding it here saves a pass over the logits. One output per
    sample, so on a GPU the reduction is spread over thousands of blocks.
    """
    return xp.max(z + b, axis=0)


@fusable
def log_sum_exp(z: Array, b: Array, z_max: Array, xp: Any) -> Array:
    """log of softmax's denominator per sample, each shifted by its maximum: one output per sample."""
    return xp.log(xp.sum(xp.exp((z + b) - z_max), axis=0))


@fusable
def softmax_cross_entropy(
    z: Array, b: Array, z_max: Array, log_s: Array, targets: Array, scale: float, neg_scale: float, xp: Any
) -> tuple[Array, Array]:
    """`scale` x d(cross-entropy)/d(logits) (softmax minus one-hot), and `scale` x each entry's share of the loss.

    The loss shares, -targets * log_softmax, sum to the loss; summing them is
    one whole-array reduction, which cupy hands to CUB's device-wide reduce,
    instead of a reduction to one number inside this kernel (one block of 512
    threads on a GPU, whatever the batch). `neg_scale` is -scale, computed on
    the host (the rule in gpunet.device.backend.fusable).
    """
    log_p = (z + b) - z_max - log_s
    return (xp.exp(log_p) - targets) * scale, (targets * log_p) * neg_scale


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


def one_hot_t(labels: Array, num_classes: int, dtype: Any) -> Array:
    """one_hot(...).T, held contiguous: (num_classes, n), so each class's row is read in one stream.

    The training step reads its targets transposed, as (classes, samples),
    like the logits; a transposed view of one_hot's rows would be read with a
    stride of `num_classes` elements by every kernel that uses it.
    """
    xp = array_namespace(labels)
    classes = xp.arange(num_classes, dtype=labels.dtype)
    return xp.astype(classes[:, None] == labels[None, :], dtype)


def cross_entropy(logits: Array, targets: Array) -> Array:
    """Mean over samples of -log p(true class); `logits` and one-hot `targets` are (samples, classes)."""
    xp = array_namespace(logits)
    return -xp.sum(targets * log_softmax(logits)) / logits.shape[0]


def column_sums(a: Array, ones: Array | None = None) -> Array:
    """Sum over the samples (rows) only: one bias gradient per neuron.

    The seed summed over every axis, so all biases of a layer moved together.
    A product with a vector of ones is BLAS work, which numpy does ~15x faster
    than sum(axis=0) over 16-wide rows, and on a GPU a cuBLAS product rather
    than a reduction to 16 numbers (which cupy would run on one block).
    """
    xp = array_namespace(a)
    return (xp.ones(a.shape[0], dtype=a.dtype) if ones is None else ones) @ a


def gradient_into(
    params: Sequence[Array], x: Array, targets: Array, scale: float, grads: Sequence[Array], ones: Array | None = None
) -> Array:
    """`scale` x the summed loss over the rows of `x`, with `scale` x each parameter's summed gradient
    written into `grads` (views of one flat vector, say; each product goes straight into its view).

    `targets` are (samples, classes) rows whose transpose is what is read (held
    contiguous by the trainer, see one_hot_t); `ones` is a vector of ones of
    the rows' length (made here when not given). `scale` is applied once, to
    the output layer's error, so the whole gradient is scaled for free: 1/n
    gives the mean. Nothing is read back to the host.

    On a GPU this is 3 + 2L products, L + 1 (hidden layers and the output)
    gradient products of each kind, and six fused kernels for two hidden
    layers: see docs/gpu.md for the count.
    """
    xp = array_namespace(x)
    acts = hidden_activations(params, x)
    w, b = params[-2], params[-1]
    z_t = w.T @ acts[-1].T  # (classes, samples); the bias is added inside the three kernels below
    b_col = xp.reshape(b, (-1, 1))
    targets_t = targets.T
    # log_softmax along the classes, in the same operations as log_softmax(), split so that each
    # reduction has one output per sample and the gradient and the loss shares are one kernel.
    z_max = logits_max(z_t, b_col)
    log_s = log_sum_exp(z_t, b_col, z_max)
    delta_t, shares = softmax_cross_entropy(z_t, b_col, z_max, log_s, targets_t, scale, -scale)
    loss = xp.sum(shares)
    if ones is None:
        ones = xp.ones(x.shape[0], dtype=x.dtype)
    matmul_into(acts[-1].T, delta_t.T, grads[-2])  # (hidden, classes)
    matmul_into(delta_t, ones, grads[-1])
    delta = delta_t.T  # the gradient at the output layer's pre-activations
    for j in range(len(params) // 2 - 1, 0, -1):  # hidden layer j (weights params[2j - 2]), last first
        delta = relu_backward(delta @ params[2 * j].T, acts[j])  # back through layer j + 1, then j's ReLU
        matmul_into(acts[j - 1].T, delta, grads[2 * j - 2])
        matmul_into(ones, delta, grads[2 * j - 1])
    return loss


def gradient_sums(params: Sequence[Array], x: Array, targets: Array) -> tuple[Array, list[Array]]:
    """Summed (not averaged) loss and parameter gradients over the rows of `x`.

    Sums are the unit of work: sums over disjoint chunks of the samples add up
    to the sum over all of them, so a full batch can be split freely.
    """
    xp = array_namespace(x)
    grads = [xp.empty(tuple(p.shape), dtype=p.dtype) for p in params]
    return gradient_into(params, x, targets, 1.0, grads), grads


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
