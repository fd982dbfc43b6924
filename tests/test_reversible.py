"""Reversible Heun: convergence to known solutions, and its rebuilt backward pass against plain autodiff."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import neuroude.model as model_module
from conftest import tiny_config, tiny_recording
from neuroude.build import build_model
from neuroude.config import TrainingConfig
from neuroude.dynamics import trainable_filter
from neuroude.reversible import parasitic_growth, solve_reversible_heun, stability_warning
from neuroude.solve import brownian_increments, solve_fixed_step
from neuroude.streaming import can_stream
from neuroude.train import make_optimizer, make_train_step

MU, SIGMA, X0, T = 1.0, 0.5, 1.0, 1.0


def gbm_fields(t, x, k, frac):
    return MU * x, SIGMA * x, jnp.zeros(())


def gbm_strong_error(n_substeps: int, n_paths: int = 2000) -> float:
    """Mean |numeric - exact| at T for geometric Brownian motion, read as a Stratonovich SDE."""

    def one(key):
        path, _ = solve_reversible_heun(gbm_fields, jnp.array([X0]), 0.0, T, 2, n_substeps, key)
        w_end = jnp.sum(brownian_increments(key, jnp.arange(1), n_substeps, 1, T / n_substeps, jnp.float32))
        # The Stratonovich solution of dx = MU x dt + SIGMA x o dW on the same Brownian path.
        return jnp.abs(path[-1, 0] - X0 * jnp.exp(MU * T + SIGMA * w_end))

    errors = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(0), n_paths))
    return float(jnp.mean(errors))


def test_strong_error_shrinks_on_gbm():
    errors = [gbm_strong_error(n) for n in (4, 16, 64)]
    order = np.polyfit(np.log([T / 4, T / 16, T / 64]), np.log(errors), 1)[0]
    # Heun-type Stratonovich schemes reach strong order 0.5 for general noise, and GBM's scalar noise commutes.
    assert order > 0.45, f"strong order {order:.2f}, errors {errors}"
    assert errors[-1] < 0.01, f"errors {errors}"


def decay_fields(t, x, k, frac):
    return -2.0 * x, jnp.zeros_like(x), jnp.zeros(())


def test_ode_converges_at_second_order():
    exact = np.exp(-2.0 * 0.1 * np.arange(11))
    errors = []
    for n_substeps in (1, 2, 4, 8):
        path, _ = solve_reversible_heun(decay_fields, jnp.array([1.0]), 0.0, 0.1, 11, n_substeps, None)
        errors.append(float(np.max(np.abs(np.asarray(path[:, 0]) - exact))))
    order = np.polyfit(np.log([1, 2, 4, 8]), -np.log(errors), 1)[0]
    assert 1.7 < order < 2.3, f"order {order:.2f}, errors {errors}"
    assert errors[-1] < 1e-4


class NoisyFields(eqx.Module):
    """A drift, a state-dependent diffusion and a KL rate that all depend on parameters."""

    rate: jax.Array
    scale: jax.Array

    def __call__(self, t, x, k, frac):
        drift = -self.rate * jnp.sin(x) + 0.3 * t + 0.1 * k
        diffusion = self.scale * (1.0 + 0.2 * x**2)
        return drift, diffusion, 0.5 * jnp.sum((drift / diffusion) ** 2)


def noisy_fields(dtype):
    return NoisyFields(jnp.array([1.0, 2.0], dtype), jnp.array([0.3, 0.2], dtype))


def test_path_matches_heun_as_step_shrinks():
    fields, x0, key = noisy_fields(jnp.float32), jnp.array([0.5, -0.2]), jax.random.PRNGKey(1)
    gaps = []
    for n_substeps in (4, 64):
        heun, heun_kl = solve_fixed_step(fields, x0, 0.0, 0.1, 11, n_substeps, key, "heun")
        reversible, reversible_kl = solve_reversible_heun(fields, x0, 0.0, 0.1, 11, n_substeps, key)
        gaps.append(float(jnp.max(jnp.abs(heun - reversible))))
        np.testing.assert_allclose(float(reversible_kl), float(heun_kl), rtol=1e-2)
    assert gaps[1] < 0.1 * gaps[0], f"gaps {gaps}"


def weighted_loss(arguments, reconstruct: bool):
    fields, x0, key = arguments
    path, path_kl = solve_reversible_heun(fields, x0, 0.0, 0.1, 9, 3, key, first_bin=2, reconstruct=reconstruct)
    weights = jnp.arange(path.shape[0], dtype=path.dtype)[:, None]
    return jnp.sum(jnp.cos(path) * weights) + path_kl


@pytest.mark.parametrize("dtype,rtol", [(jnp.float32, 1e-4), (jnp.float64, 1e-10)])
def test_rebuilt_gradient_matches_autodiff(dtype, rtol):
    with jax.enable_x64(dtype == jnp.float64):
        arguments = (noisy_fields(dtype), jnp.array([0.5, -0.2], dtype), jax.random.PRNGKey(2))
        rebuilt = eqx.filter_jit(eqx.filter_grad(lambda a: weighted_loss(a, True)))(arguments)
        direct = eqx.filter_jit(eqx.filter_grad(lambda a: weighted_loss(a, False)))(arguments)
        for name, got, want in zip(("rate", "scale", "x0"), jax.tree_util.tree_leaves(rebuilt),
                                   jax.tree_util.tree_leaves(direct)):
            assert got.dtype == dtype
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=rtol, err_msg=name)


class Decay(eqx.Module):
    rate: jax.Array

    def __call__(self, t, x, k, frac):
        return -self.rate * jnp.sin(x), jnp.zeros_like(x), jnp.zeros((), x.dtype)


def test_ode_gradient_matches_autodiff_without_key():
    def loss(rate, reconstruct):
        path, _ = solve_reversible_heun(Decay(rate), jnp.array([0.5, -0.2]), 0.0, 0.1, 6, 2, None, reconstruct=reconstruct)
        return jnp.sum(path**2)

    rate = jnp.array([1.0, 2.0])
    np.testing.assert_allclose(jax.grad(loss)(rate, True), jax.grad(loss)(rate, False), rtol=1e-5)


@pytest.fixture(scope="module")
def reversible_config():
    return tiny_config(solver={"method": "reversible_heun", "n_substeps": 2})


@pytest.fixture(scope="module")
def reversible_model(reversible_config):
    recording = tiny_recording()
    return build_model(reversible_config, recording.n_channels, recording.n_inputs, jax.random.PRNGKey(0), 0.5)


def test_model_loss_gradient_matches_autodiff(reversible_model, monkeypatch):
    recording = tiny_recording()
    model = reversible_model
    y, u = jnp.asarray(recording.y[:4]), jnp.asarray(recording.u[:4])
    params, static = eqx.partition(model, trainable_filter(model))

    def gradient(params):
        def loss(params):
            model = eqx.combine(params, static)
            return model.loss(y, u, jnp.ones_like(y), 0.0, 0.01, jax.random.PRNGKey(3), 1.0, 2)[0]

        return eqx.filter_jit(jax.grad(loss))(params)

    rebuilt = gradient(params)
    monkeypatch.setattr(model_module, "solve_reversible_heun",
                        functools.partial(solve_reversible_heun, reconstruct=False))
    direct = gradient(params)
    for got, want in zip(jax.tree_util.tree_leaves(rebuilt), jax.tree_util.tree_leaves(direct)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-3, atol=1e-5)


def test_training_steps_update_parameters(reversible_model):
    recording = tiny_recording()
    model = reversible_model
    params, static = eqx.partition(model, trainable_filter(model))
    optimizer = make_optimizer(TrainingConfig(warmup_steps=0))
    opt_state = optimizer.init(params)
    step = make_train_step(static, optimizer, 0.0, 0.01, 1)
    y, u = jnp.asarray(recording.y), jnp.asarray(recording.u)
    start = params
    for i in range(3):
        params, opt_state, terms, finite, _ = step(params, opt_state, y, u, jnp.ones_like(y), jax.random.PRNGKey(i),
                                                   jnp.float32(1.0))
        assert bool(finite), f"step {i}: {terms}"
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(start), jax.tree_util.tree_leaves(params))]
    assert all(changed)


def with_noise(model, scale=0.1):
    """Return `model` with noise on every parameter, so the posterior correction and the path KL are not zero."""
    leaves, tree = jax.tree_util.tree_flatten(model)
    keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [
        leaf + scale * jax.random.normal(key, leaf.shape, leaf.dtype) if eqx.is_inexact_array(leaf) else leaf
        for leaf, key in zip(leaves, keys)
    ])


def test_streamed_loss_and_gradients_match_whole_trial():
    # 23 bins in segments of 5: the last segment runs past the trial's end, and the segments must pass on z.
    # A slow leak (1 s) keeps the parasitic mode of reversible Heun small over the trial.
    def make(checkpoint_bins):
        config = tiny_config(model={"interpolation": "linear", "drift_time_constant": 1.0},
                             solver={"method": "reversible_heun", "n_substeps": 2, "checkpoint_bins": checkpoint_bins})
        return with_noise(build_model(config, 3, 1, jax.random.PRNGKey(0), 0.5))

    whole, streamed = make(0), make(5)
    assert can_stream(streamed)
    assert not can_stream(whole)
    recording = tiny_recording(n_trials=3, n_time=23)
    y, u = jnp.asarray(recording.y, jnp.float32), jnp.asarray(recording.u, jnp.float32)

    @eqx.filter_jit
    def loss_and_grad(model):
        def loss(model):
            return model.loss(y, u, jnp.ones_like(y), 0.0, 0.01, jax.random.PRNGKey(3), 1.0, 2)

        return eqx.filter_value_and_grad(loss, has_aux=True)(model)

    (want_loss, want_terms), want_grads = loss_and_grad(whole)
    (loss, terms), grads = loss_and_grad(streamed)

    assert float(want_terms["kl_path"]) > 0.0
    for name, value in want_terms.items():
        np.testing.assert_allclose(terms[name], value, rtol=2e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=2e-5)
    want_leaves = jax.tree_util.tree_leaves(want_grads)
    assert all(float(jnp.max(jnp.abs(leaf))) > 0 for leaf in want_leaves)
    for got, want in zip(jax.tree_util.tree_leaves(grads), want_leaves):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(want)) + 1e-3))


def test_decay_excites_growing_parasitic_mode():
    # For dx/dt = -lam x a step is linear in (y, z) with determinant -1, so one eigenvalue has modulus
    # a + sqrt(1 + a^2) > 1 (a = lam h): the method cannot damp a decaying solution, whatever the step.
    lam, step = 50.0, 0.01
    fields = lambda t, x, k, frac: (-lam * x, jnp.zeros_like(x), jnp.zeros(()))  # noqa: E731
    path, _ = solve_reversible_heun(fields, jnp.array([1.0]), 0.0, step, 41, 1, None)
    error = np.abs(np.asarray(path[:, 0]) - np.exp(-lam * step * np.arange(41)))
    a = lam * step
    np.testing.assert_allclose(error[40] / error[39], a + np.sqrt(1 + a**2), rtol=1e-3)
    # The growth that the fitting workflow's warning predicts is the one the solver shows.
    rate, growth = parasitic_growth(jnp.array([[-lam]]), step, 10)
    assert rate == pytest.approx(lam)
    np.testing.assert_allclose(error[40] / error[30], growth, rtol=1e-3)


def test_stability_warning_for_fast_decay(reversible_model):
    # The drift's leak alone decays at 1 / 0.02 s (the default time constant): 100 steps of 5 ms let the
    # parasitic mode grow about 10^10 times, the 2 steps of one bin 1.6 times.
    warning = stability_warning(reversible_model, 51, 0.01)
    assert "solver.method 'reversible_heun'" in warning
    assert "51 bins" in warning
    assert stability_warning(reversible_model, 2, 0.01) is None
