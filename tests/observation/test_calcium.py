"""Calcium fluorescence observation model: a hand-computed trace and recovery of the decay time."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from neuroude.errors import ConfigError
from neuroude.observation import CalciumObservation

KEY = jax.random.PRNGKey(0)
BIN_WIDTH = 0.1


def _with(model, **fields):
    for name, value in fields.items():
        model = eqx.tree_at(lambda m, name=name: getattr(m, name), model, jnp.asarray(value, jnp.float32))
    return model


def test_calcium_hand_computed_trace():
    # tau chosen so that gamma = exp(-dt / tau) = 0.5.
    model = CalciumObservation(1, 1, BIN_WIDTH, key=KEY)
    model = _with(model, log_decay_time=[np.log(BIN_WIDTH / np.log(2.0))], log_gain=[np.log(2.0)], baseline=[1.0])
    rate = jnp.asarray([[10.0], [0.0], [0.0], [20.0]])

    # Increments rate * dt = 1, 0, 0, 2; c before the first bin = 1 / (1 - 0.5) = 2.
    # c = 0.5 * 2 + 1 = 2, then 1, 0.5, 0.5 * 0.5 + 2 = 2.25; F = 2 c + 1.
    np.testing.assert_allclose(np.asarray(model.decay), [0.5], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(model.calcium(rate))[:, 0], [2.0, 1.0, 0.5, 2.25], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(model.fluorescence(rate))[:, 0], [5.0, 3.0, 2.0, 5.5], rtol=1e-6)


def test_calcium_log_prob_matches_scipy_with_mask():
    model = _with(CalciumObservation(2, 3, BIN_WIDTH, key=KEY), log_std=[-1.0, 0.0, 0.5])
    x = jax.random.normal(KEY, (8, 2))
    y = jax.random.normal(jax.random.PRNGKey(1), (8, 3))
    mask = jnp.ones_like(y).at[:, 1].set(0.0)
    terms = stats.norm.logpdf(np.asarray(y), np.asarray(model.mean(x)), np.exp([-1.0, 0.0, 0.5]))
    assert float(model.log_prob(y, x, mask)) == pytest.approx((terms * np.asarray(mask)).sum(), rel=1e-5)


def test_calcium_rejects_bad_decay_time():
    with pytest.raises(ConfigError, match="decay_time is -1.0 s"):
        CalciumObservation(2, 3, BIN_WIDTH, decay_time=-1.0, key=KEY)


def test_calcium_recovers_decay_time():
    bin_width, n_time = 0.02, 1500
    true_decay = np.array([0.3, 0.8])
    rng = np.random.default_rng(0)
    # A known rate: sparse bursts on a low floor, in spikes per second.
    spikes = rng.poisson(0.08, (n_time, 2)) * 1.0
    rate = jnp.asarray(2.0 + spikes / bin_width, jnp.float32)

    truth = CalciumObservation(1, 2, bin_width, key=KEY)
    truth = _with(truth, log_decay_time=np.log(true_decay), log_gain=np.log([1.5, 0.7]), baseline=[0.2, -0.1],
                  log_std=np.log([0.1, 0.1]))
    fluorescence = truth.sample_around(jax.random.PRNGKey(3), truth.fluorescence(rate))
    every_bin = jnp.ones_like(fluorescence)

    model = CalciumObservation(1, 2, bin_width, decay_time=0.5, key=KEY)
    params, static = eqx.partition(model, lambda leaf: eqx.is_array(leaf) and leaf.ndim == 1)
    optimizer = optax.adam(0.05)

    @jax.jit
    def fit(params):
        def loss(params):
            return -eqx.combine(params, static).log_prob_given_rate(fluorescence, rate, every_bin) / n_time

        def step(carry, _):
            params, state = carry
            grads = jax.grad(loss)(params)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=600)
        return params

    fitted = eqx.combine(fit(params), static)
    np.testing.assert_allclose(np.exp(np.asarray(fitted.log_decay_time)), true_decay, rtol=0.03)
    np.testing.assert_allclose(np.exp(np.asarray(fitted.log_gain)), [1.5, 0.7], rtol=0.05)
    np.testing.assert_allclose(np.exp(np.asarray(fitted.log_std)), 0.1, rtol=0.1)
