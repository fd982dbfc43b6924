"""Held-out evaluation of a fitted model beside classical baselines.

On a held-out trial the model reads the stimulus and the observations of the
first `model.n_init_bins` bins, from which it infers `x0`. It then predicts the
rest of the trial by sampling the prior SDE. The first `evaluation.skip_bins`
bins (at least the bins used for `x0`) are left out of every score, for the
model and the baselines alike.
"""

from __future__ import annotations

import logging
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .behaviour_score import behaviour_scores
from .config import RunConfig
from .cosmoothing import (
    co_smoothing_scores, gaussian_co_smoothing_scores, heldout_bits_per_spike, heldout_r_squared, posterior_rates,
)
from .decoding import behaviour_decoding_scores, head_prediction, split_posterior_paths
from .metrics import bits_per_spike, heldout_channel_split, poisson_log_likelihood, r_squared, score_window

logger = logging.getLogger("neuroude")


@eqx.filter_jit
def _predict_trials(model, y, stimulus, mask, t0, bin_width, key, n_samples):
    keys = jax.random.split(key, y.shape[0])

    def one_trial(yi, si, mi, ki):
        return model.predict_trial(yi, si, t0, bin_width, ki, n_samples, mask=mi)

    return jax.vmap(one_trial)(y, stimulus, mask, keys)


def _stimulus(recording) -> np.ndarray:
    if recording.u is not None:
        return recording.u
    return np.zeros(recording.y.shape[:2] + (0,), np.float32)


def predict_recording(model, recording, key, n_samples: int = 32) -> dict[str, np.ndarray]:
    """Sample predictions for every trial of `recording`.

    Returns `mean` and `std` of the expected observations over samples
    (trials, time, channels), the per-sample expectations `samples`
    (trials, samples, time, channels) and latent `paths` (trials, samples, time, latents).
    """
    # NOTE: every sample's whole path is kept, so this memory grows with the bins even when
    # training streams over segments. On long trials evaluation sets a fit's peak memory.
    expected, paths = _predict_trials(
        model, jnp.asarray(recording.y), jnp.asarray(_stimulus(recording)), jnp.asarray(recording.observed),
        float(recording.ts[0]), float(recording.dt), key, n_samples,
    )
    expected = np.asarray(expected)
    return {
        "mean": expected.mean(axis=1),
        "std": expected.std(axis=1),
        "samples": expected,
        "paths": np.asarray(paths),
    }


def _score(y, prediction, mask, skip_bins: int, observation: str) -> dict[str, float]:
    """Score a prediction; a prediction with non-finite values (a diverged sample path) scores -inf."""
    if not np.all(np.isfinite(prediction)):
        count = int(np.sum(~np.isfinite(prediction)))
        logger.warning("%d predicted values are NaN or infinite (a sample path diverged); scoring them as -inf", count)
        name = "bits_per_spike" if observation == "poisson" else "r_squared"
        return {name: -math.inf, "nonfinite_predictions": count}
    y = score_window(y, skip_bins)
    prediction = score_window(prediction, skip_bins)
    mask = None if mask is None else score_window(mask, skip_bins)
    if observation == "poisson":
        return {
            "bits_per_spike": bits_per_spike(y, prediction, mask),
            "log_likelihood": poisson_log_likelihood(y, prediction, mask),
        }
    return {"r_squared": float(r_squared(y, prediction, mask))}


def validation_metric(model, recording, config: RunConfig, key) -> float:
    """Return the early-stopping metric on `recording`: bits per spike (Poisson) or R^2 (Gaussian).

    With held-out neurons configured, it is co-smoothing bits per spike (Poisson) or the
    R^2 of the held-out channels given the held-in ones (Gaussian).
    """
    if config.data.heldout_neurons is not None and config.model.observation in ("poisson", "gaussian"):
        _, heldout = heldout_channel_split(config.data.heldout_neurons, recording.n_channels)
        expected, _ = posterior_rates(model, recording, key, config.evaluation.n_samples)
        if config.model.observation == "gaussian":
            return heldout_r_squared(recording, expected, heldout, config.evaluation.skip_bins)
        return heldout_bits_per_spike(recording, expected, heldout, config.evaluation.skip_bins)
    prediction = predict_recording(model, recording, key, config.evaluation.n_samples)
    scores = _score(recording.y, prediction["mean"], recording.mask, config.evaluation.skip_bins,
                    config.model.observation)
    return scores["bits_per_spike"] if config.model.observation == "poisson" else scores["r_squared"]


