"""The training loop: reproducible, portable, honest about divergence, and it learns real data."""

from __future__ import annotations

import dataclasses
import itertools
import math
import signal
import time
import warnings
from dataclasses import replace

import numpy as np
import pytest

import gpunet.training.train as train_module
from gpunet.core import model
from gpunet.data import datasets
from gpunet.device.backend import Device
from gpunet.errors import ConfigError, DivergedError, Interrupted, NotLearning, StepFailed, WriteFailed
from gpunet.training.train import DeviceData, TrainConfig, Trainer, train
from tests.conftest import FASHION_DIR, numpy_device, strict_device
from tests.helpers import ended

QUICK = TrainConfig(iterations=30, eval_every=10)


def test_learns_the_synthetic_task(small: datasets.Dataset) -> None:
    result = train(QUICK, small, numpy_device())
    assert [r.iteration for r in result.history] == [0, 10, 20, 30]
    assert result.history[0].loss == pytest.approx(math.log(10), abs=0.05)
    assert result.final.loss < result.history[0].loss / 2
    assert result.final.test_accuracy > 0.9


def test_same_seed_same_run_and_another_seed_another(small: datasets.Dataset) -> None:
    config = TrainConfig(iterations=12, eval_every=4, batch_size=100)
    a = train(config, small, numpy_device())
    b = train(config, small, numpy_device())
    assert a.history == b.history
    for pa, pb in zip(a.params, b.params):
        np.testing.assert_array_equal(pa, pb)
    c = train(TrainConfig(iterations=12, eval_every=4, batch_size=100, seed=1), small, numpy_device())
    assert not np.array_equal(a.params[0], c.params[0])


def test_batch_size_changes_the_order_not_the_initial_weights(small: datasets.Dataset) -> None:
    full = train(TrainConfig(iterations=5, eval_every=5), small, numpy_device())
    mini = train(TrainConfig(iterations=5, eval_every=5, batch_size=64), small, numpy_device())
    assert full.history[0] == mini.history[0]
    assert full.history[-1] != mini.history[-1]


def test_minibatch_epochs_cover_every_sample_once(small: datasets.Dataset) -> None:
    split = DeviceData.from_host(small.train_images, small.train_labels, numpy_device(), "float64", 10)
    stream = train_module.BatchOrder(split, 250, np.random.default_rng(0), numpy_device())
    epoch = [next(stream) for _ in range(3)]  # 600 samples: 250 + 250 + 100
    assert [len(x) for x, _ in epoch] == [250, 250, 100]
    rows = np.concatenate([x for x, _ in epoch])
    order = np.lexsort(rows.T)
    np.testing.assert_array_equal(rows[order], split.x[np.lexsort(split.x.T)])


def test_training_runs_unchanged_on_array_api_strict(small: datasets.Dataset) -> None:
    """The loop, not only the math, is array-agnostic: batches, buffers and evaluation."""
    config = TrainConfig(iterations=6, eval_every=3, batch_size=250, dtype="float64", optimizer="momentum")
    strict = train(config, small, strict_device())
    reference = train(config, small, numpy_device())
    for s, r in zip(strict.history, reference.history):
        assert s.loss == pytest.approx(r.loss, rel=1e-12)
        assert s.test_accuracy == r.test_accuracy
    for s, r in zip(strict.params, reference.params):
        np.testing.assert_allclose(s, r, rtol=1e-10)


