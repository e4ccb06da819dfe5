"""`gpunet doctor`: passes on the real model, and each seed bug, put back in, fails its own check."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from typer.testing import Result

from gpunet.core import model
from gpunet.data import datasets
from gpunet.device.backend import Device, array_namespace, resolve_device
from gpunet.training import initializers
from gpunet.training.doctor import CHECKS, Check, run_checks
from gpunet.training.train import DeviceData, TrainConfig
from tests.conftest import FASHION_DIR, strict_device
from tests.helpers import invoke, one_line_error

INPUTS, INIT_LOSS, GRADIENTS, ACCURACY, BIASES, FIRST_STEPS, OVERFIT, DEAD = range(1, 9)


@pytest.fixture(scope="module")
def synthetic() -> datasets.Dataset:
    return datasets.synthetic()


@pytest.fixture
def cpu() -> Device:
    return resolve_device("cpu")


def failed(checks: list[Check]) -> set[int]:
    return {number for number, c in enumerate(checks, 1) if not c.passed}


def assert_only_fails(checks: list[Check], expected: set[int]) -> None:
    report = "\n".join(f"{n}. {c}" for n, c in enumerate(checks, 1))
    assert len(checks) == len(CHECKS) == 8
    assert failed(checks) == expected, report


# --- the seed's bugs, re-injected ------------------------------------------------------------


def unscaled_from_host(cls, images, labels, device, dtype, num_classes, pixels=False):
    xp = device.xp
    x = xp.astype(device.asarray(images), getattr(xp, dtype))  # the seed fed raw 0..255 pixels
    y = device.asarray(labels.astype(np.int64))
    return cls(x, model.one_hot(y, num_classes, x.dtype), y)


def seed_uniform_init(sizes, seed, dtype="float32"):
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        params += [(rng.random((fan_in, fan_out)) - 0.5).astype(dtype), (rng.random(fan_out) - 0.5).astype(dtype)]
    return params


real_softmax_cross_entropy = model.softmax_cross_entropy


def seed_softmax_cross_entropy(z, b, z_max, log_s, targets, scale, neg_scale):
    """The seed's loss: softmax as exp(z) / sum(exp(z)), nothing subtracted first, then its log."""
    xp = array_namespace(z)
    delta, _ = real_softmax_cross_entropy(z, b, z_max, log_s, targets, scale, neg_scale)
    logits = z + b
    return delta, (targets * xp.log(xp.exp(logits) / xp.sum(xp.exp(logits), axis=0))) * neg_scale


def test_doctor_passes_on_the_real_model_with_synthetic_data(synthetic: datasets.Dataset, cpu: Device) -> None:
    checks = run_checks(synthetic, cpu, TrainConfig())
    assert_only_fails(checks, set())
    assert all(c.detail == "" and c.value for c in checks)
    assert checks[INPUTS - 1].value == "min 0, max 1"


def test_doctor_passes_on_fashion_mnist_quickly(cpu: Device) -> None:
    ds = datasets.load("fashion-mnist", data_dir=FASHION_DIR, offline=True)
    start = time.perf_counter()
    checks = run_checks(ds, cpu, TrainConfig())
    seconds = time.perf_counter() - start
    assert_only_fails(checks, set())
    assert seconds < 30, f"the doctor took {seconds:.1f} s on Fashion-MNIST"


def test_doctor_passes_on_array_api_strict_as_it_must_on_cupy(synthetic: datasets.Dataset) -> None:
    # No GPU here: array-api-strict rejects the numpy-only habits (flat slices, slicing past
    # the end) that would break on cupy, and its arrays reach the host only through to_numpy.
    checks = run_checks(synthetic, strict_device(), TrainConfig(hidden=(8,)))
    assert_only_fails(checks, set())


