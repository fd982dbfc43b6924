import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from neuroude.errors import ConfigError, DataError
from neuroude.metrics import (
    co_smoothing_bits_per_spike,
    decoding_r_squared,
    fc_correlation,
    fc_dynamics,
    fcd_distance,
    fit_ridge,
    forward_prediction_bits_per_spike,
    functional_connectivity,
    heldout_channel_split,
    ks_distance,
    psth_r_squared,
    velocity_r_squared,
)

# One trial, two bins. Held-out channel 1 has counts (0, 2), predicted (0.5, 2), null mean 1:
# LL(model) = -0.5 + (2 ln 2 - 2 - ln 2); LL(null) = -1 + (0 - 1 - ln 2); 2 spikes.
HAND_BPS = (-0.5 + 2 * math.log(2.0)) / (2 * math.log(2.0))


def test_co_bps_hand_computed():
    y = np.array([[[5.0, 0.0], [1.0, 2.0]]])
    mean_counts = np.array([[[1e3, 0.5], [1e-3, 2.0]]])  # channel 0 is held in and badly predicted
    assert co_smoothing_bits_per_spike(y, mean_counts, [1]) == pytest.approx(HAND_BPS)


def test_co_bps_of_heldout_means_is_zero():
    rng = np.random.default_rng(0)
    y = rng.poisson(1.0, size=(4, 10, 3)).astype(float)
    null = np.broadcast_to(y.mean(axis=(0, 1)), y.shape)
    assert co_smoothing_bits_per_spike(y, null, [0, 2]) == pytest.approx(0.0, abs=1e-12)


def test_co_bps_respects_mask():
    y = np.array([[[0.0, 0.0], [2.0, 2.0], [9.0, 9.0]]])
    mean_counts = np.array([[[0.5, 0.5], [2.0, 2.0], [0.1, 0.1]]])
    mask = np.array([[[True, True], [True, True], [False, False]]])
    assert co_smoothing_bits_per_spike(y, mean_counts, [1], mask) == pytest.approx(HAND_BPS)


def test_co_bps_rejects_out_of_range_channel():
    y = np.ones((1, 2, 2))
    with pytest.raises(DataError, match=r"heldout \[2\] are out of range; expected indices from 0 to 1"):
        co_smoothing_bits_per_spike(y, y, [2])


def test_co_bps_rejects_empty_heldout():
    y = np.ones((1, 2, 2))
    with pytest.raises(DataError, match="non-empty list"):
        co_smoothing_bits_per_spike(y, y, [])


def test_forward_bps_scores_last_bins():
    y = np.array([[[7.0], [0.0], [2.0]]])
    mean_counts = np.array([[[1e-3], [0.5], [2.0]]])  # the first bin is badly predicted but not scored
    assert forward_prediction_bits_per_spike(y, mean_counts, 2) == pytest.approx(HAND_BPS)


@pytest.mark.parametrize("n_forward_bins", [0, 4, 1.5])
def test_forward_bps_rejects_bad_window(n_forward_bins):
    with pytest.raises(DataError, match="n_forward_bins"):
        forward_prediction_bits_per_spike(np.ones((1, 3, 1)), np.ones((1, 3, 1)), n_forward_bins)


def test_ridge_hand_computed():
    # Centred x = (-1.5, -0.5, 0.5, 1.5), sum x^2 = 5, y = 2x + 1: W = 10 / (5 + alpha) = 1 for alpha 5.
    x = np.arange(4.0)[:, None]
    weights, bias = fit_ridge(x, 2 * x + 1, alpha=5.0)
    assert weights[0, 0] == pytest.approx(1.0)
    assert bias[0] == pytest.approx(2.5)


def test_decoding_r_squared_hand_computed():
    # The alpha 5 fit predicts x + 2.5 for targets (1, 3, 5, 7): SSE 5, SST 20.
    x = np.arange(4.0).reshape(1, 4, 1)
    assert decoding_r_squared(x, 2 * x + 1, x, 2 * x + 1, alpha=5.0) == pytest.approx(0.75)


def test_velocity_r_squared_generalises_to_test_trials():
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(6, 2))
    rates = rng.gamma(2.0, size=(20, 30, 6))
    velocity = rates @ weights + 0.01 * rng.normal(size=(20, 30, 2))
    score = velocity_r_squared(rates[:15], velocity[:15], rates[15:], velocity[15:], alpha=1e-6)
    assert score > 0.999


def test_decoding_rejects_column_mismatch():
    x = np.ones((1, 4, 2)) + np.arange(4.0)[None, :, None]
    with pytest.raises(DataError, match="test_features have 3 columns; expected 2"):
        decoding_r_squared(x, x, np.ones((1, 4, 3)), x)


