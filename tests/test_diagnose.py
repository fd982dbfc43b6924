"""The non-finite diagnosis on co-smoothing models, behaviour heads and overflowing loss terms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config, tiny_recording
from neuroude.build import build_model
from neuroude.diagnose import _loss_diagnosis, locate_nonfinite

HELDOUT = [0, 3]
N_CHANNELS = 5


def batch(n_channels=N_CHANNELS, n_trials=2):
    recording = tiny_recording(n_trials=n_trials, n_channels=n_channels)
    y = jnp.asarray(recording.y, jnp.float32)
    return y, jnp.asarray(recording.u, jnp.float32), jnp.ones_like(y)


@pytest.fixture(scope="module")
def cosmoothing_model():
    config = tiny_config(data={"heldout_neurons": HELDOUT})
    return build_model(config, N_CHANNELS, 1, jax.random.PRNGKey(0), 0.5)


@pytest.fixture(scope="module")
def behaviour_model():
    config = tiny_config(data={"heldout_neurons": HELDOUT}, model={"behaviour": {"weight": 1.0}})
    return build_model(config, N_CHANNELS, 1, jax.random.PRNGKey(0), 0.5, n_behaviour=2)


def diagnose(model, y, stimulus, mask, behaviour=None):
    return locate_nonfinite(model, y, stimulus, mask, 0.0, 0.01, jax.random.PRNGKey(0), 1, np.inf, behaviour)


def test_cosmoothing_finite_forward_blames_gradient(cosmoothing_model):
    # The recognition model reads 3 of the 5 channels, so the replay must pass it only those.
    assert cosmoothing_model.recognition.cell.input_size == N_CHANNELS - len(HELDOUT) + 2
    diagnosis = diagnose(cosmoothing_model, *batch())
    assert diagnosis.module == "gradient"
    assert "every loss term was finite" in diagnosis.detail


def test_cosmoothing_heldin_nan_names_recognition(cosmoothing_model):
    y, stimulus, mask = batch()
    diagnosis = diagnose(cosmoothing_model, y.at[1, 4, 1].set(jnp.nan), stimulus, mask)
    assert diagnosis.module == "recognition model"
    assert diagnosis.trial == 1


def test_cosmoothing_heldout_nan_skips_recognition(cosmoothing_model):
    # A NaN count in a held-out channel never reaches the recognition model, only the likelihood.
    y, stimulus, mask = batch()
    diagnosis = diagnose(cosmoothing_model, y.at[0, 4, 3].set(jnp.nan), stimulus, mask)
    assert diagnosis.module == "observation model"
    assert diagnosis.trial == 0


def test_huge_behaviour_names_behaviour_head(behaviour_model):
    y, stimulus, mask = batch()
    values = jnp.full(y.shape[:2] + (2,), 1e30, jnp.float32)
    diagnosis = diagnose(behaviour_model, y, stimulus, mask, (values, jnp.ones_like(values)))
    assert diagnosis.module == "behaviour head"
    assert "behaviour log-likelihood" in diagnosis.detail
    assert "check the behaviour units" in diagnosis.detail


def test_finite_behaviour_blames_gradient(behaviour_model):
    y, stimulus, mask = batch()
    values = jnp.ones(y.shape[:2] + (2,), jnp.float32)
    diagnosis = diagnose(behaviour_model, y, stimulus, mask, (values, jnp.ones_like(values)))
    assert diagnosis.module == "gradient"


def test_overflowing_loss_sum_is_named(cosmoothing_model):
    # With one trial no batch mean overflows. Each term is finite in float32, but -log_likelihood + kl_path
    # is 6e38, beyond the float32 maximum 3.4e38.
    outputs = {
        "log_likelihood": np.full((1, 1), -3e38, np.float32),
        "kl_initial": np.zeros(1, np.float32),
        "kl_path": np.full((1, 1), 3e38, np.float32),
        "residual_penalty": np.zeros((1, 1), np.float32),
    }
    diagnosis = _loss_diagnosis(cosmoothing_model, outputs, jnp.float32)
    assert diagnosis.module == "sum of the loss terms"
    assert "log-likelihood -3e+38" in diagnosis.detail


def test_finite_loss_sum_passes(cosmoothing_model):
    outputs = {
        "log_likelihood": np.full((2, 1), -3.0, np.float32),
        "kl_initial": np.zeros(2, np.float32),
        "kl_path": np.full((2, 1), 3.0, np.float32),
        "residual_penalty": np.zeros((2, 1), np.float32),
    }
    assert _loss_diagnosis(cosmoothing_model, outputs, jnp.float32) is None


def test_overflowing_batch_mean_is_named(cosmoothing_model):
    # Two finite per-trial log-likelihoods whose float32 mean overflows.
    outputs = {
        "log_likelihood": np.full((2, 1), -3e38, np.float32),
        "kl_initial": np.zeros(2, np.float32),
        "kl_path": np.zeros((2, 1), np.float32),
        "residual_penalty": np.zeros((2, 1), np.float32),
    }
    diagnosis = _loss_diagnosis(cosmoothing_model, outputs, jnp.float32)
    assert diagnosis.module == "observation model"
    assert "batch mean of the log-likelihood overflows float32" in diagnosis.detail
