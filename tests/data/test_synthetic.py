import numpy as np
import pytest

from neuroude.data import simulate_latent_sde, true_predictive_counts
from neuroude.errors import ConfigError
from neuroude.metrics import bits_per_spike


@pytest.fixture(scope="module")
def simulation():
    return simulate_latent_sde(n_trials=20, n_time=100, n_neurons=10, seed=0)


def test_shapes(simulation):
    recording, truth = simulation
    assert recording.y.shape == (20, 100, 10)
    assert recording.u.shape == (20, 100, 1)
    assert truth["x"].shape == (20, 100, 2)
    assert truth["mean_counts"].shape == (20, 100, 10)
    assert truth["C"].shape == (10, 2)
    assert truth["b"].shape == (10,)
    assert np.allclose(recording.ts, np.arange(100) * 0.01)


def test_same_seed_same_data(simulation):
    recording, truth = simulation
    again, truth_again = simulate_latent_sde(n_trials=20, n_time=100, n_neurons=10, seed=0)
    assert np.array_equal(recording.y, again.y)
    assert np.array_equal(truth["x"], truth_again["x"])


def test_other_seed_other_data(simulation):
    recording, _ = simulation
    other, _ = simulate_latent_sde(n_trials=20, n_time=100, n_neurons=10, seed=1)
    assert not np.array_equal(recording.y, other.y)


def test_mean_counts_in_range(simulation):
    recording, truth = simulation
    assert 0.2 <= truth["mean_counts"].mean() <= 0.5
    assert 0.2 <= recording.y.mean() <= 0.5
    recording.check_counts()


def test_mean_counts_follow_readout(simulation):
    _, truth = simulation
    expected = np.exp(truth["x"] @ truth["C"].T + truth["b"])
    assert np.allclose(truth["mean_counts"], expected)


def test_paths_start_at_x0(simulation):
    _, truth = simulation
    assert np.array_equal(truth["x"][:, 0], truth["x0"])


def test_true_rates_have_positive_bits_per_spike(simulation):
    recording, truth = simulation
    assert bits_per_spike(recording.y, truth["mean_counts"]) > 0.1


def test_true_predictive_counts_of_selected_trials(simulation):
    recording, truth = simulation
    subset = recording.select([7, 2])

    predicted = true_predictive_counts(truth, subset, n_samples=16)

    assert predicted.shape == (2, 100, 10)
    # With small diffusion the open-loop prediction stays close to the realised rates.
    correlation = np.corrcoef(predicted.ravel(), truth["mean_counts"][[7, 2]].ravel())[0, 1]
    assert correlation > 0.9
    assert bits_per_spike(subset.y, predicted) > 0.0


def test_true_predictive_counts_start_from_true_x0(simulation):
    recording, truth = simulation
    predicted = true_predictive_counts(truth, recording, n_samples=4)
    assert np.allclose(predicted[:, 0], truth["mean_counts"][:, 0])


def test_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="n_trials is 0"):
        simulate_latent_sde(n_trials=0)
    with pytest.raises(ConfigError, match="noise is -1"):
        simulate_latent_sde(noise=-1.0)
