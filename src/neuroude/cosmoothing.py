"""Co-smoothing evaluation: predict held-out neurons from held-in ones, beside classical baselines.

Under co-smoothing (`data.heldout_neurons`), the recognition model reads only the
held-in neurons, while the observation model predicts all of them. On test trials,
which training never uses, the posterior given the held-in spikes yields expected
counts of the held-out neurons, scored by co-smoothing bits per spike (co-bps).
The spike-smoothing and GPFA baselines get the same held-in spikes, and their
settings are chosen on the validation trials. When the recording has behaviour,
each method's features (model latents, smoothed held-in spikes, GPFA latents) are
also decoded to behaviour by ridge regression fitted on the training trials.

With Gaussian observations the held-out channels are continuous traces, for example
one brain area predicted from another. The score is then the variance explained
(R^2) of the held-out channels on test trials, beside reduced-rank regression from
the held-in channels of the same bin.
"""

from __future__ import annotations

import itertools
import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .baselines import GPFACoSmoothing, PoissonReadout, SpikeSmoothing, fit_reduced_rank_by_cross_validation
from .config import RunConfig
from .decoding import fit_masked_ridge
from .metrics import co_smoothing_bits_per_spike, heldout_channel_split, r_squared, score_window

logger = logging.getLogger("neuroude")

KERNEL_SDS = (0.025, 0.05, 0.1, 0.2)  # seconds; smoothing widths searched on validation trials
RIDGES = (0.1, 1.0, 10.0, 100.0)  # Poisson readout penalties searched on validation trials
DECODER_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)  # ridge penalties of the behaviour decoders
GPFA_ITERATIONS = 50


def _stimulus(recording) -> np.ndarray:
    if recording.u is not None:
        return recording.u
    return np.zeros(recording.y.shape[:2] + (0,), np.float32)


@eqx.filter_jit
def _posterior_trials(model, y, stimulus, mask, t0, bin_width, key, n_samples):
    keys = jax.random.split(key, y.shape[0])

    def one_trial(yi, si, mi, ki):
        paths = model.posterior_paths(yi, si, t0, bin_width, ki, n_samples, mask=mi)
        expected = jax.vmap(lambda path: model.observation.mean(model.observed(path)))(paths)
        return expected.mean(axis=0), paths.mean(axis=0)

    return jax.vmap(one_trial)(y, stimulus, mask, keys)