def test_unscaled_inputs_fail_the_input_check(synthetic, cpu, monkeypatch) -> None:
    monkeypatch.setattr(DeviceData, "from_host", classmethod(unscaled_from_host))
    checks = run_checks(synthetic, cpu, TrainConfig())
    assert not checks[INPUTS - 1].passed and checks[INPUTS - 1].value == "min 0, max 255"
    assert "255" in checks[INPUTS - 1].detail
    assert checks[GRADIENTS - 1].passed and checks[BIASES - 1].passed  # the math itself is still right


def test_seed_uniform_init_fails_the_initial_loss_check(synthetic, cpu, monkeypatch) -> None:
    monkeypatch.setattr(initializers, "he_normal", seed_uniform_init)
    checks = run_checks(synthetic, cpu, TrainConfig())
    assert not checks[INIT_LOSS - 1].passed
    assert float(checks[INIT_LOSS - 1].value.split()[1].rstrip(",")) > 2.303 * 1.1
    assert checks[INPUTS - 1].passed and checks[GRADIENTS - 1].passed and checks[ACCURACY - 1].passed


def test_bias_gradients_summed_over_every_axis_fail_gradient_and_bias_checks(synthetic, cpu, monkeypatch) -> None:
    real = model.gradient_sums

    def summed_biases(params, x, targets):
        loss, grads = real(params, x, targets)
        xp = array_namespace(x)
        return loss, [g if i % 2 == 0 else xp.zeros_like(g) + xp.sum(g) for i, g in enumerate(grads)]

    monkeypatch.setattr(model, "gradient_sums", summed_biases)
    checks = run_checks(synthetic, cpu, TrainConfig())
    assert {GRADIENTS, BIASES} <= failed(checks)
    assert float(checks[GRADIENTS - 1].value.split()[2]) > 1e-3
    assert "live neurons get" in checks[BIASES - 1].value
    assert checks[INPUTS - 1].passed and checks[INIT_LOSS - 1].passed and checks[ACCURACY - 1].passed


def test_scalar_bias_gradient_fails_on_its_shape(synthetic, cpu, monkeypatch) -> None:
    real = model.gradient_sums

    def scalar_biases(params, x, targets):  # the seed's np.sum(dz): one number per layer
        loss, grads = real(params, x, targets)
        return loss, [g if i % 2 == 0 else np.sum(g) for i, g in enumerate(grads)]

    monkeypatch.setattr(model, "gradient_sums", scalar_biases)
    checks = run_checks(synthetic, cpu, TrainConfig())
    assert {GRADIENTS, BIASES} <= failed(checks)
    assert checks[BIASES - 1].value == "layer 1: gradient shape (), bias (16,)"


def test_accuracy_from_a_hidden_layer_fails_the_accuracy_check(synthetic, cpu, monkeypatch) -> None:
    real = model.evaluation_sums

    def hidden_accuracy(params, x, targets, labels):
        loss_sum, _ = real(params, x, targets, labels)
        xp = array_namespace(x)
        first_hidden = model.hidden_activations(params, x)[1]
        return loss_sum, [xp.sum(xp.astype(xp.argmax(first_hidden, axis=1) == labels, x.dtype))]

    monkeypatch.setattr(model, "evaluation_sums", hidden_accuracy)
    checks = run_checks(synthetic, cpu, TrainConfig())
    assert ACCURACY in failed(checks) and OVERFIT in failed(checks)  # the seed's printout never reached 1 either
    assert "10 output columns" in checks[ACCURACY - 1].value
    assert checks[GRADIENTS - 1].passed and checks[BIASES - 1].passed and checks[FIRST_STEPS - 1].passed


def test_unstable_softmax_on_raw_pixels_fails_the_first_steps(synthetic, cpu, monkeypatch) -> None:
    monkeypatch.setattr(DeviceData, "from_host", classmethod(unscaled_from_host))
    monkeypatch.setattr(model, "softmax_cross_entropy", seed_softmax_cross_entropy)
    checks = run_checks(synthetic, cpu, TrainConfig())
    first_steps = checks[FIRST_STEPS - 1]
    assert not first_steps.passed and ("nan" in first_steps.value or "inf" in first_steps.value)
    assert "softmax" in first_steps.detail
    assert checks[GRADIENTS - 1].passed  # on scaled inputs the unstable formula is still exact


