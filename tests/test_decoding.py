"""Predictive intervals of decoded behaviour: coverage on hand-made distributions with known calibration.

The check on a fitted run's metrics.json is in tests/analysis/test_analyze_cli.py, whose tiny fitted run
carries behaviour, so that no second fit is compiled.
"""

import numpy as np
import pytest
from scipy.stats import norm

from neuroude.decoding import (
    CALIBRATION_LEVELS,
    BehaviourPrediction,
    interval_coverage,
    mixture_quantiles,
    probability_integral_transform,
)
from neuroude.errors import DataError

N_VALUES = 4000
N_SAMPLES = 8


def mixture_case(seed=0, noise_std=(0.3, 1.5)):
    """Predictive mixtures with random sample means, and targets drawn from those same mixtures."""
    rng = np.random.default_rng(seed)
    noise_std = np.asarray(noise_std)
    centres = rng.normal(size=(N_VALUES, 1, 2)) * 3.0
    samples = centres + rng.normal(size=(N_VALUES, N_SAMPLES, 2))
    component = rng.integers(N_SAMPLES, size=(N_VALUES, 2))
    chosen = np.take_along_axis(samples, component[:, None, :], axis=1)[:, 0]
    targets = chosen + noise_std * rng.normal(size=(N_VALUES, 2))
    return targets, samples, noise_std


def binomial_bound(level, n):
    # Four standard deviations of a binomial fraction: a calibrated case fails this by chance with p < 1e-4.
    return 4.0 * np.sqrt(level * (1.0 - level) / n)


def test_coverage_of_single_gaussian_near_nominal():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(N_VALUES, 1, 1))
    targets = mean[:, 0] + 0.7 * rng.normal(size=(N_VALUES, 1))
    pit = probability_integral_transform(targets, mean, [0.7])
    coverage = interval_coverage(pit, CALIBRATION_LEVELS)
    for level, empirical in zip(CALIBRATION_LEVELS, coverage):
        assert abs(empirical - level) < binomial_bound(level, N_VALUES), (level, empirical)


def test_coverage_of_mixture_near_nominal():
    targets, samples, noise_std = mixture_case()
    coverage = interval_coverage(probability_integral_transform(targets, samples, noise_std), CALIBRATION_LEVELS)
    for level, empirical in zip(CALIBRATION_LEVELS, coverage):
        assert abs(empirical - level) < binomial_bound(level, 2 * N_VALUES), (level, empirical)


def test_coverage_detects_overconfidence():
    targets, samples, noise_std = mixture_case()
    # The same mixtures, but with the noise shrunk tenfold and the sample spread cut: intervals are too narrow.
    centred = samples.mean(axis=1, keepdims=True) + 0.1 * (samples - samples.mean(axis=1, keepdims=True))
    coverage = interval_coverage(probability_integral_transform(targets, centred, noise_std / 10), [0.5, 0.9])
    assert coverage[0] < 0.5 - 0.1
    assert coverage[1] < 0.9 - 0.1


def test_mixture_quantiles_of_one_gaussian():
    means = np.array([[[0.0, 2.0]], [[-1.0, 5.0]]])
    noise_std = np.array([1.0, 0.5])
    quantiles = mixture_quantiles(means, noise_std, [0.05, 0.5, 0.95])
    expected = means[None, :, 0, :] + norm.ppf([0.05, 0.5, 0.95])[:, None, None] * noise_std
    np.testing.assert_allclose(quantiles, expected, atol=1e-6)


def test_prediction_interval_contains_its_level():
    targets, samples, noise_std = mixture_case(seed=2)
    # One trial of N_VALUES bins: (trials, S, time, b).
    prediction = BehaviourPrediction(samples.transpose(1, 0, 2)[None], noise_std)
    lower, upper = prediction.interval(0.9)
    inside = np.mean((targets[None] >= lower) & (targets[None] <= upper))
    assert abs(inside - 0.9) < binomial_bound(0.9, 2 * N_VALUES)
    np.testing.assert_allclose(prediction.std**2, samples.var(axis=1)[None] + noise_std**2)


def test_coverage_rejects_bad_shapes():
    with pytest.raises(DataError, match="expected \\(N, samples, channels\\)"):
        probability_integral_transform(np.zeros((4, 2)), np.zeros((4, 3)), [1.0, 1.0])
    with pytest.raises(DataError, match="noise_std is"):
        probability_integral_transform(np.zeros((4, 2)), np.zeros((4, 3, 2)), [1.0, 0.0])
    with pytest.raises(DataError, match="strictly between 0 and 1"):
        interval_coverage(np.zeros(3), [0.5, 1.0])