HOST_READS = ("__float__", "__int__", "__bool__", "__index__", "__complex__", "__array__", "__dlpack__")


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every way a device array reaches the host raises while the list returned holds True.

    array-api-strict arrays stand in for a GPU's: they never turn into numpy
    scalars behind the caller's back, so float(loss), bool(xp.any(...)),
    to_numpy(...) or np.asarray(...) in a step all go through one of these.
    """
    import array_api_strict

    cls = type(array_api_strict.asarray(0.0))
    armed = [False]
    for name in HOST_READS:
        real = getattr(cls, name)

        def guarded(self, *args, _real=real, _name=name, **kwargs):
            if armed[0]:
                raise AssertionError(f"a host read ({_name}) inside a training step")
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, guarded)
    return armed


@pytest.mark.parametrize(("optimizer", "batch_size"), [("gd", None), ("momentum", 250), ("adam", 250)])
def test_no_host_reads_between_evaluations(
    small: datasets.Dataset, host_reads: list[bool], batch_size, optimizer
) -> None:
    """Results travel to the host only at evaluations, loss checks and the end: a step never reads a device value."""
    config = TrainConfig(iterations=12, eval_every=5, batch_size=batch_size, optimizer=optimizer, dtype="float64")
    trainer = Trainer(config, small, strict_device())
    read_allowed = []
    for name in ("evaluate", "check_losses", "host_params"):
        real = getattr(trainer, name)

        def allowed(*args, _real=real, _name=name):
            host_reads[0] = False  # the places results are meant to travel
            read_allowed.append((_name, trainer.steps_done))
            try:
                return _real(*args)
            finally:
                host_reads[0] = True

        setattr(trainer, name, allowed)
    host_reads[0] = True
    result = trainer.run()
    host_reads[0] = False
    assert [r.iteration for r in result.history] == [0, 5, 10, 12]
    evaluations = [(n, s) for s in (5, 10, 12) for n in ("check_losses", "evaluate")]
    assert read_allowed == [("evaluate", 0), *evaluations, ("host_params", 12)]
    with pytest.raises(AssertionError, match="host read"):  # the guard itself works
        host_reads[0] = True
        float(trainer.step_losses[0])


def test_divergence_names_the_step(small: datasets.Dataset) -> None:
    config = TrainConfig(optimizer="gd", lr=1e30, iterations=50, eval_every=50)
    with pytest.raises(DivergedError) as caught:
        train(config, small, numpy_device())  # a plain function raises the problem of a run that did not finish
    err = caught.value
    assert 1 <= err.step < 50
    assert not math.isfinite(err.loss)
    assert "lower learning rate" in str(err)
    result = Trainer(config, small, numpy_device()).run()  # Trainer.run returns it, with what was done
    assert result.outcome is train_module.Outcome.DIVERGED and result.problem.step == err.step
    assert result.history[0].iteration == 0  # what was done before is kept


def test_the_recorded_metrics_are_the_models(small: datasets.Dataset) -> None:
    result = train(TrainConfig(iterations=10, eval_every=10, dtype="float64"), small, numpy_device())
    x = small.test_images / 255.0
    expected = np.mean(model.predict(result.params, x) == small.test_labels)
    assert result.final.test_accuracy == pytest.approx(expected)


def test_zero_iterations_evaluates_the_initial_network(small: datasets.Dataset) -> None:
    result = train(TrainConfig(iterations=0), small, numpy_device())
    assert [r.iteration for r in result.history] == [0]


@pytest.mark.slow
def test_learns_real_fashion_mnist() -> None:
    """The functional check: 200 full-batch Adam steps on all 60000 images reach 0.80 on the test set."""
    fashion = datasets.load("fashion-mnist", data_dir=FASHION_DIR, offline=True)
    result = train(TrainConfig(iterations=200, eval_every=50), fashion, numpy_device())
    assert result.history[0].loss == pytest.approx(math.log(10), abs=0.05)
    assert result.final.test_accuracy >= 0.80
    losses = [r.loss for r in result.history]
    assert losses == sorted(losses, reverse=True)


def test_a_run_that_never_evaluates_holds_a_bounded_loss_buffer_and_still_pins_divergence(
    small: datasets.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--iterations 10**12 --eval-every 10**12 allocates LOSS_SLOTS losses, not 10**12, and checks when full."""
    huge = 10**12
    assert Trainer(TrainConfig(iterations=huge, eval_every=huge), small, numpy_device()).step_losses.shape == (
        train_module.LOSS_SLOTS,
    )
    monkeypatch.setattr(train_module, "LOSS_SLOTS", 4)
    trainer = Trainer(TrainConfig(iterations=huge, eval_every=huge, optimizer="gd"), small, numpy_device())

    def poison_after_step_6(step: int) -> None:
        if step == 6:
            trainer.flat_params[:] = np.nan  # step 7 computes a NaN loss (of the parameters after 6 updates)

    info = ended(trainer.run(on_step=poison_after_step_6), DivergedError)
    assert info.value.step == 6 and trainer.steps_done == 8  # found when the buffer filled, at step 8