def test_stable_softmax_alone_survives_raw_pixels_for_the_first_steps(synthetic, cpu, monkeypatch) -> None:
    # Guards the test above: its overflow comes from the unstable softmax, not from raw pixels alone.
    monkeypatch.setattr(DeviceData, "from_host", classmethod(unscaled_from_host))
    value = run_checks(synthetic, cpu, TrainConfig())[FIRST_STEPS - 1].value
    assert "nan" not in value and "inf" not in value


def test_negative_hidden_biases_fail_the_dead_relu_check(synthetic, cpu, monkeypatch) -> None:
    real = initializers.he_normal

    def dead_init(sizes, seed, dtype="float32"):
        params = real(sizes, seed, dtype)
        for bias in params[1:-2:2]:
            bias[:] = -10.0
        return params

    monkeypatch.setattr(initializers, "he_normal", dead_init)
    checks = run_checks(synthetic, cpu, TrainConfig())
    assert not checks[DEAD - 1].passed and checks[DEAD - 1].value == "dead fraction 1.00, 1.00"
    # Every hidden unit is off, so the logits are 0 and the loss is exactly ln 10: that check cannot see it.
    assert checks[INIT_LOSS - 1].passed and checks[GRADIENTS - 1].passed


def test_no_hidden_layers_passes_the_dead_relu_check(synthetic, cpu) -> None:
    checks = run_checks(synthetic, cpu, TrainConfig(hidden=()))
    assert checks[DEAD - 1].passed and checks[DEAD - 1].value == "no hidden layers"
    assert checks[GRADIENTS - 1].passed and checks[BIASES - 1].passed


def test_a_check_that_raises_fails_and_the_rest_still_run(synthetic, cpu, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise ValueError("shapes do not align")

    monkeypatch.setattr(model, "hidden_activations", broken)
    checks = run_checks(synthetic, cpu, TrainConfig())
    assert checks[DEAD - 1].value == "error" and "ValueError: shapes do not align" in checks[DEAD - 1].detail
    assert checks[INPUTS - 1].passed and len(checks) == 8


# --- the command -----------------------------------------------------------------------------


def doctor(*args: str) -> Result:
    """`gpunet doctor` on the synthetic dataset, on the CPU (a later --device wins)."""
    return invoke("doctor", "--dataset", "synthetic", "--device", "cpu", *args)


def test_command_prints_eight_passes_and_exits_0() -> None:
    result = doctor()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    passes = [line for line in lines if line.startswith("PASS")]
    assert len(passes) == 8 and passes[0] == "PASS  1. inputs scaled to [0, 1]  (min 0, max 1)"
    assert [line.split()[1] for line in passes] == [f"{n}." for n in range(1, 9)]
    assert lines[-1] == "8 checks: 8 passed"


def test_command_prints_the_failure_and_exits_1(monkeypatch) -> None:
    monkeypatch.setattr(initializers, "he_normal", seed_uniform_init)
    result = doctor()
    assert result.exit_code == 1, result.output
    fails = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert fails and fails[0].startswith("FAIL  2. loss at initialisation") and " — " in fails[0]
    assert result.output.splitlines()[-1] == f"8 checks: {8 - len(fails)} passed, {len(fails)} FAILED"


@pytest.mark.parametrize("args", [["--hidden", "16,x"], ["--hidden", "16,0"], ["--dtype", "float16"]])
def test_command_rejects_bad_options_before_loading_data(args: list[str], monkeypatch) -> None:
    monkeypatch.setattr(datasets, "load", lambda *a, **k: pytest.fail("data loaded despite a bad option"))
    one_line_error(doctor(*args), 2, args[0].removeprefix("--"))  # the option named


def test_command_reports_a_bad_device_as_a_device_error() -> None:
    one_line_error(doctor("--device", "cuda:x"), 1, "cuda:x")  # the later --device wins
