"""Multiplicative noise and the Ito-Stratonovich drift conversion.

The conversion is checked on geometric Brownian motion (GBM),
`dX = mu X dt + s X dW` in the Ito sense, whose exact solution on a Brownian
path is `X_T = X_0 exp((mu - s^2 / 2) T + s W_T)` and whose mean is
`X_0 exp(mu T)`. Read in the Stratonovich sense, the same equation has mean
`X_0 exp((mu + s^2 / 2) T)`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.dynamics.neural import AdditiveDiffusion, MultiplicativeDiffusion
from neuroude.dynamics.noise import (
    ConvertedDrift,
    ito_stratonovich_correction,
    ito_to_stratonovich_drift,
    stratonovich_to_ito_drift,
)
from neuroude.errors import ConfigError
from neuroude.solve import brownian_increments, solve_fixed_step

NO_INPUT = jnp.zeros((0,), jnp.float32)

GROWTH_RATE = 0.5  # mu, 1/s
NOISE_SCALE = 0.5  # s, 1/sqrt(s)
DURATION = 1.0  # T, s
N_STEPS = 200
N_PATHS = 20_000
# The floor adds noise of 1e-6 per sqrt(s) to GBM, far below every tolerance here.
FLOOR = 1e-6


class LinearGrowth(eqx.Module):
    rate: float

    def __call__(self, t, x, u):
        return self.rate * x


class CoupledDiffusion(eqx.Module):
    """sigma(x) = (x0 x1, x0 + 2 x1^2): each scale depends on both states."""

    def __call__(self, t, x, u):
        return jnp.stack([x[0] * x[1], x[0] + 2.0 * x[1] ** 2])


# -- MultiplicativeDiffusion ------------------------------------------------------------------------------


def test_multiplicative_diffusion_values():
    diffusion = MultiplicativeDiffusion(3, scale=0.2, floor=1e-3)
    x = jnp.array([-2.0, 0.0, 0.5], jnp.float32)
    np.testing.assert_allclose(np.asarray(diffusion(0.0, x, NO_INPUT)), [0.401, 0.001, 0.101], rtol=1e-5)


def test_multiplicative_diffusion_scale_is_learnable():
    diffusion = MultiplicativeDiffusion(2, scale=0.2)
    x = jnp.array([-2.0, 0.5], jnp.float32)
    gradient = eqx.filter_grad(lambda d: jnp.sum(d(0.0, x, NO_INPUT)))(diffusion)
    # d sigma_i / d r_i = |x_i| * sigmoid(r_i), and softplus(r) = 0.2 gives sigmoid(r) = 1 - exp(-0.2).
    np.testing.assert_allclose(np.asarray(gradient.raw_scale), np.array([2.0, 0.5]) * (1 - np.exp(-0.2)), rtol=1e-5)


@pytest.mark.parametrize(("scale", "floor", "message"), [(0.0, 1e-3, "scale"), (0.1, 0.0, "floor"), (0.1, -1.0, "floor")])
def test_multiplicative_diffusion_rejects_bad_arguments(scale, floor, message):
    with pytest.raises(ConfigError, match=message):
        MultiplicativeDiffusion(2, scale=scale, floor=floor)


# -- the correction term ----------------------------------------------------------------------------------


def test_correction_of_multiplicative_noise():
    diffusion = MultiplicativeDiffusion(3, scale=0.2, floor=1e-3)
    x = jnp.array([-2.0, 0.7, 0.5], jnp.float32)
    sigma = 0.2 * np.abs(np.asarray(x)) + 1e-3
    expected = 0.5 * sigma * 0.2 * np.sign(np.asarray(x))
    np.testing.assert_allclose(np.asarray(ito_stratonovich_correction(diffusion, 0.0, x, NO_INPUT)), expected, rtol=1e-5)


def test_correction_uses_only_jacobian_diagonal():
    x = jnp.array([0.7, -1.3], jnp.float32)
    x0, x1 = 0.7, -1.3
    # c_i = 0.5 sigma_i d sigma_i / d x_i: d(x0 x1)/dx0 = x1, d(x0 + 2 x1^2)/dx1 = 4 x1.
    expected = [0.5 * x0 * x1 * x1, 0.5 * (x0 + 2 * x1**2) * 4 * x1]
    np.testing.assert_allclose(
        np.asarray(ito_stratonovich_correction(CoupledDiffusion(), 0.0, x, NO_INPUT)), expected, rtol=1e-5
    )


def test_correction_is_zero_for_additive_noise():
    x = jnp.array([0.7, -1.3], jnp.float32)
    converted = ito_to_stratonovich_drift(LinearGrowth(GROWTH_RATE), AdditiveDiffusion(2, 0.3))
    np.testing.assert_array_equal(np.asarray(converted(0.0, x, NO_INPUT)), np.asarray(GROWTH_RATE * x))


def test_conversions_are_inverse():
    diffusion = MultiplicativeDiffusion(2, scale=0.4)
    drift = LinearGrowth(GROWTH_RATE)
    x = jnp.array([0.7, -1.3], jnp.float32)
    there_and_back = stratonovich_to_ito_drift(ito_to_stratonovich_drift(drift, diffusion), diffusion)
    np.testing.assert_allclose(np.asarray(there_and_back(0.0, x, NO_INPUT)), np.asarray(drift(0.0, x, NO_INPUT)), rtol=1e-6)


def test_converted_drift_rejects_unknown_calculus():
    with pytest.raises(ConfigError, match="'levy'"):
        ConvertedDrift(LinearGrowth(1.0), AdditiveDiffusion(1), "levy")


def test_gradient_reaches_diffusion_through_correction():
    diffusion = MultiplicativeDiffusion(1, scale=0.5, floor=FLOOR)
    x = jnp.array([2.0], jnp.float32)
    converted = ito_to_stratonovich_drift(LinearGrowth(GROWTH_RATE), diffusion)
    gradient = eqx.filter_grad(lambda c: jnp.sum(c(0.0, x, NO_INPUT)))(converted)
    # f_S = mu x - 0.5 s (s x + floor) for x > 0, so d f_S / d s = -(s x + floor / 2) and d s / d r = 1 - exp(-s).
    expected = -(0.5 * 2.0 + FLOOR / 2) * (1 - np.exp(-0.5))
    np.testing.assert_allclose(np.asarray(gradient.diffusion.raw_scale), [expected], rtol=1e-5)


# -- geometric Brownian motion ----------------------------------------------------------------------------


def final_states(drift, diffusion, method: str, n_steps: int, n_paths: int, seed: int = 1) -> jax.Array:
    """Return X_T from X_0 = 1 for `n_paths` keys; the same seed gives the same Brownian paths for both methods."""

    def fields(t, x, k, frac):
        return drift(t, x, NO_INPUT), diffusion(t, x, NO_INPUT), jnp.zeros((), x.dtype)

    def final_state(key):
        # Two bins of width T with n_steps sub-steps: one step of T / n_steps per Brownian increment.
        path, _ = solve_fixed_step(fields, jnp.ones(1, jnp.float32), 0.0, DURATION, 2, n_steps, key, method)
        return path[-1, 0]

    keys = jax.random.split(jax.random.PRNGKey(seed), n_paths)
    return jax.jit(jax.vmap(final_state))(keys)


def exact_final_states(n_steps: int, n_paths: int, seed: int = 1) -> jax.Array:
    """Return the exact Ito GBM solution on the Brownian paths that `final_states` draws, as solve_fixed_step draws them."""
    keys = jax.random.split(jax.random.PRNGKey(seed), n_paths)
    step = DURATION / n_steps
    brownian_at_end = jax.vmap(
        lambda key: jnp.sum(brownian_increments(key, jnp.arange(1), n_steps, 1, step, jnp.float32))
    )(keys)
    return jnp.exp((GROWTH_RATE - 0.5 * NOISE_SCALE**2) * DURATION + NOISE_SCALE * brownian_at_end)


@pytest.fixture(scope="module")
def gbm_runs():
    drift = LinearGrowth(GROWTH_RATE)
    diffusion = MultiplicativeDiffusion(1, scale=NOISE_SCALE, floor=FLOOR)
    return {
        "euler": final_states(drift, diffusion, "euler", N_STEPS, N_PATHS),
        "heun_converted": final_states(ito_to_stratonovich_drift(drift, diffusion), diffusion, "heun", N_STEPS, N_PATHS),
        "heun_unconverted": final_states(drift, diffusion, "heun", N_STEPS, N_PATHS),
        "euler_from_stratonovich": final_states(
            stratonovich_to_ito_drift(drift, diffusion), diffusion, "euler", N_STEPS, N_PATHS
        ),
        "exact": exact_final_states(N_STEPS, N_PATHS),
    }


def standard_error(samples: jax.Array) -> float:
    return float(jnp.std(samples)) / np.sqrt(samples.shape[0])


def test_gbm_means_follow_ito(gbm_runs):
    # Measured (200 steps, 20 000 paths, seed 1, float32 on CPU): Euler 1.6410, Heun converted 1.6417 and Heun
    # unconverted 1.8602, against exp(0.5) = 1.6487 and exp(0.625) = 1.8682. One standard error is about 0.006.
    ito_mean = np.exp(GROWTH_RATE * DURATION)
    stratonovich_mean = np.exp((GROWTH_RATE + 0.5 * NOISE_SCALE**2) * DURATION)
    tolerance = 4 * standard_error(gbm_runs["euler"])

    assert abs(float(jnp.mean(gbm_runs["euler"])) - ito_mean) < tolerance
    assert abs(float(jnp.mean(gbm_runs["heun_converted"])) - ito_mean) < tolerance
    assert abs(float(jnp.mean(gbm_runs["heun_unconverted"])) - stratonovich_mean) < tolerance
    assert abs(float(jnp.mean(gbm_runs["euler_from_stratonovich"])) - stratonovich_mean) < tolerance
    # The two readings are 0.22 apart, about 36 standard errors or 9 tolerances, so the checks above tell them apart.
    assert stratonovich_mean - ito_mean > 5 * tolerance


def test_gbm_heun_and_euler_agree_on_same_paths(gbm_runs):
    # Measured mean |difference| over paths: 0.016 (the Euler strong error), and 0.0007 between the means.
    difference = gbm_runs["heun_converted"] - gbm_runs["euler"]
    assert float(jnp.mean(jnp.abs(difference))) < 0.03
    assert abs(float(jnp.mean(difference))) < 0.005
    # Without the conversion Heun solves the Stratonovich SDE and lands 0.22 away on average.
    assert float(jnp.mean(jnp.abs(gbm_runs["heun_unconverted"] - gbm_runs["euler"]))) > 0.15


def test_gbm_strong_error_against_exact_solution(gbm_runs):
    # Measured mean |X_T - exact X_T| at 200 steps: Heun converted 0.00064, Euler 0.016, Heun unconverted 0.22,
    # and from Stratonovich back to Ito, Euler is 0.019 from Heun unconverted.
    exact = gbm_runs["exact"]
    assert float(jnp.mean(jnp.abs(gbm_runs["heun_converted"] - exact))) < 0.002
    assert float(jnp.mean(jnp.abs(gbm_runs["euler"] - exact))) < 0.03
    assert float(jnp.mean(jnp.abs(gbm_runs["heun_unconverted"] - exact))) > 0.15
    assert float(jnp.mean(jnp.abs(gbm_runs["euler_from_stratonovich"] - gbm_runs["heun_unconverted"]))) < 0.04


def test_gbm_converted_heun_converges_at_order_one():
    drift = LinearGrowth(GROWTH_RATE)
    diffusion = MultiplicativeDiffusion(1, scale=NOISE_SCALE, floor=FLOOR)
    converted = ito_to_stratonovich_drift(drift, diffusion)
    errors = {}
    for n_steps in (50, 200):
        heun = final_states(converted, diffusion, "heun", n_steps, 5_000)
        errors[n_steps] = float(jnp.mean(jnp.abs(heun - exact_final_states(n_steps, 5_000))))
    # Strong order 1 predicts a ratio of 4 for 4 times as many steps, order 0.5 a ratio of 2.
    # Measured ratio: about 4 (errors 0.0013 at 100 steps, 0.00064 at 200 and 0.00032 at 400 with 20 000 paths).
    assert errors[50] / errors[200] > 3.0