def test_a_network_too_big_for_the_memory_is_refused_before_allocating(small: datasets.Dataset) -> None:
    with pytest.raises(ConfigError, match="784-10000000000-10 alone need 127 TB, more than the"):
        Trainer(TrainConfig(hidden=(10**10,)), small, numpy_device())


# --- the loop's bookkeeping at cadences that are not the defaults ----------------------------------


@pytest.mark.parametrize(
    ("iterations", "eval_every", "save_every", "records", "saves"),
    [
        (10, 4, 3, [0, 4, 8, 10], [3, 6, 9, 10]),
        (7, 3, 2, [0, 3, 6, 7], [2, 4, 6, 7]),
        (9, 3, 3, [0, 3, 6, 9], [3, 6, 9]),
        (5, 10, None, [0, 5], [5]),  # --eval-every beyond the run: the start and the end only
        (1, 1, 5, [0, 1], [1]),
    ],
)
def test_records_and_checkpoints_land_on_exactly_their_steps(
    small: datasets.Dataset, iterations, eval_every, save_every, records, saves
) -> None:
    config = TrainConfig(iterations=iterations, eval_every=eval_every, batch_size=250)
    trainer = Trainer(config, small, numpy_device())
    saved: list[tuple[int, list[np.ndarray]]] = []
    stepped: list[int] = []
    result = trainer.run(
        on_step=stepped.append,
        save=lambda t: saved.append((t.steps_done, [p.copy() for p in t.host_params()])),
        save_every=save_every,
    )
    assert [r.iteration for r in result.history] == records
    assert [step for step, _ in saved] == saves
    assert stepped == list(range(1, iterations + 1))
    # Each checkpoint holds the parameters after exactly its step: a straight run stopped there agrees.
    for step, params in saved:
        straight = train(TrainConfig(iterations=step, eval_every=eval_every, batch_size=250), small, numpy_device())
        for a, b in zip(params, straight.params):
            np.testing.assert_array_equal(a, b)
    # The final record describes the final parameters, whatever the cadence.
    final = result.final
    assert final.iteration == iterations == trainer.steps_done
    again = Trainer(config, small, numpy_device())
    again.set_params(result.params)
    again.steps_done = iterations
    assert again.evaluate() == final
    assert result.summary()["iterations"] == iterations and result.summary()["final_loss"] == final.loss


# --- exact words and numbers: what a user reads, pinned (mutation testing found them loose) -------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 kB"),
        (1_234_567, "1.23 MB"),
        (1_001_000, "1 MB"),
        (999_499, "999 kB"),
        (999_999, "1 MB"),  # not "1e+03 kB"
        (999_500_000_000_000, "1 PB"),
        (2.5e9, "2.5 GB"),
        (3e12, "3 TB"),
        (1.234e18, "1,234 PB"),
    ],
)
def test_byte_size(n: float, text: str) -> None:
    assert train_module.byte_size(n) == text


