"""Training steps whose implicit solver raises are skipped like non-finite steps."""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax
import numpy as np
import pytest

import neuroude.train as train_module
from conftest import tiny_config, tiny_recording
from neuroude.build import build_model
from neuroude.data import Recording
from neuroude.errors import TrainingError
from neuroude.precision import cast_floating, precision_dtype
from neuroude.runs import RunFolder
from neuroude.train import fit, solver_failure_message

SPLIT = {"train": [0, 1, 2, 3, 4, 5], "validation": [6, 7], "test": [8, 9]}
# Trials whose first bin of channel 0 is masked; their backward pass fails (see FailingBackward).
MARKED_TRIALS = (0,)


class FailingBackward(eqx.Module):
    """A Gaussian observation whose log-likelihood has a NaN derivative on marked trials.

    A trial is marked by a masked first bin of channel 0. The log-likelihood is
    unchanged, but its cotangent with respect to the last latent state is NaN.
    That NaN enters the reverse pass of Kvaerno5's Newton solves, and lineax raises
    "A linear solver received non-finite (NaN or inf) input", the kind of error a
    Hodgkin-Huxley fit meets when its backward pass turns non-finite.
    """

    inner: eqx.Module

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def log_prob(self, y, x, mask):
        # sqrt has an infinite derivative at 0, and 0 * inf is NaN. Elsewhere the extra term is 0 with gradient 0.
        unmarked = mask[0, 0]
        zero_with_nan_gradient = 0.0 * jnp.sqrt(unmarked * x[-1, 0] ** 2)
        return self.inner.log_prob(y, x, mask) + zero_with_nan_gradient


def _marked_recording(marked) -> Recording:
    base = tiny_recording(n_time=8, n_channels=2)
    mask = np.ones(base.y.shape, bool)
    mask[list(marked), 0, 0] = False
    return Recording(y=base.y.astype(float), ts=base.ts, u=base.u, mask=mask, metadata={"source": "test"})


def _kvaerno_config(**training):
    return tiny_config(
        model={"drift": "linear", "latent_size": 2, "diffusion": "none", "observation": "gaussian"},
        solver={"method": "kvaerno5", "rtol": 1e-6, "atol": 1e-6},
        training={"precision": "float64", "steps": 5, "batch_size": 2, "eval_every": 5, "checkpoint_every": 5,
                  "max_nonfinite": 3, "warmup_steps": 0, **training},
    )


def _failing_model(config, recording):
    model = build_model(config, recording.n_channels, recording.n_inputs, jax.random.PRNGKey(0), 0.5)
    model = cast_floating(model, precision_dtype("float64"))
    return eqx.tree_at(lambda m: m.observation, model, FailingBackward(model.observation))


def _record_step_inputs(monkeypatch):
    """Make every training step store the parameters and optimiser state it starts from."""
    inputs = []
    real_make = train_module.make_train_step

    def recording_make(*args, **kwargs):
        real_step = real_make(*args, **kwargs)

        def step(params, opt_state, *rest):
            inputs.append((params, opt_state))
            return real_step(params, opt_state, *rest)

        return step

    monkeypatch.setattr(train_module, "make_train_step", recording_make)
    return inputs


def _leaves_equal(first, second) -> bool:
    pairs = zip(jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(second), strict=True)
    return all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in pairs)


def _real_lineax_error() -> Exception:
    """Return the error lineax raises for a non-finite linear solve, as an equinox-jitted step meets it."""

    @eqx.filter_jit
    def solve(matrix, vector):
        return lineax.linear_solve(lineax.MatrixLinearOperator(matrix), vector).value

    try:
        solve(jnp.eye(2), jnp.array([1.0, jnp.nan]))
    except Exception as error:  # noqa: BLE001 - the test inspects whatever lineax raised
        return error
    raise AssertionError("lineax solved a system with a NaN right-hand side without raising")