def _baseline_scores(train, validation, test, config: RunConfig) -> dict[str, dict]:
    from .baselines import HomogeneousPoisson, fit_ridge_by_validation

    skip = config.evaluation.skip_bins
    observation = config.model.observation
    if observation != "poisson":
        channel_means = np.broadcast_to(train.y.mean(axis=(0, 1)), test.y.shape)
        return {"training_mean": _score(test.y, channel_means, test.mask, skip, observation)}

    scores = {}
    homogeneous = HomogeneousPoisson().fit(train)
    scores["homogeneous_poisson"] = _score(test.y, homogeneous.predict(test), test.mask, skip, observation)
    if test.u is None:
        return scores

    lags = config.evaluation.glm_lags
    glm, _ = fit_ridge_by_validation(train, validation, n_lags=lags)
    scores["glm_stimulus"] = {**_score(test.y, glm.predict(test), test.mask, skip, observation), "ridge": glm.ridge}

    # For reference only: this GLM reads the observed spikes of the test trial one bin ahead,
    # which the latent model, predicting from the stimulus alone, never reads.
    history_glm, _ = fit_ridge_by_validation(train, validation, n_lags=lags, spike_history_lags=10)
    scores["glm_stimulus_and_spike_history_one_step_ahead"] = {
        **_score(test.y, history_glm.predict(test), test.mask, skip, observation),
        "ridge": history_glm.ridge,
    }
    return scores


def evaluate(model, recording, split: dict[str, list[int]], config: RunConfig, key) -> tuple[dict, dict]:
    """Score the model on the validation and test trials beside the baselines.

    When the recording has behaviour, `metrics["behaviour_decoding"]` holds the test
    trials' behaviour decoded from posterior latent paths, with R^2 and interval
    coverage (see `neuroude.decoding`). It sits outside `metrics["test"]`, whose
    entries are predictors of the neural data.
    Returns the metrics dictionary written to `metrics.json` and the test predictions.
    With a behaviour head, the test predictions include `behaviour_head`: the
    `decoding.BehaviourPrediction` of the whole test trials on the posterior paths that
    `behaviour_decoding` scores, which the behaviour figure draws.
    """
    train = recording.select(split["train"])
    validation = recording.select(split["validation"])
    test = recording.select(split["test"])
    observation = config.model.observation
    skip = config.evaluation.skip_bins
    key_validation, key_test = jax.random.split(key)

    validation_prediction = predict_recording(model, validation, key_validation, config.evaluation.n_samples)
    test_prediction = predict_recording(model, test, key_test, config.evaluation.n_samples)
    metrics = {
        "observation": observation,
        "skip_bins": skip,
        "n_samples": config.evaluation.n_samples,
        "split": {name: [int(i) for i in indices] for name, indices in split.items()},
        "validation": {"model": _score(validation.y, validation_prediction["mean"], validation.mask, skip, observation)},
        "test": {
            "model": _score(test.y, test_prediction["mean"], test.mask, skip, observation),
            **_baseline_scores(train, validation, test, config),
        },
    }
    if test.behaviour is not None:
        key_decoding = jax.random.fold_in(key, 2)
        splits = {"train": train, "validation": validation, "test": test}
        posterior = split_posterior_paths(model, splits, key_decoding, config.evaluation.n_samples)
        metrics["behaviour_decoding"] = behaviour_decoding_scores(
            model, train, validation, test, skip, config.evaluation.n_samples, key_decoding, paths=posterior
        )
        if model.behaviour is not None:
            test_prediction["behaviour_head"] = head_prediction(model, np.asarray(posterior["test"], np.float64))
    if config.data.heldout_neurons is not None and observation == "poisson":
        key_posterior = jax.random.fold_in(key, 1)
        metrics["test"]["co_smoothing"] = co_smoothing_scores(model, train, validation, test, config, key_posterior)
    if config.data.heldout_neurons is not None and observation == "gaussian":
        key_posterior = jax.random.fold_in(key, 1)
        metrics["test"]["co_smoothing"] = gaussian_co_smoothing_scores(
            model, train, validation, test, config, key_posterior
        )
    if model.behaviour is not None and test.behaviour is not None:
        # Top level, not under "test", whose entries the CLI and the report read as predictors of y.
        metrics["behaviour_r_squared"] = behaviour_scores(
            model, test, test_prediction["paths"], skip, jax.random.fold_in(key, 2), config.evaluation.n_samples
        )
    return metrics, test_prediction