def test_the_summary_holds_the_final_record_and_the_settings(small: datasets.Dataset) -> None:
    config = TrainConfig(hidden=(8,), optimizer="momentum", lr=0.02, iterations=3, batch_size=100, seed=4, eval_every=2)
    result = train(config, small, numpy_device())
    final = result.history[-1]
    assert result.summary() == {
        "test_accuracy": final.test_accuracy,
        "train_accuracy": final.train_accuracy,
        "final_loss": final.loss,
        "iterations": 3,
        "train_seconds": result.train_seconds,
        "device": "cpu",
        "dataset": "synthetic",
        "hidden": [8],
        "optimizer": "momentum",
        "lr": 0.02,
        "dtype": "float32",
        "seed": 4,
        "batch_size": 100,
        "eval_every": 2,
        "history": [
            {
                "iteration": r.iteration,
                "loss": r.loss,
                "train_accuracy": r.train_accuracy,
                "test_accuracy": r.test_accuracy,
            }
            for r in result.history
        ],
    }
    assert [r.iteration for r in result.history] == [0, 2, 3] and result.train_seconds > 0


@pytest.mark.parametrize(("batch_size", "rows"), [(None, 600), (250, 250), (1000, 600)])
def test_the_source_describes_its_schedule_for_the_rows_of_a_step(small: datasets.Dataset, batch_size, rows) -> None:
    trainer = Trainer(TrainConfig(iterations=1, batch_size=batch_size), small, numpy_device())
    assert trainer.source.describe() == trainer.engine.describe(rows)


def test_train_reports_each_record_and_step(small: datasets.Dataset) -> None:
    records, steps = [], []
    result = train(TrainConfig(iterations=4, eval_every=2), small, numpy_device(), records.append, steps.append)
    assert records == result.history and [r.iteration for r in records] == [0, 2, 4]
    assert steps == [1, 2, 3, 4]


def test_a_restored_batch_order_saves_the_same_state_before_any_step(small: datasets.Dataset) -> None:
    """A checkpoint written right after a resume (Ctrl-C at once) must resume the same way again."""
    split = DeviceData.from_host(small.train_images, small.train_labels, numpy_device(), "float64", 10)
    order = train_module.BatchOrder(split, 250, np.random.default_rng(0), numpy_device())
    for _ in range(4):
        next(order)
    saved = order.state()
    restored = train_module.BatchOrder(split, 250, np.random.default_rng(99), numpy_device())
    restored.restore(saved)
    assert restored.state() == saved
    np.testing.assert_array_equal(next(restored)[0], next(order)[0])


def _history(*points: tuple[int, float, float]) -> list[train_module.Record]:
    return [train_module.Record(step, loss, accuracy, accuracy) for step, loss, accuracy in points]


@pytest.mark.parametrize(
    ("points", "flagged"),
    [
        ([(0, 2.0, 0.07), (10, 30.0, 0.1)], True),  # two records are enough to see a blow-up
        ([(0, 2.0, 0.07), (10, 3.0, 0.5), (20, 3.0, 0.9)], False),  # ends at 1.5x: not above it
        ([(0, 2.0, 0.07), (10, 3.0, 0.5), (20, 2.0, 0.1)], False),  # at chance, but never above 1.5x
        ([(0, 2.0, 0.07), (10, 9.0, 0.5), (20, 2.0, train_module.CHANCE_FACTOR / 10)], True),  # exactly at chance
        ([(0, 2.0, 0.07), (10, 9.0, 0.5), (20, 0.5, 0.85)], False),  # blew up, then learned after all
    ],
)
def test_the_not_learning_rule_at_its_edges(points, flagged: bool) -> None:
    assert (train_module.learning_failure(_history(*points), 10, 1.0) is not None) == flagged


def test_a_steps_loss_is_the_mean_loss_of_the_parameters_it_started_from(small: datasets.Dataset) -> None:
    """What divergence checks and the not-learning rule read: in full batch, the loss of the parameters before it."""
    trainer = Trainer(TrainConfig(iterations=3, eval_every=3, dtype="float64"), small, numpy_device())
    for k in range(3):
        before = trainer.evaluate().loss
        trainer.step()
        assert float(trainer.step_losses[k]) == pytest.approx(before, rel=1e-12)


