import math

import numpy as np
import pytest
from scipy.stats import poisson

from neuroude.errors import DataError
from neuroude.metrics import bits_per_spike, poisson_log_likelihood, r_squared, score_window


def counts_and_rates(seed=0, shape=(3, 8, 2)):
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.1, 3.0, size=shape)
    return rng.poisson(rates), rates


def test_log_likelihood_hand_computed():
    y = np.array([[[0.0], [2.0]]])
    mean_counts = np.array([[[0.5], [2.0]]])
    # log P(0 | 0.5) + log P(2 | 2) = -0.5 + (2 log 2 - 2 - log 2)
    expected = -0.5 + 2 * math.log(2.0) - 2.0 - math.log(2.0)
    assert poisson_log_likelihood(y, mean_counts) == pytest.approx(expected)


def test_log_likelihood_matches_scipy():
    y, rates = counts_and_rates()
    assert poisson_log_likelihood(y, rates) == pytest.approx(poisson.logpmf(y, rates).sum())


def test_log_likelihood_respects_mask():
    y, rates = counts_and_rates()
    mask = np.zeros(y.shape, dtype=bool)
    mask[0, :3, 1] = True
    assert poisson_log_likelihood(y, rates, mask) == pytest.approx(poisson.logpmf(y[mask], rates[mask]).sum())


def test_log_likelihood_zero_rate():
    assert poisson_log_likelihood(np.zeros((1, 1, 1)), np.zeros((1, 1, 1))) == 0.0
    assert poisson_log_likelihood(np.ones((1, 1, 1)), np.zeros((1, 1, 1))) == -math.inf


def test_log_likelihood_rejects_shape_mismatch():
    with pytest.raises(DataError, match=r"mean_counts has shape \(1, 2, 1\); expected the shape of y, \(1, 2, 2\)"):
        poisson_log_likelihood(np.zeros((1, 2, 2)), np.ones((1, 2, 1)))


def test_log_likelihood_rejects_negative_rates():
    with pytest.raises(DataError, match="mean_counts has negative values"):
        poisson_log_likelihood(np.zeros((1, 2, 1)), -np.ones((1, 2, 1)))


def test_log_likelihood_rejects_2d_input():
    with pytest.raises(DataError, match=r"y has shape \(2, 2\)"):
        poisson_log_likelihood(np.zeros((2, 2)), np.ones((2, 2)))


def test_log_likelihood_rejects_bad_mask():
    with pytest.raises(DataError, match="mask has shape"):
        poisson_log_likelihood(np.zeros((1, 2, 1)), np.ones((1, 2, 1)), mask=np.ones((1, 2, 1)))


def test_bits_per_spike_of_null_is_zero():
    y, _ = counts_and_rates()
    null = np.broadcast_to(y.mean(axis=(0, 1)), y.shape)
    assert bits_per_spike(y, null) == 0.0


def test_bits_per_spike_hand_computed():
    y = np.array([[[0.0], [2.0]]])
    mean_counts = np.array([[[0.5], [2.0]]])
    model = -0.5 + 2 * math.log(2.0) - 2.0 - math.log(2.0)
    null = -1.0 + (2 * math.log(1.0) - 1.0 - math.log(2.0))  # null mean count is 1
    assert bits_per_spike(y, mean_counts) == pytest.approx((model - null) / (2 * math.log(2.0)))


def test_bits_per_spike_of_true_rates_is_positive():
    y, rates = counts_and_rates(shape=(20, 50, 3))
    assert bits_per_spike(y, rates) > 0.1


def test_bits_per_spike_null_uses_scored_entries():
    y, rates = counts_and_rates()
    mask = np.zeros(y.shape, dtype=bool)
    mask[:, 4:] = True
    null = np.broadcast_to(y[:, 4:].mean(axis=(0, 1)), y.shape)
    assert bits_per_spike(y, null, mask) == pytest.approx(0.0, abs=1e-12)


def test_bits_per_spike_without_spikes():
    with pytest.raises(DataError, match="no spikes"):
        bits_per_spike(np.zeros((1, 3, 1)), np.ones((1, 3, 1)))


def test_r_squared_of_perfect_prediction():
    y, _ = counts_and_rates()
    assert r_squared(y, y) == 1.0


def test_r_squared_of_mean_is_zero():
    y, _ = counts_and_rates()
    mean = np.broadcast_to(y.mean(axis=(0, 1)), y.shape)
    assert r_squared(y, mean) == pytest.approx(0.0, abs=1e-12)


def test_r_squared_per_channel_hand_computed():
    y = np.array([[[1.0, 0.0], [3.0, 2.0]]])
    prediction = np.array([[[1.0, 1.0], [3.0, 1.0]]])
    # channel 0 is exact; channel 1 predicts its mean, so SSE = SST.
    scores = r_squared(y, prediction, per_channel=True)
    assert np.allclose(scores, [1.0, 0.0])
    assert r_squared(y, prediction) == pytest.approx(0.5)


def test_r_squared_rejects_constant_channel():
    with pytest.raises(DataError, match=r"channels \[0\] of y are constant"):
        r_squared(np.ones((1, 3, 1)), np.ones((1, 3, 1)))


def test_score_window_drops_first_bins():
    array = np.arange(12).reshape(2, 6, 1)
    assert np.array_equal(score_window(array, 2), array[:, 2:])


@pytest.mark.parametrize("skip_bins", [-1, 6, 10])
def test_score_window_rejects_out_of_range(skip_bins):
    with pytest.raises(DataError, match="skip_bins"):
        score_window(np.zeros((2, 6, 1)), skip_bins)


def test_score_window_rejects_non_integer():
    with pytest.raises(DataError, match="expected an integer"):
        score_window(np.zeros((2, 6, 1)), 1.5)