def test_solver_error_step_skipped(tmp_path, monkeypatch, caplog):
    config = _kvaerno_config()
    recording = _marked_recording(MARKED_TRIALS)
    batches = [train_module._minibatch(config.seed, step, np.asarray(SPLIT["train"]), 2) for step in range(5)]
    expected_failed = [bool(set(batch) & set(MARKED_TRIALS)) for batch in batches]
    # The seed's minibatches must mix failing and passing steps, or the test shows nothing.
    assert any(expected_failed)
    assert not all(expected_failed)

    inputs = _record_step_inputs(monkeypatch)
    # The validation score after the last step is not what this test checks, and compiling the Kvaerno5
    # forward solve for it took a fifth of the test's time, so it is a constant here.
    monkeypatch.setattr(train_module, "validation_metric", lambda *args: 0.0)
    run = RunFolder(tmp_path / "run")
    run.prepare(resume=False, overwrite=False)
    with jax.enable_x64(True):
        result = fit(_failing_model(config, recording), recording, config, SPLIT, run, quiet=True)

    history = result.state.history
    assert [row["solver_failed"] for row in history] == expected_failed
    assert [row["finite"] for row in history] == [not failed for failed in expected_failed]
    assert result.state.step == 5
    assert result.state.solver_failures == sum(expected_failed)
    assert result.state.nonfinite_total == sum(expected_failed)
    assert history[-1]["skipped_steps"] == sum(expected_failed)
    assert "solver_failed" in run.history.read_text().splitlines()[0]

    first_failure = expected_failed.index(True) + 1
    assert (f"step {first_failure}: the solver raised an error in the training step: "
            "A linear solver received non-finite (NaN or inf) input") in caplog.text
    assert "Above is the stack" not in caplog.text

    # Each step starts from what the previous one left, so a skipped step's start equals the next step's.
    assert len(inputs) == 5
    for step, failed in enumerate(expected_failed[:-1]):
        (params, opt_state), (next_params, next_opt_state) = inputs[step], inputs[step + 1]
        assert _leaves_equal(opt_state, next_opt_state) == failed, f"optimiser state after step {step + 1}"
        # The warm-up schedule gives the first update a learning rate of 0, so only later steps move the parameters.
        if failed or step > 0:
            assert _leaves_equal(params, next_params) == failed, f"parameters after step {step + 1}"


def test_solver_failure_message_matches_lineax():
    error = _real_lineax_error()
    message = solver_failure_message(error)
    assert isinstance(error, eqx.EquinoxRuntimeError)
    assert message is not None
    assert message.startswith("A linear solver received non-finite (NaN or inf) input")
    assert "\n" not in message


def test_solver_failure_message_ignores_others():
    assert solver_failure_message(RuntimeError("EquinoxRuntimeError: not from a JAX program")) is None
    assert solver_failure_message(ValueError("shapes do not match")) is None
    assert solver_failure_message(jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: out of memory")) is None


def test_solver_failure_message_reads_jax_error():
    # Outside eqx.filter_jit, XLA reports the callback's exception in its own error text.
    text = "INTERNAL: CpuCallback error: _EquinoxRuntimeError: The maximum number of solver steps was reached.\n\n\n---"
    message = solver_failure_message(jax.errors.JaxRuntimeError(text))
    assert message == "The maximum number of solver steps was reached."


def _raising_step(error):
    def make(*args, **kwargs):
        def step(*step_args):
            raise error

        return step

    return make


def test_repeated_solver_errors_stop_fit(tmp_path, monkeypatch, make_model):
    config = tiny_config(training={"max_nonfinite": 2, "steps": 6})
    monkeypatch.setattr(train_module, "make_train_step", _raising_step(_real_lineax_error()))
    run = RunFolder(tmp_path / "run")
    run.prepare(resume=False, overwrite=False)
    with pytest.raises(TrainingError) as stopped:
        fit(make_model(config), tiny_recording(), config, SPLIT, run, quiet=True)

    message = str(stopped.value)
    assert "2 training steps in a row were skipped (limit training.max_nonfinite = 2)" in message
    assert "the solver raised an error: A linear solver received non-finite" in message
    assert "solver.rtol and solver.atol" in message
    assert "training.learning_rate" in message
    assert "training.precision" in message


def test_other_runtime_errors_propagate(tmp_path, monkeypatch, make_model):
    config = tiny_config(training={"steps": 2})
    other = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: out of memory while allocating 1 GiB")
    monkeypatch.setattr(train_module, "make_train_step", _raising_step(other))
    run = RunFolder(tmp_path / "run")
    run.prepare(resume=False, overwrite=False)
    with pytest.raises(jax.errors.JaxRuntimeError, match="RESOURCE_EXHAUSTED"):
        fit(make_model(config), tiny_recording(), config, SPLIT, run, quiet=True)