def test_the_not_learning_message_in_full() -> None:
    blown = _history((0, 2.0, 0.07), (10, 9.0, 0.5), (20, 2.0, 0.1))
    assert train_module.learning_failure(blown, 10, 50.0) == (
        "not learning: the training loss went from 2 to 2 and train accuracy is 0.1000, chance level for 10 classes"
        "; the loss took off at step 10; try a lower learning rate, such as --lr 5 "
        "(gpunet doctor checks the network itself)"
    )
    ended_high = _history((0, 2.0, 0.07), (10, 30.0, 0.5))
    assert train_module.learning_failure(ended_high, 10, 0.3, took_off_at=4) == (
        "not learning: the training loss went from 2 to 30; the loss took off at step 4; "
        "try a lower learning rate, such as --lr 0.03 (gpunet doctor checks the network itself)"
    )


# --- the loop's decisions, each seen from outside (mutation testing's second run found them loose) -


class ScriptedSource:
    """A training-set source whose step losses and evaluations are given: the trainer's rules under test.

    Its gradients are zero, so the parameters stay the initial ones; `fail` maps a gradient call
    (counted from 1) to the exception it raises instead, as a cluster's source may.
    """

    def __init__(self, trainer_sizes: list[int], losses: list[float], evaluations: list[tuple[float, float]]) -> None:
        self.size = sum(a * b + b for a, b in itertools.pairwise(trainer_sizes))
        self.losses, self.evaluations = iter(losses), iter(evaluations)
        self.fail: dict[int, Exception] = {}
        self.calls = 0

    def gradient(self, params: list) -> tuple:
        self.calls += 1
        if self.calls in self.fail:
            raise self.fail[self.calls]
        return np.float32(next(self.losses)), np.zeros(self.size, np.float32)

    def evaluate(self, params: list) -> tuple:
        loss, accuracy = next(self.evaluations)
        return np.float32(loss), np.float32(accuracy)

    def close(self) -> None:
        pass


def scripted_trainer(small: datasets.Dataset, config: TrainConfig, losses, evaluations) -> Trainer:
    sizes = train_module.layer_sizes(config, small)
    return Trainer(config, small, numpy_device(), source=ScriptedSource(sizes, losses, evaluations))


def test_the_not_learning_verdict_names_the_first_step_whose_loss_took_off(small: datasets.Dataset) -> None:
    """Step 5's loss (of the parameters after 4 updates) is the first above 1.5x the start: 'step 4'."""
    config = TrainConfig(iterations=6, eval_every=3, lr=5.0)
    trainer = scripted_trainer(small, config, [2.0, 2.0, 2.0, 2.0, 9.0, 9.0], [(2.0, 0.1)] * 3)
    caught = ended(trainer.run(), NotLearning)
    assert caught.value.for_flags() == (
        "not learning: the training loss went from 2 to 2 and train accuracy is 0.1000, chance level for 10 classes"
        "; the loss took off at step 4; try a lower learning rate, such as --lr 0.5 "
        "(gpunet doctor checks the network itself)"
    )
    assert trainer.took_off_at == 4


def test_a_loss_of_exactly_one_and_a_half_times_the_start_has_not_taken_off(small: datasets.Dataset) -> None:
    trainer = scripted_trainer(small, TrainConfig(iterations=4, eval_every=2), [3.0] * 4, [(2.0, 0.1)] * 3)
    result = trainer.run()  # at chance, but the loss never rose above the limit: a slow learner
    assert trainer.took_off_at is None and trainer.step_loss_curve == [3.0] * 4
    assert [r.iteration for r in result.history] == [0, 2, 4]


def test_losses_checked_before_any_evaluation_are_only_checked_for_being_finite(small: datasets.Dataset) -> None:
    """A caller stepping by hand (as `gpunet train --resume` tests do) has no start to compare with."""
    trainer = Trainer(TrainConfig(iterations=10, eval_every=5), small, numpy_device())
    trainer.step()
    trainer.step()
    trainer.check_losses()
    assert len(trainer.step_loss_curve) == 2 and trainer.took_off_at is None


