"""The behaviour head fits standardised behaviour and reports predictions in the recording's units.

Fits of a head on behaviour in pixels are tested in test_behaviour_score.py, which shares its fit.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.errors import DataError
from neuroude.observation import BehaviourHead, behaviour_statistics


def test_log_prob_matches_hand_computation():
    head = BehaviourHead(3, 2, ((500.0, -20.0), (100.0, 4.0)), key=jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3))
    y = np.stack([500.0 + 100.0 * rng.normal(size=5), -20.0 + 4.0 * rng.normal(size=5)], axis=1)
    mask = np.ones((5, 2))
    mask[2, 1] = 0.0

    weight, bias = np.asarray(head.readout.weight, np.float64), np.asarray(head.readout.bias, np.float64)
    sigma = np.exp(np.asarray(head.log_std, np.float64))
    standard = (y - [500.0, -20.0]) / [100.0, 4.0]
    residual = (standard - (x @ weight.T + bias)) / sigma
    terms = -0.5 * residual**2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    expected = np.sum(terms * mask)

    value = head.log_prob(jnp.asarray(y, jnp.float32), jnp.asarray(x, jnp.float32), jnp.asarray(mask, jnp.float32))
    assert float(value) == pytest.approx(expected, rel=1e-5)

    # Predictions come back in the recording's units.
    mean = np.asarray(head.mean(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(mean, [500.0, -20.0] + np.array([100.0, 4.0]) * (x @ weight.T + bias), rtol=1e-5)
    np.testing.assert_allclose(head.noise_std(), sigma * [100.0, 4.0])


def test_statistics_skip_unobserved_entries():
    rng = np.random.default_rng(1)
    values = 1000.0 + 50.0 * rng.normal(size=(4, 6, 2))
    observed = np.ones(values.shape, bool)
    values[:, ::2, 0] = 1e6
    observed[:, ::2, 0] = False

    means, stds = behaviour_statistics(values, observed)

    observed_values = values[:, 1::2, 0]
    assert means[0] == pytest.approx(observed_values.mean())
    assert stds[0] == pytest.approx(observed_values.std())
    assert means[1] == pytest.approx(values[..., 1].mean())


def test_constant_variable_is_only_centred(caplog):
    values = np.full((2, 3, 1), 7.0)
    with caplog.at_level(logging.WARNING, logger="neuroude"):
        means, stds = behaviour_statistics(values, np.ones(values.shape, bool), ["lick"])
    assert (means, stds) == ((7.0,), (1.0,))
    assert "behaviour lick is constant" in caplog.text


def test_unobserved_variable_is_an_error():
    values = np.ones((2, 3, 2))
    observed = np.ones(values.shape, bool)
    observed[..., 1] = False
    with pytest.raises(DataError, match="behaviour speed has no observed entry in the training trials"):
        behaviour_statistics(values, observed, ["x", "speed"])
