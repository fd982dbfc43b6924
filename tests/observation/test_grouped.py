"""Channel groups with their own observation models: the summed likelihood and the channel checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from neuroude.data import Recording
from neuroude.errors import ConfigError, DataError
from neuroude.observation import GaussianObservation, GroupedObservation, PoissonObservation, check_recording
from neuroude.observation.grouped import check_channel_groups

KEY = jax.random.PRNGKey(0)
X = jax.random.normal(KEY, (6, 2))


def _grouped():
    poisson = PoissonObservation(2, 2, mean_count=1.0, key=jax.random.PRNGKey(1))
    gaussian = GaussianObservation(2, 1, key=jax.random.PRNGKey(2))
    return GroupedObservation([poisson, gaussian], [[0, 2], [1]], 3), poisson, gaussian


def test_grouped_mean_places_channels():
    model, poisson, gaussian = _grouped()
    mean = np.asarray(model.mean(X))
    np.testing.assert_allclose(mean[:, [0, 2]], np.asarray(poisson.mean(X)), rtol=1e-6)
    np.testing.assert_allclose(mean[:, [1]], np.asarray(gaussian.mean(X)), rtol=1e-6)


def test_grouped_log_prob_sums_groups():
    model, _, _ = _grouped()
    rng = np.random.default_rng(0)
    y = np.stack([rng.poisson(1.0, 6), rng.normal(size=6), rng.poisson(1.0, 6)], axis=1).astype(np.float32)
    mask = np.ones_like(y)
    mask[2, 0] = 0.0
    mean = np.asarray(model.mean(X), np.float64)
    terms = np.stack(
        [stats.poisson.logpmf(y[:, 0], mean[:, 0]), stats.norm.logpdf(y[:, 1], mean[:, 1], 1.0),
         stats.poisson.logpmf(y[:, 2], mean[:, 2])],
        axis=1,
    )
    value = model.log_prob(jnp.asarray(y), X, jnp.asarray(mask))
    assert float(value) == pytest.approx((terms * mask).sum(), rel=1e-5)


def test_grouped_samples_follow_each_group():
    model, _, _ = _grouped()
    draws = np.asarray(model.sample_around(KEY, jnp.full((50, 3), 2.5)))
    counts = draws[:, [0, 2]]
    np.testing.assert_array_equal(counts, np.round(counts))
    assert not np.allclose(draws[:, 1], np.round(draws[:, 1]))


@pytest.mark.parametrize(
    "channels, message",
    [
        ([[0, 1]], r"leaves channels \[2\] without an observation model"),
        ([[0, 1], [1, 2]], r"lists channels \[1\] in more than one group"),
        ([[0, 1, 2, 3]], r"lists channels \[3\]; the recording has channels 0 to 2"),
    ],
)
def test_channel_groups_must_split_channels(channels, message):
    with pytest.raises(ConfigError, match=message):
        check_channel_groups(channels, 3)


class _Group:
    def __init__(self, observation, channels):
        self.observation, self.channels = observation, channels


def test_grouped_check_names_the_group():
    y = np.zeros((2, 4, 3), np.float32)
    y[:, :, 1] = 0.5  # a continuous channel, fine for a gaussian group but not for counts
    recording = Recording(y=y, ts=np.arange(4) * 0.1)
    check_recording(recording, "grouped", channel_groups=[_Group("poisson", [0, 2]), _Group("gaussian", [1])])
    with pytest.raises(DataError, match=r"channels \[0, 1\] \(poisson group\).*non-integer"):
        check_recording(recording, "grouped", channel_groups=[_Group("poisson", [0, 1]), _Group("gaussian", [2])])