def test_losses_left_unchecked_past_the_buffer_are_a_callers_error(small: datasets.Dataset) -> None:
    trainer = Trainer(TrainConfig(iterations=10, eval_every=2), small, numpy_device())
    for _ in range(3):
        trainer.step()
    with pytest.raises(RuntimeError) as caught:
        trainer.check_losses()
    assert str(caught.value) == "check_losses() must run at least every eval_every steps"


@pytest.mark.parametrize(
    ("iterations", "eval_every", "dtype", "slots"),
    [(100, 10, "float32", 10), (3, 10, "float64", 3), (1, 10, "float32", 1), (0, 10, "float32", 1)],
)
def test_the_loss_buffer_holds_one_loss_per_step_between_checks_in_the_runs_dtype(
    small: datasets.Dataset, iterations: int, eval_every: int, dtype: str, slots: int
) -> None:
    """The device memory a run holds for its losses: no more steps than it can take between two checks."""
    losses = Trainer(TrainConfig(iterations=iterations, eval_every=eval_every, dtype=dtype), small, numpy_device())
    assert losses.step_losses.shape == (slots,) and losses.step_losses.dtype == np.dtype(dtype)


def test_a_run_without_a_test_split_records_nan_test_accuracy(small: datasets.Dataset) -> None:
    """What a fit on arrays (the Python API) trains on: no held-out set."""
    arrays = dataclasses.replace(small, test_images=None, test_labels=None)
    result = train(TrainConfig(iterations=2, eval_every=2), arrays, numpy_device())
    with_test = train(TrainConfig(iterations=2, eval_every=2), small, numpy_device())
    for r, w in zip(result.history, with_test.history, strict=True):
        assert (r.iteration, r.loss, r.train_accuracy) == (w.iteration, w.loss, w.train_accuracy)
        assert math.isnan(r.test_accuracy) and not math.isnan(w.test_accuracy)


@pytest.mark.parametrize("device", [numpy_device(), strict_device()], ids=["numpy", "array-api-strict"])
def test_when_the_training_set_cannot_evaluate_the_test_split_vouches_for_the_saved_state(
    small: datasets.Dataset, device: Device
) -> None:
    """The source fails at the evaluation after step 3 (a cluster gone): step 3 is still saved, its loss
    shown finite on the test split."""
    config = TrainConfig(iterations=6, eval_every=3)
    trainer = Trainer(config, small, device)
    real_evaluate, calls = trainer.source.evaluate, []

    def fails_after_the_first(params):
        calls.append(trainer.steps_done)
        if len(calls) > 1:
            raise StepFailed("the cluster lost every worker")
        return real_evaluate(params)

    trainer.source.evaluate = fails_after_the_first
    saved = []
    caught = ended(trainer.run(save=lambda t: saved.append((t.steps_done, t.host_params()))), StepFailed)
    assert str(caught.value) == "the cluster lost every worker" and calls == [0, 3, 3]
    assert [step for step, _ in saved] == [3]
    straight = train(replace(config, iterations=3), small, device)  # what step 3 holds
    for a, b in zip(saved[0][1], straight.params, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_stopped_runs_state_that_overflows_is_not_saved_and_the_divergence_reported(small: datasets.Dataset) -> None:
    """As above, but the parameters after step 3 overflow: a divergence at step 3, quietly (no numpy
    warnings burying the message), and nothing saved."""
    trainer = Trainer(TrainConfig(iterations=6, eval_every=3), small, numpy_device())
    real_evaluate = trainer.source.evaluate
    trainer.source.evaluate = lambda params: (
        real_evaluate(params) if trainer.steps_done == 0 else (_ for _ in ()).throw(StepFailed("gone"))
    )

    def overflow_after_step_3(step: int) -> None:
        if step == 3:
            trainer.flat_params[:] = 1e30  # the logits overflow to inf, then inf - inf is NaN

    saved = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        caught = ended(
            trainer.run(on_step=overflow_after_step_3, save=lambda t: saved.append(t.steps_done)), DivergedError
        )
    assert caught.value.step == 3 and math.isnan(caught.value.loss) and saved == []
    assert caught.result.history[-1].iteration == 0


def test_a_diverging_run_reports_its_step_without_numpy_warnings(small: datasets.Dataset) -> None:
    config = TrainConfig(optimizer="gd", lr=1e30, iterations=20, eval_every=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DivergedError):
            train(config, small, numpy_device())


@pytest.mark.parametrize(("signum", "text", "code"), [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "Ctrl-C", 130)])
def test_a_stop_signal_ends_the_run_after_its_step_with_that_step_saved(
    small: datasets.Dataset, signum: int, text: str, code: int
) -> None:
    trainer = Trainer(TrainConfig(iterations=10, eval_every=5), small, numpy_device())

    def stop_at_step_3(step: int) -> None:
        if step == 3:
            signal.raise_signal(signum)  # asks the loop to stop; the step is finished first

    saved = []
    caught = ended(trainer.run(on_step=stop_at_step_3, save=lambda t: saved.append(t.steps_done)), Interrupted)
    assert str(caught.value) == f"interrupted by {text} after step 3" and caught.value.exit_code == code
    assert caught.value.step == 3 and saved == [3] and trainer.steps_done == 3


