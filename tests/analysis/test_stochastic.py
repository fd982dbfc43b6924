"""Noise analysis: stationary spread against the Lyapunov equation, escape times against Kramers' formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.analysis.noise import (
    escape_times,
    kramers_escape_time,
    lyapunov_covariance,
    simulate,
    stationary_spread,
)
from neuroude.errors import ConfigError

MATRIX = jnp.array([[-1.0, 2.0], [-2.0, -3.0]])
SIGMA = jnp.array([0.5, 0.2])


def linear_drift(x, u):
    return MATRIX @ x


def additive_noise(x, u):
    return SIGMA


def test_lyapunov_covariance_solves_equation():
    matrix, sigma = np.asarray(MATRIX, np.float64), np.asarray(SIGMA, np.float64)
    covariance = lyapunov_covariance(matrix, sigma)
    residual = matrix @ covariance + covariance @ matrix.T + np.diag(sigma**2)
    np.testing.assert_allclose(residual, 0.0, atol=1e-12)
    np.testing.assert_allclose(covariance, covariance.T)


def test_lyapunov_covariance_of_scalar_ou():
    # dx = -theta x dt + sigma dW has stationary variance sigma^2 / (2 theta).
    np.testing.assert_allclose(lyapunov_covariance([[-2.0]], 0.6), [[0.09]], rtol=1e-12)


def test_lyapunov_covariance_rejects_unstable_point():
    with pytest.raises(ConfigError, match="all real parts negative"):
        lyapunov_covariance([[0.5]], 1.0)


def test_ou_spread_matches_lyapunov():
    spread = stationary_spread(
        linear_drift, additive_noise, None, [0.0, 0.0], jax.random.PRNGKey(0),
        n_paths=64, dt=0.01, duration=40.0, burn_in=5.0, record_every=10,
    )
    # 64 paths x 350 samples, correlated over about one time unit: a sampling error of a few percent.
    np.testing.assert_allclose(spread.covariance, spread.linear_covariance, rtol=0.1, atol=2e-3)
    np.testing.assert_allclose(spread.mean, 0.0, atol=0.02)


def test_simulate_records_every_step_block():
    paths = simulate(linear_drift, additive_noise, None, jnp.ones((3, 2)), 0.01, 1.0, jax.random.PRNGKey(1), 10)
    assert paths.shape == (3, 11, 2)
    np.testing.assert_array_equal(paths[:, 0], 1.0)


def test_simulate_without_noise_follows_exponential():
    paths = simulate(lambda x, u: -x, lambda x, u: jnp.zeros_like(x), None, jnp.ones((1, 1)), 1e-3, 1.0,
                     jax.random.PRNGKey(2), 1000)
    np.testing.assert_allclose(paths[0, -1, 0], np.exp(-1.0), rtol=1e-3)


def double_well_gradient(x, u):
    """-U'(x) for U = x^4 / 4 - x^2 / 2: wells at -1 and 1 (U'' = 2), barrier at 0 (U'' = -1), height 1/4."""
    return x - x**3


def test_double_well_escape_near_kramers():
    noise_intensity = 0.0625  # barrier height / D = 4
    expected = kramers_escape_time(2.0, -1.0, 0.25, noise_intensity)
    escape = escape_times(
        double_well_gradient, lambda x, u: jnp.full_like(x, np.sqrt(2.0 * noise_intensity)), None,
        [-1.0], [1.0], jax.random.PRNGKey(3), radius=0.5, n_paths=128, dt=0.01, max_time=2000.0,
    )

    np.testing.assert_allclose(expected, 242.57, rtol=1e-4)
    assert escape.n_escaped >= 120
    # Kramers' formula is only the leading term for D small against the barrier. At a barrier of 4 D the
    # next terms and the sampling error of 128 paths (about 9%) allow 0.7 to 1.5 times the formula.
    ratio = escape.mean_time / expected
    assert 0.7 < ratio < 1.5, f"mean escape time {escape.mean_time:.1f}, Kramers {expected:.1f}"


def test_escape_rate_counts_censored_paths():
    escape = escape_times(
        double_well_gradient, lambda x, u: jnp.full_like(x, 0.1), None, [-1.0], [1.0], jax.random.PRNGKey(4),
        n_paths=4, dt=0.01, max_time=1.0,
    )
    assert escape.n_escaped == 0
    assert escape.mean_time == float("inf")
    assert escape.to_dict()["n_paths"] == 4


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"radius": 3.0}, "radius is 3.0"), ({"n_paths": 0}, "n_paths is 0"), ({"dt": -1.0}, "dt is -1.0")],
)
def test_escape_times_rejects_bad_arguments(arguments, message):
    with pytest.raises(ConfigError, match=message):
        escape_times(double_well_gradient, additive_noise, None, [-1.0], [1.0], jax.random.PRNGKey(0), **arguments)
