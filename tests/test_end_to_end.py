"""End to end: fit data simulated from a known latent SDE and compare with the true model."""

import numpy as np
import pytest

from neuroude.config import parse_config
from neuroude.data import save_npz, simulate_latent_sde, true_predictive_counts
from neuroude.metrics import bits_per_spike, score_window
from neuroude.workflow import fit_run

SKIP_BINS = 10


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("end_to_end")
    recording, truth = simulate_latent_sde(n_trials=60, n_time=100, dt=0.01, n_neurons=20, noise=0.05, seed=0)
    save_npz(recording, folder / "simulated.npz")
    config = parse_config({
        "data": {"source": "npz", "path": str(folder / "simulated.npz")},
        "model": {"latent_size": 2, "drift_width": 32, "drift_time_constant": 0.05, "encoder": "identity"},
        "training": {"steps": 600, "batch_size": 16, "learning_rate": 0.005, "kl_warmup_steps": 150,
                     "eval_every": 100, "patience": 100},
        "evaluation": {"n_samples": 16, "skip_bins": SKIP_BINS},
    })
    run = fit_run(config, folder / "run", quiet=True)
    return run, recording, truth


def test_fit_approaches_true_model(fitted):
    run, recording, truth = fitted
    test = recording.select(run.split["test"])
    true_counts = true_predictive_counts(truth, test, n_samples=64, seed=0)
    true_score = bits_per_spike(score_window(test.y, SKIP_BINS), score_window(true_counts, SKIP_BINS))
    model_score = run.metrics["test"]["model"]["bits_per_spike"]
    # Measured on this setup: the true model scores about 0.81 bits per spike and the fit about 0.72.
    assert true_score > 0.5
    assert model_score > 0.8 * true_score, f"model {model_score:.3f}, true model {true_score:.3f}"


def test_fit_beats_stimulus_glm(fitted):
    run, _, _ = fitted
    test_scores = run.metrics["test"]
    assert test_scores["model"]["bits_per_spike"] > test_scores["glm_stimulus"]["bits_per_spike"]


def test_training_raised_likelihood(fitted):
    run, _, _ = fitted
    history = (run.folder.history).read_text().splitlines()
    header = history[0].split(",")
    column = header.index("log_likelihood")
    log_likelihoods = np.array([float(line.split(",")[column]) for line in history[1:]])
    assert log_likelihoods[-50:].mean() > log_likelihoods[:50].mean()
