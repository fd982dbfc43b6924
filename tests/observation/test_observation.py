"""Poisson and Gaussian observation models against scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from neuroude.errors import ConfigError
from neuroude.observation import GaussianObservation, PoissonObservation

KEY = jax.random.PRNGKey(0)
X = jax.random.normal(KEY, (6, 2))


@pytest.mark.parametrize("link", ["exp", "softplus"])
def test_poisson_log_prob_matches_scipy(link):
    model = PoissonObservation(2, 3, link, key=KEY)
    y = jnp.asarray(np.random.default_rng(0).poisson(1.0, (6, 3)), jnp.float32)
    expected = stats.poisson.logpmf(np.asarray(y), np.asarray(model.mean(X))).sum()
    assert float(model.log_prob(y, X, jnp.ones_like(y))) == pytest.approx(expected, rel=1e-5)


def test_poisson_mask_drops_entries():
    model = PoissonObservation(2, 3, key=KEY)
    y = jnp.ones((6, 3))
    mask = jnp.ones_like(y).at[:, 0].set(0.0)
    full = model.log_prob(y, X, jnp.ones_like(y))
    masked = model.log_prob(y, X, mask)
    terms = stats.poisson.logpmf(1, np.asarray(model.mean(X)))
    assert float(full) == pytest.approx(terms.sum(), rel=1e-5)
    assert float(masked) == pytest.approx(terms[:, 1:].sum(), rel=1e-5)


def test_poisson_starts_at_mean_count():
    model = PoissonObservation(2, 3, "exp", mean_count=0.4, key=KEY)
    np.testing.assert_allclose(np.asarray(model.mean(jnp.zeros((1, 2)))), 0.4, rtol=1e-5)


def test_poisson_unknown_link():
    with pytest.raises(ConfigError, match="Poisson link is 'relu'"):
        PoissonObservation(2, 3, "relu", key=KEY)


def test_gaussian_log_prob_matches_scipy():
    model = GaussianObservation(2, 3, key=KEY)
    y = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    expected = stats.norm.logpdf(np.asarray(y), np.asarray(model.mean(X)), 1.0).sum()
    assert float(model.log_prob(y, X, jnp.ones_like(y))) == pytest.approx(expected, rel=1e-5)
