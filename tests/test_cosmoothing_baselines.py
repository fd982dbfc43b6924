import numpy as np
import pytest

from neuroude.baselines import GPFA, GPFACoSmoothing, PoissonReadout, SpikeSmoothing, smooth_spikes
from neuroude.data import Recording
from neuroude.errors import ConfigError
from neuroude.metrics import co_smoothing_bits_per_spike, decoding_r_squared

BIN_WIDTH = 0.02
TIMESCALES = np.array([0.08, 0.2])
HELDOUT = [0, 5, 10, 15]


def gp_latents(n_trials, n_time, seed, timescales=TIMESCALES):
    """Draw latents from independent squared-exponential GPs with the given timescales (seconds)."""
    rng = np.random.default_rng(seed)
    times = np.arange(n_time) * BIN_WIDTH
    latents = []
    for timescale in timescales:
        kernel = np.exp(-0.5 * ((times[:, None] - times[None, :]) / timescale) ** 2) + 1e-6 * np.eye(n_time)
        latents.append(rng.standard_normal((n_trials, n_time)) @ np.linalg.cholesky(kernel).T)
    return np.stack(latents, axis=-1)


@pytest.fixture(scope="module")
def gaussian_data():
    rng = np.random.default_rng(0)
    latents = gp_latents(40, 50, seed=1)
    loading = rng.normal(size=(12, 2))
    y = latents @ loading.T + 1.0 + 0.3 * rng.standard_normal((40, 50, 12))
    return latents, y


@pytest.fixture(scope="module")
def fitted_gpfa(gaussian_data):
    _, y = gaussian_data
    return GPFA(latent_size=2, n_iterations=15).fit(y[:30], BIN_WIDTH)


def test_gpfa_recovers_latent_subspace(gaussian_data, fitted_gpfa):
    latents, y = gaussian_data
    inferred = fitted_gpfa.latents(y, BIN_WIDTH)
    # A linear map of the inferred latents, fitted on training trials, predicts the true latents of test trials.
    assert decoding_r_squared(inferred[:30], latents[:30], inferred[30:], latents[30:], alpha=1e-6) > 0.9


def test_gpfa_recovers_timescale():
    # With one latent there is no rotation to undo, so EM finds the timescale quickly.
    rng = np.random.default_rng(5)
    latents = gp_latents(30, 50, seed=6, timescales=[0.1])
    y = latents @ rng.normal(size=(1, 8)) + 0.3 * rng.standard_normal((30, 50, 8))
    gpfa = GPFA(latent_size=1, n_iterations=15).fit(y, BIN_WIDTH)
    assert gpfa.timescales[0] == pytest.approx(0.1, rel=0.15)


def test_gpfa_recovers_noise_variance(fitted_gpfa):
    np.testing.assert_allclose(fitted_gpfa.variance, 0.09, rtol=0.25)


def test_gpfa_log_likelihood_never_decreases(fitted_gpfa):
    steps = np.diff(fitted_gpfa.log_likelihoods)
    assert np.all(steps > -1e-6 * abs(fitted_gpfa.log_likelihoods[-1]))
    assert fitted_gpfa.log_likelihoods[-1] > fitted_gpfa.log_likelihoods[0]


def test_gpfa_rejects_too_many_latents():
    with pytest.raises(ConfigError, match="latent_size is 5; expected at most the 3 channels"):
        GPFA(latent_size=5).fit(np.zeros((2, 4, 3)), BIN_WIDTH)


@pytest.fixture(scope="module")
def spiking_data():
    """Poisson counts of 20 neurons driven by two smooth latents, with the true expected counts."""
    rng = np.random.default_rng(2)
    latents = gp_latents(50, 60, seed=3)
    loading = 0.8 * rng.normal(size=(20, 2))
    mean_counts = np.exp(latents @ loading.T + np.log(0.4))
    y = rng.poisson(mean_counts)
    recording = Recording(y=y, ts=np.arange(60) * BIN_WIDTH)
    return recording, mean_counts, latents


@pytest.fixture(scope="module")
def cosmoothing_fits(spiking_data):
    recording, _, _ = spiking_data
    train = recording.select(range(35))
    smoothing = SpikeSmoothing(HELDOUT, kernel_sd=0.06, ridge=1.0).fit(train)
    gpfa = GPFACoSmoothing(HELDOUT, latent_size=2, n_iterations=20).fit(train)
    return smoothing, gpfa


@pytest.fixture(scope="module")
def cosmoothing_scores(spiking_data, cosmoothing_fits):
    recording, mean_counts, _ = spiking_data
    test = recording.select(range(35, 50))
    smoothing, gpfa = cosmoothing_fits
    return {
        "true rates": co_smoothing_bits_per_spike(test.y, mean_counts[35:], HELDOUT),
        "smoothing": co_smoothing_bits_per_spike(test.y, smoothing.predict(test), HELDOUT),
        "gpfa": co_smoothing_bits_per_spike(test.y, gpfa.predict(test), HELDOUT),
    }


def test_smoothing_baseline_predicts_heldout(cosmoothing_scores):
    assert cosmoothing_scores["smoothing"] > 0.1
    assert cosmoothing_scores["smoothing"] < cosmoothing_scores["true rates"]


def test_gpfa_baseline_predicts_heldout(cosmoothing_scores):
    assert cosmoothing_scores["gpfa"] > 0.1
    assert cosmoothing_scores["gpfa"] < cosmoothing_scores["true rates"]


def test_gpfa_baseline_latents_match_truth(spiking_data, cosmoothing_fits):
    # Latents inferred from held-in spikes span the true latents on unseen trials. Poisson
    # noise at 0.4 counts per bin from 16 neurons keeps R^2 well below 1 for any estimator.
    recording, _, latents = spiking_data
    inferred = cosmoothing_fits[1].latents(recording)
    assert decoding_r_squared(inferred[:35], latents[:35], inferred[35:], latents[35:], alpha=1e-6) > 0.5


def test_smoothing_keeps_mass_and_mean():
    y = np.zeros((1, 41, 1))
    y[0, 20, 0] = 1.0
    smoothed = smooth_spikes(y, kernel_sd=0.05, bin_width=0.01)
    assert smoothed.sum() == pytest.approx(1.0)
    assert np.argmax(smoothed[0, :, 0]) == 20


def test_poisson_readout_recovers_weights():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(20, 100, 2))
    counts = rng.poisson(np.exp(features @ np.array([[0.5], [-0.8]]) - 0.5))
    readout = PoissonReadout(ridge=0.0).fit(features, counts)
    np.testing.assert_allclose(readout.weights[:, 0], [0.5, -0.8], atol=0.05)
    assert readout.bias[0] == pytest.approx(-0.5, abs=0.05)


def test_smoothing_rejects_bad_heldout():
    recording = Recording(y=np.ones((2, 5, 3)), ts=np.arange(5) * 0.01)
    with pytest.raises(ConfigError, match=r"heldout_neurons \[3\] are out of range"):
        SpikeSmoothing([3]).fit(recording)