def test_a_step_abandoned_for_a_signal_is_an_interruption_after_the_last_step(small: datasets.Dataset) -> None:
    """A cluster's source gives a step up when SIGTERM asks to stop: the user reads an interruption."""
    config = TrainConfig(iterations=10, eval_every=5)
    sizes = train_module.layer_sizes(config, small)
    source = ScriptedSource(sizes, [2.3] * 10, [(2.3, 0.1)] * 3)
    source.fail[4] = train_module.StepAbandoned(signal.SIGTERM)
    trainer = Trainer(config, small, numpy_device(), source=source)
    saved = []
    caught = ended(trainer.run(save=lambda t: saved.append(t.steps_done)), Interrupted)
    assert str(caught.value) == "interrupted by SIGTERM after step 3" and caught.value.exit_code == 143
    assert caught.value.step == 3 and saved == [3]


def test_a_step_abandoned_says_for_which_signal() -> None:
    abandoned = train_module.StepAbandoned(signal.SIGTERM)
    assert abandoned.signum == signal.SIGTERM and str(abandoned) == "abandoned for signal 15"


def test_a_save_that_fails_is_kept_as_the_error_and_retried_at_the_end(small: datasets.Dataset) -> None:
    trainer = Trainer(TrainConfig(iterations=4, eval_every=2), small, numpy_device())
    failure = WriteFailed("c.npz", "disk full")
    attempts = []

    def full_disk(t: Trainer) -> None:
        attempts.append(t.steps_done)
        raise failure

    result = trainer.run(save=full_disk, save_every=2)  # training goes on
    assert attempts == [2, 4, 4] and result.final.iteration == 4
    assert trainer.save_error is failure and trainer.last_saved_step is None


def test_a_run_that_saves_nothing_has_no_save_error(small: datasets.Dataset) -> None:
    trainer = Trainer(TrainConfig(iterations=2, eval_every=2), small, numpy_device())
    trainer.run()
    assert trainer.save_error is None and trainer.last_saved_step is None


def test_train_seconds_is_the_time_the_run_took(small: datasets.Dataset) -> None:
    began = time.perf_counter()
    result = train(TrainConfig(iterations=2, eval_every=2), small, numpy_device())
    assert 0 < result.train_seconds <= time.perf_counter() - began


