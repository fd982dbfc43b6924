"""Recognition model: backward context and initial-state posterior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.errors import ConfigError
from neuroude.recognition import GRURecognition

KEY = jax.random.PRNGKey(0)


def model():
    return GRURecognition(3, 1, 2, hidden_size=8, context_size=4, n_init_bins=4, key=KEY)


def observations(seed):
    return jax.random.normal(jax.random.PRNGKey(seed), (12, 3)), jnp.zeros((12, 1))


def test_context_at_bin_depends_only_on_later_bins():
    y, drive = observations(1)
    altered = y.at[:5].set(10.0)
    first = model().context(y, drive)
    second = model().context(altered, drive)
    np.testing.assert_allclose(np.asarray(first[5:]), np.asarray(second[5:]), rtol=1e-6)
    assert not np.allclose(np.asarray(first[4]), np.asarray(second[4]))


def test_initial_state_reads_only_first_bins():
    y, drive = observations(2)
    altered = y.at[4:].set(10.0)
    mean, std = model().initial_state(y, drive)
    mean_altered, std_altered = model().initial_state(altered, drive)
    np.testing.assert_array_equal(np.asarray(mean), np.asarray(mean_altered))
    np.testing.assert_array_equal(np.asarray(std), np.asarray(std_altered))
    assert bool(jnp.all(std > 0))
    assert mean.shape == (2,)


def test_zero_initial_bins_rejected():
    with pytest.raises(ConfigError, match="n_init_bins is 0"):
        GRURecognition(3, 1, 2, n_init_bins=0, key=KEY)