def test_psth_r_squared_hand_computed():
    # Conditions 0 and 1 have recorded PSTHs (1, 3) and (5, 7) and predicted (1, 3) and (4, 8).
    y = np.array([[0.0, 2.0], [2.0, 4.0], [5.0, 7.0], [5.0, 7.0]])[:, :, None]
    mean_counts = np.array([[1.0, 3.0], [1.0, 3.0], [4.0, 8.0], [4.0, 8.0]])[:, :, None]
    conditions = np.array([0, 0, 1, 1])
    # Concatenated recorded PSTH (1, 3, 5, 7): SST 20, SSE 2.
    assert psth_r_squared(y, mean_counts, conditions) == pytest.approx(0.9)


def test_psth_rejects_wrong_condition_count():
    y = np.ones((4, 2, 1))
    with pytest.raises(DataError, match="one label per trial"):
        psth_r_squared(y, y, [0, 1])


def test_functional_connectivity_hand_computed():
    signal = np.array([1.0, 2.0, 4.0, 3.0])
    fc = functional_connectivity(np.stack([signal, 2 * signal + 1, -signal], axis=1))
    expected = np.array([[1.0, 1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    np.testing.assert_allclose(fc, expected, atol=1e-12)


def test_fc_correlation_hand_computed():
    fc_a = np.array([[1.0, 1.0, 2.0], [1.0, 1.0, 3.0], [2.0, 3.0, 1.0]])
    fc_b = np.array([[1.0, 1.0, 3.0], [1.0, 1.0, 2.0], [3.0, 2.0, 1.0]])
    # Upper triangles (1, 2, 3) and (1, 3, 2) have correlation 0.5; the diagonal is left out.
    assert fc_correlation(fc_a, fc_b) == pytest.approx(0.5)
    assert fc_correlation(fc_a, 2 * fc_a) == pytest.approx(1.0)


def test_fc_correlation_rejects_size_mismatch():
    with pytest.raises(DataError, match="same size"):
        fc_correlation(np.eye(3), np.eye(4))


def test_ks_distance_hand_computed():
    # At v = 2 the empirical CDFs are 2/3 and 0.
    assert ks_distance([1.0, 2.0, 3.0], [2.5, 3.5]) == pytest.approx(2.0 / 3.0)


def test_ks_distance_matches_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=50), rng.normal(0.3, size=70)
    assert ks_distance(a, b) == pytest.approx(ks_2samp(a, b).statistic)


def blocks(*patterns, length=4):
    """Concatenate blocks in which channel i is sign_i * s, for a fixed non-constant s."""
    s = np.array([1.0, 2.0, 4.0, 3.0])[:length]
    return np.concatenate([np.stack([sign * s for sign in pattern], axis=1) for pattern in patterns])


def test_fcd_matrix_hand_computed():
    # Blocks A and B have FC upper triangles (1, -1, -1) and (-1, 1, -1), whose correlation is -0.5.
    a, b = (1, 1, -1), (1, -1, 1)
    fcd = fc_dynamics(blocks(a, b, a), window=4, step=4)
    expected = np.array([[1.0, -0.5, 1.0], [-0.5, 1.0, -0.5], [1.0, -0.5, 1.0]])
    np.testing.assert_allclose(fcd, expected, atol=1e-12)


def test_fcd_distance_hand_computed():
    a, b = (1, 1, -1), (1, -1, 1)
    stationary = blocks(a, a, a, a)  # FCD entries all 1
    switching = blocks(a, b, a, b)  # FCD entries: four -0.5 and two 1
    assert fcd_distance(stationary, switching, window=4, step=4) == pytest.approx(4.0 / 6.0)
    assert fcd_distance(switching, switching, window=4, step=4) == 0.0


def test_fcd_rejects_too_few_windows():
    with pytest.raises(DataError, match="fewer than 2 windows"):
        fc_dynamics(np.random.default_rng(0).normal(size=(5, 3)), window=4, step=4)


def test_heldout_split_from_fraction():
    heldin, heldout = heldout_channel_split(0.2, 25)
    assert len(heldout) == 5
    assert sorted(heldin + heldout) == list(range(25))
    assert heldout_channel_split(0.2, 25) == (heldin, heldout)  # the same channels every call


def test_heldout_split_from_indices():
    assert heldout_channel_split([3, 0], 5) == ((1, 2, 4), (0, 3))


@pytest.mark.parametrize(
    ("heldout", "message"),
    [
        ([0, 7], r"heldout_neurons \[7\] are out of range; the recording has 5 channels"),
        ([-1], r"heldout_neurons \[-1\] are out of range"),
        ([1, 1], "distinct indices"),
        ([0, 1, 2, 3, 4], "at least one of the 5 channels held in"),
        (1.5, "fraction in"),
        (0.01, "holds out 0"),
        ([], "fraction in"),
    ],
)
def test_heldout_split_rejects_bad_value(heldout, message):
    with pytest.raises(ConfigError, match=message):
        heldout_channel_split(heldout, 5)
