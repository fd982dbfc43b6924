"""Negative binomial and Bernoulli observation models against scipy, and the data checks they need."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from neuroude.data import Recording
from neuroude.errors import ConfigError, DataError
from neuroude.observation import BernoulliObservation, NegativeBinomialObservation, check_recording

KEY = jax.random.PRNGKey(0)
X = jax.random.normal(KEY, (6, 2))
DISPERSIONS = jnp.asarray([0.05, 0.7, 3.0], jnp.float32)


def _negative_binomial(link="exp"):
    model = NegativeBinomialObservation(2, 3, link, mean_count=1.5, key=KEY)
    return eqx.tree_at(lambda m: m.log_dispersion, model, jnp.log(DISPERSIONS))


def _scipy_negative_binomial(y, mean):
    r = 1.0 / np.asarray(DISPERSIONS, np.float64)
    mean = np.asarray(mean, np.float64)
    return stats.nbinom.logpmf(np.asarray(y), r, r / (r + mean))


@pytest.mark.parametrize("link", ["exp", "softplus"])
def test_negative_binomial_matches_scipy(link):
    model = _negative_binomial(link)
    y = jnp.asarray(np.random.default_rng(0).poisson(2.0, (6, 3)), jnp.float32)
    expected = _scipy_negative_binomial(y, model.mean(X)).sum()
    assert float(model.log_prob(y, X, jnp.ones_like(y))) == pytest.approx(expected, rel=1e-5)


def test_negative_binomial_mask_drops_entries():
    model = _negative_binomial()
    y = jnp.asarray(np.random.default_rng(1).poisson(2.0, (6, 3)), jnp.float32)
    mask = jnp.ones_like(y).at[:, 0].set(0.0).at[2, 1].set(0.0)
    terms = _scipy_negative_binomial(y, model.mean(X))
    expected = (terms * np.asarray(mask)).sum()
    assert float(model.log_prob(y, X, mask)) == pytest.approx(expected, rel=1e-5)


def test_negative_binomial_large_mean_is_finite():
    model = _negative_binomial()
    x = jnp.full((2, 2), 20.0)
    value = model.log_prob(jnp.full((2, 3), 5.0), x, jnp.ones((2, 3)))
    assert np.isfinite(float(value))


def test_negative_binomial_samples_are_overdispersed():
    model = _negative_binomial()
    mean = jnp.full((20000, 3), 4.0)
    draws = np.asarray(model.sample_around(jax.random.PRNGKey(2), mean))
    np.testing.assert_allclose(draws.mean(axis=0), 4.0, rtol=0.05)
    expected_variance = 4.0 + np.asarray(DISPERSIONS) * 16.0
    np.testing.assert_allclose(draws.var(axis=0), expected_variance, rtol=0.1)


def test_negative_binomial_rejects_bad_dispersion():
    with pytest.raises(ConfigError, match="dispersion is 0.0"):
        NegativeBinomialObservation(2, 3, dispersion=0.0, key=KEY)


def test_bernoulli_matches_scipy():
    model = BernoulliObservation(2, 3, 0.3, key=KEY)
    y = jnp.asarray(np.random.default_rng(3).integers(0, 2, (6, 3)), jnp.float32)
    expected = stats.bernoulli.logpmf(np.asarray(y), np.asarray(model.mean(X), np.float64)).sum()
    assert float(model.log_prob(y, X, jnp.ones_like(y))) == pytest.approx(expected, rel=1e-5)


def test_bernoulli_mask_drops_entries():
    model = BernoulliObservation(2, 3, 0.3, key=KEY)
    y = jnp.asarray(np.random.default_rng(4).integers(0, 2, (6, 3)), jnp.float32)
    mask = jnp.ones_like(y).at[1:4, 2].set(0.0)
    terms = stats.bernoulli.logpmf(np.asarray(y), np.asarray(model.mean(X), np.float64))
    assert float(model.log_prob(y, X, mask)) == pytest.approx((terms * np.asarray(mask)).sum(), rel=1e-5)


def test_bernoulli_starts_at_mean_probability():
    model = BernoulliObservation(2, 3, 0.3, key=KEY)
    np.testing.assert_allclose(np.asarray(model.mean(jnp.zeros((1, 2)))), 0.3, rtol=1e-5)


def test_bernoulli_samples_are_binary():
    model = BernoulliObservation(2, 3, 0.3, key=KEY)
    draws = np.asarray(model.sample(jax.random.PRNGKey(5), jnp.zeros((4000, 2))))
    assert set(np.unique(draws)) == {0.0, 1.0}
    np.testing.assert_allclose(draws.mean(axis=0), 0.3, atol=0.03)


def _recording(y, mask=None, behaviour=None):
    return Recording(y=y, ts=np.arange(y.shape[1]) * 0.01, mask=mask, behaviour=behaviour)


def test_negative_binomial_rejects_non_counts():
    recording = _recording(np.full((2, 4, 1), 0.5))
    with pytest.raises(DataError, match="non-integer values"):
        check_recording(recording, "negative_binomial")


def test_bernoulli_rejects_counts_above_one():
    y = np.zeros((2, 4, 1))
    y[0, 1, 0] = 2.0
    with pytest.raises(DataError, match=r"neither 0 nor 1 \(e.g. 2.0\)"):
        check_recording(_recording(y), "bernoulli")


def test_bernoulli_ignores_masked_entries():
    y = np.zeros((2, 4, 1))
    y[0, 1, 0] = 2.0
    mask = np.ones(y.shape, bool)
    mask[0, 1, 0] = False
    check_recording(_recording(y, mask), "bernoulli")


def test_behaviour_head_needs_behaviour():
    with pytest.raises(DataError, match="model.behaviour is set"):
        check_recording(_recording(np.zeros((2, 4, 1))), "poisson", behaviour_configured=True)