def test_rows_that_are_not_pixels_are_used_as_given_and_not_copied_when_their_dtype_fits() -> None:
    rows = np.linspace(-3.0, 300.0, 12).reshape(3, 4)  # float64, outside [0, 1]: not scaled
    as_float32 = train_module.device_rows(rows, numpy_device(), "float32")
    assert as_float32.dtype == np.float32
    np.testing.assert_array_equal(as_float32, rows.astype(np.float32))
    as_float64 = train_module.device_rows(rows, numpy_device(), "float64")
    assert as_float64 is rows  # never written to: the caller's own array serves


def test_labels_go_to_the_device_as_int64_copied_only_when_they_are_not() -> None:
    rows = np.zeros((3, 4), np.uint8)
    labels = np.array([2, 0, 1])  # int64 already
    split = DeviceData.from_host(rows, labels, numpy_device(), "float32", 3)
    assert split.labels is labels
    np.testing.assert_array_equal(split.targets, np.eye(3, dtype=np.float32)[labels])
    from_uint8 = DeviceData.from_host(rows, labels.astype(np.uint8), numpy_device(), "float32", 3)
    assert from_uint8.labels.dtype == np.int64
    np.testing.assert_array_equal(from_uint8.labels, labels)


@pytest.mark.parametrize("batch_size", [600, 700])
def test_a_batch_as_large_as_the_training_set_is_the_full_batch(small: datasets.Dataset, batch_size: int) -> None:
    """600 rows of 784 features: 600 or 700 rows per batch means the whole set, unshuffled, each step."""
    split = DeviceData.from_host(small.train_images, small.train_labels, numpy_device(), "float32", 10)
    order = train_module.BatchOrder(split, batch_size, np.random.default_rng(0), numpy_device())
    assert order.batch_size is None
    for _ in range(2):
        x, targets = next(order)
        assert x is split.x and targets is split.targets


def test_each_epoch_of_mini_batches_covers_every_sample_once(small: datasets.Dataset) -> None:
    split = DeviceData.from_host(small.train_images, small.train_labels, numpy_device(), "float64", 10)
    stream = train_module.BatchOrder(split, 250, np.random.default_rng(0), numpy_device())
    batches = [next(stream)[0] for _ in range(6)]  # two epochs of 250 + 250 + 100
    assert [len(x) for x in batches] == [250, 250, 100] * 2
    everything = split.x[np.lexsort(split.x.T)]
    for epoch in (batches[:3], batches[3:]):
        rows = np.concatenate(epoch)
        np.testing.assert_array_equal(rows[np.lexsort(rows.T)], everything)


def test_the_batch_order_is_the_seeds_first_child_stream(small: datasets.Dataset) -> None:
    """What the PyTorch reference draws too: numpy's SeedSequence(seed).spawn(1)[0], not the weights' stream."""
    trainer = Trainer(TrainConfig(iterations=1, batch_size=250, seed=3), small, numpy_device())
    expected = np.random.default_rng(np.random.SeedSequence(3).spawn(1)[0]).permutation(600)
    x, _ = next(trainer.source.order)
    np.testing.assert_array_equal(x, trainer.source.data.x[expected[:250]])


class SmallMemory(Device):
    def memory_bytes(self) -> int:
        return 807 * 4 * 4  # 784-1-1-10 has 807 parameters; float32, with a gradient and Adam's two vectors


def test_a_network_that_exactly_fits_the_memory_is_accepted_and_one_a_bit_bigger_refused() -> None:
    device = SmallMemory("cpu", np)
    train_module.check_fits(TrainConfig(hidden=(1, 1)), [784, 1, 1, 10], device)
    with pytest.raises(ConfigError) as caught:
        train_module.check_fits(TrainConfig(hidden=(1, 2)), [784, 1, 2, 10], device)
    assert str(caught.value) == (
        "--hidden 1,2: the parameters, gradient and adam state of 784-1-2-10 alone need 13.1 kB, "
        "more than the 12.9 kB of memory on cpu"
    )
    gd = TrainConfig(hidden=(1, 2), optimizer="gd")  # no optimizer state: half the vectors
    train_module.check_fits(gd, [784, 1, 2, 10], device)