def posterior_rates(model, recording, key, n_samples: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Return posterior mean expected observations (trials, time, channels) and latents (trials, time, latents).

    The recognition model reads the whole trial, so this is smoothing, not forecasting.
    Under co-smoothing it reads only the held-in channels, and the expected counts of
    the held-out channels are the co-smoothing prediction.
    """
    expected, latents = _posterior_trials(
        model, jnp.asarray(recording.y), jnp.asarray(_stimulus(recording)), jnp.asarray(recording.observed),
        float(recording.ts[0]), float(recording.dt), key, n_samples,
    )
    return np.asarray(expected), np.asarray(latents)


def heldout_bits_per_spike(recording, expected: np.ndarray, heldout, skip_bins: int) -> float:
    """Return co-bps of `expected` counts on `recording`, leaving the first `skip_bins` bins of each trial out."""
    mask = None if recording.mask is None else score_window(recording.mask, skip_bins)
    return co_smoothing_bits_per_spike(
        score_window(recording.y, skip_bins), score_window(expected, skip_bins), list(heldout), mask
    )


def _fit_spike_smoothing(train, validation, heldout, skip_bins: int) -> tuple[SpikeSmoothing, dict]:
    """Fit spike smoothing for each kernel width and readout ridge; keep the best on validation co-bps."""
    best, best_score, scores = None, -np.inf, {}
    for kernel_sd, ridge in itertools.product(KERNEL_SDS, RIDGES):
        baseline = SpikeSmoothing(list(heldout), kernel_sd=kernel_sd, ridge=ridge).fit(train)
        score = heldout_bits_per_spike(validation, baseline.predict(validation), heldout, skip_bins)
        scores[f"kernel_sd={kernel_sd},ridge={ridge}"] = score
        if score > best_score:
            best, best_score = baseline, score
    logger.info("spike smoothing: validation co-bps %s", scores)
    return best, {"kernel_sd": best.kernel_sd, "ridge": best.readout.ridge, "validation_co_bps": best_score}


def _fit_gpfa(train, validation, heldout, latent_size: int, skip_bins: int) -> tuple[GPFACoSmoothing, dict]:
    """Fit GPFA once, then its Poisson readout for each ridge; keep the best on validation co-bps."""
    baseline = GPFACoSmoothing(list(heldout), latent_size=latent_size, n_iterations=GPFA_ITERATIONS).fit(train)
    train_latents = baseline.latents(train)
    heldout_counts = train.y[:, :, list(heldout)]

    best_readout, best_score = None, -np.inf
    for ridge in RIDGES:
        baseline.readout = PoissonReadout(ridge).fit(train_latents, heldout_counts)
        score = heldout_bits_per_spike(validation, baseline.predict(validation), heldout, skip_bins)
        if score > best_score:
            best_readout, best_score = baseline.readout, score
    baseline.readout = best_readout
    return baseline, {"latent_size": latent_size, "ridge": best_readout.ridge, "validation_co_bps": best_score}


def _decode(features: dict[str, np.ndarray], behaviour: dict[str, np.ndarray], names: list[str], observed: dict) -> dict:
    """Return the test R^2 of each behaviour channel decoded by ridge regression from each feature set.

    `features[split]` and `behaviour[split]` are (trials, time, k) arrays for the splits
    train, validation and test, and `observed[split]` the behaviour's mask or None. The
    decoder is fitted on train, its penalty chosen by the mean validation R^2, and scored
    on test, each on the observed entries only.
    """
    best_alpha, best_score = None, -np.inf
    for alpha in DECODER_ALPHAS:
        weights, bias = fit_masked_ridge(features["train"], behaviour["train"], observed["train"], alpha)
        score = float(r_squared(
            behaviour["validation"], features["validation"] @ weights + bias, observed["validation"]
        ))
        if score > best_score:
            best_alpha, best_score = alpha, score

    weights, bias = fit_masked_ridge(features["train"], behaviour["train"], observed["train"], best_alpha)
    per_channel = r_squared(behaviour["test"], features["test"] @ weights + bias, observed["test"], per_channel=True)
    scores = {name: float(value) for name, value in zip(names, per_channel)}
    return {**scores, "mean": float(np.mean(per_channel)), "alpha": best_alpha}


def co_smoothing_scores(model, train, validation, test, config: RunConfig, key) -> dict:
    """Return co-bps of the model and both baselines on the test trials, and behaviour decoding R^2."""
    heldin, heldout = heldout_channel_split(config.data.heldout_neurons, test.n_channels)
    skip = config.evaluation.skip_bins
    splits = {"train": train, "validation": validation, "test": test}
    keys = dict(zip(splits, jax.random.split(key, 3)))
    posterior = {name: posterior_rates(model, split, keys[name], config.evaluation.n_samples) for name, split in splits.items()}

    smoothing, smoothing_settings = _fit_spike_smoothing(train, validation, heldout, skip)
    gpfa_size = min(config.model.latent_size, len(heldin))
    gpfa, gpfa_settings = _fit_gpfa(train, validation, heldout, gpfa_size, skip)
    scores = {
        "heldout_channels": list(heldout),
        "model": heldout_bits_per_spike(test, posterior["test"][0], heldout, skip),
        "spike_smoothing": heldout_bits_per_spike(test, smoothing.predict(test), heldout, skip),
        "gpfa": heldout_bits_per_spike(test, gpfa.predict(test), heldout, skip),
        "spike_smoothing_settings": smoothing_settings,
        "gpfa_settings": gpfa_settings,
    }
    if test.behaviour is None:
        return scores

    names = test.metadata.get("behaviour_names") or [f"behaviour_{index}" for index in range(test.behaviour.shape[-1])]
    behaviour = {name: score_window(split.behaviour, skip) for name, split in splits.items()}
    observed = {
        name: None if split.behaviour_mask is None else score_window(split.behaviour_mask, skip)
        for name, split in splits.items()
    }
    feature_sets = {
        "model_latents": {name: posterior[name][1] for name in splits},
        "smoothed_spikes": {name: smoothing.features(split) for name, split in splits.items()},
        "gpfa_latents": {name: gpfa.latents(split) for name, split in splits.items()},
    }
    scores["behaviour_decoding_r_squared"] = {
        method: _decode(
            {name: score_window(value, skip) for name, value in features.items()}, behaviour, list(names), observed
        )
        for method, features in feature_sets.items()
    }
    return scores


def heldout_r_squared(recording, expected: np.ndarray, heldout, skip_bins: int) -> float:
    """Return the R^2 of `expected` on the held-out channels, averaged over them, leaving the first `skip_bins` bins out."""
    heldout = list(heldout)
    mask = None if recording.mask is None else score_window(recording.mask, skip_bins)[..., heldout]
    return float(r_squared(
        score_window(recording.y, skip_bins)[..., heldout], score_window(expected, skip_bins)[..., heldout], mask
    ))


def gaussian_co_smoothing_scores(model, train, validation, test, config: RunConfig, key) -> dict:
    """Return the test R^2 of the held-out channels: the model's posterior mean and reduced-rank regression.

    The model's prediction is the posterior mean of the held-out channels given the
    held-in channels of the whole trial. Reduced-rank regression maps the held-in
    channels of a bin to the held-out channels of the same bin. Its ridge and rank are
    chosen by cross-validation over the training trials, and it is then fitted on all of them.
    With a mask, the regression is fitted on the bins where every channel is observed. An
    unobserved held-in channel of a test bin counts as its training mean, and both scores
    count only the observed held-out entries.
    """
    heldin, heldout = heldout_channel_split(config.data.heldout_neurons, test.n_channels)
    heldin, heldout = list(heldin), list(heldout)
    skip = config.evaluation.skip_bins
    expected, _ = posterior_rates(model, test, key, config.evaluation.n_samples)

    n_folds = min(5, train.n_trials)
    regression, settings = fit_reduced_rank_by_cross_validation(
        train.y[:, :, heldin], train.y[:, :, heldout], n_folds=n_folds, seed=config.seed,
        x_mask=train.observed[:, :, heldin], y_mask=train.observed[:, :, heldout],
    )
    regression_prediction = np.zeros(test.y.shape)
    regression_prediction[:, :, heldout] = regression.predict(test.y[:, :, heldin], test.observed[:, :, heldin])
    return {
        "heldout_channels": heldout,
        "model": heldout_r_squared(test, expected, heldout, skip),
        "reduced_rank_regression": heldout_r_squared(test, regression_prediction, heldout, skip),
        "reduced_rank_regression_settings": settings,
    }
