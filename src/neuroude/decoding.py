"""Behaviour decoded from the posterior over latent paths, with predictive intervals and their calibration.

The recognition model reads a trial's neural observations (never its behaviour),
and S latent paths `x^(s)` are sampled from the posterior SDE. A decoder `g`,
either ridge regression on the latent state or the model's behaviour head, maps
each path to a prediction `g(x^(s)_t)`. The predictive distribution of the
behaviour `b_t` of one channel is the mixture

    p(b_t | y) = (1/S) sum_s N(b_t; g(x^(s)_t), s^2),

where `s^2` is the decoder's residual noise variance. Its mean is the sample
mean of `g`, and its variance is the sample variance of `g` plus `s^2`. The
central level-c interval runs from the `(1 - c)/2` to the `(1 + c)/2` quantile
of the mixture. A recorded value `b` lies inside that interval exactly when its
probability integral transform `F(b)` (the mixture CDF at `b`) lies in
`[(1 - c)/2, (1 + c)/2]`, so the empirical coverage is computed from `F(b)`.
For a calibrated decoder the coverage equals c at every level.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import norm

from .errors import DataError
from .metrics import fit_ridge, r_squared, score_window

logger = logging.getLogger("neuroude")

CALIBRATION_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
REPORTED_LEVELS = (0.5, 0.9)
DECODER_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)  # ridge penalties searched on validation trials
QUANTILE_BISECTIONS = 60


# -- predictive distributions -----------------------------------------------------


def _check_predictive(targets: np.ndarray, samples: np.ndarray, noise_std: np.ndarray) -> None:
    shapes_match = targets.ndim == 2 and samples.ndim == 3
    shapes_match = shapes_match and samples.shape[0] == targets.shape[0] and samples.shape[2] == targets.shape[1]
    if not shapes_match:
        raise DataError(
            f"sample predictions have shape {samples.shape} and targets {targets.shape}; expected (N, samples, "
            "channels) and (N, channels)"
        )
    if noise_std.shape != (targets.shape[-1],) or not np.all(noise_std > 0):
        raise DataError(f"noise_std is {noise_std.tolist()}; expected {targets.shape[-1]} positive values, one per channel")


def probability_integral_transform(targets, samples, noise_std) -> np.ndarray:
    """Return `F(b)`, the predictive mixture CDF at each recorded value.

    `targets` are (N, b), `samples` the decoded paths (N, S, b) and `noise_std`
    the residual noise standard deviation per channel (b,). Returns (N, b).
    """
    targets = np.asarray(targets, np.float64)
    samples = np.asarray(samples, np.float64)
    noise_std = np.atleast_1d(np.asarray(noise_std, np.float64))
    _check_predictive(targets, samples, noise_std)
    return norm.cdf((targets[:, None, :] - samples) / noise_std).mean(axis=1)


def interval_coverage(pit, levels=CALIBRATION_LEVELS) -> np.ndarray:
    """Return the fraction of recorded values inside the central level-c interval, for each level c.

    `pit` contains the values `F(b)` from `probability_integral_transform`.
    """
    pit = np.asarray(pit, np.float64).ravel()
    levels = np.asarray(levels, np.float64)
    if np.any((levels <= 0) | (levels >= 1)):
        raise DataError(f"interval levels are {levels.tolist()}; expected values strictly between 0 and 1")
    distance = np.abs(pit - 0.5)
    return np.array([float(np.mean(distance <= level / 2.0)) for level in levels])


def mixture_quantiles(samples, noise_std, probabilities) -> np.ndarray:
    """Return quantiles of the predictive mixture by bisection on its CDF.

    `samples` (N, S, b), `noise_std` (b,), `probabilities` (q,); returns (q, N, b).
    Each quantile lies within `10 noise_std` of the sampled predictions, which bounds the search.
    """
    samples = np.asarray(samples, np.float64)
    noise_std = np.atleast_1d(np.asarray(noise_std, np.float64))
    quantiles = []
    for probability in np.asarray(probabilities, np.float64):
        lower = samples.min(axis=1) - 10.0 * noise_std
        upper = samples.max(axis=1) + 10.0 * noise_std
        for _ in range(QUANTILE_BISECTIONS):
            middle = 0.5 * (lower + upper)
            below = norm.cdf((middle[:, None, :] - samples) / noise_std).mean(axis=1) < probability
            lower = np.where(below, middle, lower)
            upper = np.where(below, upper, middle)
        quantiles.append(0.5 * (lower + upper))
    return np.stack(quantiles)


@dataclass
class BehaviourPrediction:
    """Predictive distribution of behaviour over trials, time and channels.

    `samples` (trials, S, time, b) are the decoded posterior paths and `noise_std`
    (b,) the residual noise; `mean` and `std` (trials, time, b) are the mixture's
    moments.
    """

    samples: np.ndarray
    noise_std: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        return self.samples.mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.samples.var(axis=1) + self.noise_std**2)

    def interval(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Return the lower and upper end (trials, time, b) of the central level-`level` interval."""
        flat = self._flat_samples()
        lower, upper = mixture_quantiles(flat, self.noise_std, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
        shape = self.mean.shape
        return lower.reshape(shape), upper.reshape(shape)

    def pit(self, behaviour: np.ndarray) -> np.ndarray:
        """Return `F(b)` of each recorded value (trials, time, b)."""
        flat_targets = np.asarray(behaviour).reshape(-1, behaviour.shape[-1])
        return probability_integral_transform(flat_targets, self._flat_samples(), self.noise_std).reshape(behaviour.shape)

    def skip(self, skip_bins: int) -> BehaviourPrediction:
        """Return the prediction without the first `skip_bins` bins of each trial."""
        return BehaviourPrediction(self.samples[:, :, skip_bins:], self.noise_std)

    def _flat_samples(self) -> np.ndarray:
        # (trials, S, time, b) -> (trials * time, S, b), one row per scored value.
        trials, n_samples, n_time, channels = self.samples.shape
        return self.samples.transpose(0, 2, 1, 3).reshape(trials * n_time, n_samples, channels)


# -- posterior paths and decoders ----------------------------------------------------


@eqx.filter_jit
def _posterior_samples(model, y, stimulus, mask, t0, bin_width, key, n_samples):
    keys = jax.random.split(key, y.shape[0])

    def one_trial(yi, si, mi, ki):
        return model.posterior_paths(yi, si, t0, bin_width, ki, n_samples, mask=mi)

    return jax.vmap(one_trial)(y, stimulus, mask, keys)


def posterior_path_samples(model, recording, key, n_samples: int) -> np.ndarray:
    """Return latent paths (trials, S, time, d) sampled from the posterior SDE given each trial's observations."""
    paths = _posterior_samples(
        model, jnp.asarray(recording.y), jnp.asarray(_stimulus(recording)), jnp.asarray(recording.observed),
        float(recording.ts[0]), float(recording.dt), key, n_samples,
    )
    return np.asarray(paths)


def _stimulus(recording) -> np.ndarray:
    if recording.u is not None:
        return recording.u
    return np.zeros(recording.y.shape[:2] + (0,), np.float32)


def split_posterior_paths(model, splits: dict, key, n_samples: int) -> dict[str, np.ndarray]:
    """Sample posterior paths of every split in one call, so the sampler compiles once rather than once per split."""
    first = next(iter(splits.values()))
    y = np.concatenate([split.y for split in splits.values()])
    stimulus = np.concatenate([_stimulus(split) for split in splits.values()])
    mask = np.concatenate([split.observed for split in splits.values()])
    paths = _posterior_samples(
        model, jnp.asarray(y), jnp.asarray(stimulus), jnp.asarray(mask), float(first.ts[0]), float(first.dt), key,
        n_samples,
    )
    boundaries = np.cumsum([split.n_trials for split in splits.values()])[:-1]
    return dict(zip(splits, np.split(np.asarray(paths), boundaries)))


@dataclass
class RidgeDecoder:
    """Behaviour as an affine map of the latent state, `b_t = W x_t + c`, fitted by ridge regression."""

    weights: np.ndarray
    bias: np.ndarray
    alpha: float
    noise_std: np.ndarray

    def decode(self, paths: np.ndarray) -> np.ndarray:
        """Map latent paths (..., d) to behaviour (..., b)."""
        return paths @ self.weights + self.bias


def fit_masked_ridge(features, targets, observed=None, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Fit targets ~ features @ W + b by ridge regression on the observed entries of each target channel.

    Ridge regression fits each target channel on its own, so fitting channel c on the
    samples where `observed[..., c]` is True is the exact ridge fit of the observed data.
    `observed` None fits every sample, as `fit_ridge` does.
    """
    if observed is None:
        return fit_ridge(features, targets, alpha)
    features = np.asarray(features, np.float64).reshape(-1, np.shape(features)[-1])
    targets = np.asarray(targets, np.float64).reshape(-1, np.shape(targets)[-1])
    observed = np.asarray(observed, bool).reshape(targets.shape)
    weights = np.empty((features.shape[1], targets.shape[1]))
    bias = np.empty(targets.shape[1])
    for channel in range(targets.shape[1]):
        rows = observed[:, channel]
        if rows.sum() < 2:
            raise DataError(f"behaviour channel {channel} has {int(rows.sum())} observed bins; expected at least 2")
        channel_weights, channel_bias = fit_ridge(features[rows], targets[rows, channel : channel + 1], alpha)
        weights[:, channel], bias[channel] = channel_weights[:, 0], channel_bias[0]
    return weights, bias


def _observed_mean(values: np.ndarray, observed: np.ndarray | None) -> np.ndarray:
    """Return the mean per channel (last axis) over the observed entries, or over all entries without a mask."""
    if observed is None:
        return values.reshape(-1, values.shape[-1]).mean(axis=0)
    return np.sum(np.where(observed, values, 0.0), axis=tuple(range(values.ndim - 1))) / observed.reshape(
        -1, observed.shape[-1]
    ).sum(axis=0)


def fit_ridge_decoder(
    train_paths, train_behaviour, validation_paths, validation_behaviour, train_observed=None, validation_observed=None
) -> RidgeDecoder:
    """Fit the ridge decoder on the posterior mean latents of the training trials.

    The penalty is the one of `DECODER_ALPHAS` with the best validation R^2.
    The residual noise variance per channel is moment-matched on the training
    trials: the mean squared error of the predictive mean minus the mean
    variance across posterior samples, so that the predictive variance matches
    the training error. It is floored at 1e-6 of the behaviour's variance.
    Paths are (trials, S, time, d) and behaviour (trials, time, b). The masks
    `train_observed` and `validation_observed` (bool, the shape of the behaviour)
    restrict the fit, the validation score and the noise variance to observed entries.
    """
    train_mean = train_paths.mean(axis=1)
    validation_mean = validation_paths.mean(axis=1)
    best_alpha, best_score = DECODER_ALPHAS[0], -np.inf
    for alpha in DECODER_ALPHAS:
        weights, bias = fit_masked_ridge(train_mean, train_behaviour, train_observed, alpha)
        score = float(r_squared(validation_behaviour, validation_mean @ weights + bias, validation_observed))
        if score > best_score:
            best_alpha, best_score = alpha, score
    weights, bias = fit_masked_ridge(train_mean, train_behaviour, train_observed, best_alpha)

    decoded = train_paths @ weights + bias
    squared_error = _observed_mean((train_behaviour - decoded.mean(axis=1)) ** 2, train_observed)
    sample_variance = _observed_mean(decoded.var(axis=1), train_observed)
    behaviour_mean = _observed_mean(train_behaviour, train_observed)
    floor = 1e-6 * _observed_mean((train_behaviour - behaviour_mean) ** 2, train_observed) + 1e-12
    noise_variance = np.maximum(squared_error - sample_variance, floor)
    return RidgeDecoder(weights, bias, best_alpha, np.sqrt(noise_variance))


def head_prediction(model, paths: np.ndarray) -> BehaviourPrediction:
    """Decode paths (trials, S, time, d) with the model's behaviour head; its noise is the head's fitted std.

    Both are in the recording's units, also when the head fits standardised behaviour.
    """
    head = model.behaviour
    weights = np.asarray(head.readout.weight, np.float64).T
    bias = np.asarray(head.readout.bias, np.float64)
    standardised = paths @ weights + bias
    mean = np.asarray(head.offset, np.float64) + np.asarray(head.scale, np.float64) * standardised
    return BehaviourPrediction(mean, head.noise_std())


def head_test_prediction(model, train, validation, test, n_samples: int, key) -> BehaviourPrediction:
    """Decode the whole test trials with the behaviour head on posterior paths.

    The paths are those `behaviour_decoding_scores` scores when given the same `key` and
    `n_samples`, so a figure of this prediction shows what metrics.json scores. To reproduce
    them it samples the paths of every split, a posterior pass over the whole recording.
    `evaluate` returns the same prediction without that pass.
    """
    paths = split_posterior_paths(model, {"train": train, "validation": validation, "test": test}, key, n_samples)["test"]
    return head_prediction(model, np.asarray(paths, np.float64))


# -- scores ----------------------------------------------------------------------------


def calibration_scores(prediction: BehaviourPrediction, behaviour: np.ndarray, names: list[str], observed=None) -> dict:
    """Return R^2 of the predictive mean, interval coverage and the calibration curve on `behaviour`.

    With `observed` (bool, the shape of `behaviour`), only the observed entries are scored.
    """
    per_channel = r_squared(behaviour, prediction.mean, observed, per_channel=True)
    pit = prediction.pit(behaviour)
    empirical = interval_coverage(pit if observed is None else pit[observed], CALIBRATION_LEVELS)
    coverage = dict(zip(CALIBRATION_LEVELS, empirical))
    widths = {}
    for level in REPORTED_LEVELS:
        lower, upper = prediction.interval(level)
        width = upper - lower
        widths[str(level)] = float(np.mean(width if observed is None else width[observed]))
    return {
        "r_squared": {**{name: float(value) for name, value in zip(names, per_channel)}, "mean": float(np.mean(per_channel))},
        "noise_std": prediction.noise_std.astype(float).tolist(),
        "coverage": {str(level): float(coverage[level]) for level in REPORTED_LEVELS},
        "mean_interval_width": widths,
        "calibration": {"nominal": list(CALIBRATION_LEVELS), "empirical": empirical.astype(float).tolist()},
    }


def behaviour_decoding_scores(
    model, train, validation, test, skip_bins: int, n_samples: int, key, paths: dict | None = None
) -> dict:
    """Decode the test trials' behaviour by ridge regression and, when the model has one, its behaviour head.

    Returns, per decoder, test R^2, the coverage of the 50% and 90% intervals,
    the mean interval widths and the calibration curve, scored after the first
    `skip_bins` bins of each trial. Entries where `Recording.behaviour_mask` is False
    are left out of the fits and the scores. `paths` are the posterior paths of the
    whole trials that `split_posterior_paths` returns for these splits, `key` and
    `n_samples`. When they are None, they are sampled here.
    """
    for name, split in (("train", train), ("validation", validation), ("test", test)):
        if split.behaviour is None:
            raise DataError(f"the {name} trials have no behaviour; expected a recording with Recording.behaviour")
    names = test.metadata.get("behaviour_names") or [f"behaviour_{index}" for index in range(test.behaviour.shape[-1])]
    if paths is None:
        paths = split_posterior_paths(model, {"train": train, "validation": validation, "test": test}, key, n_samples)
    paths = {name: np.asarray(value[:, :, skip_bins:], np.float64) for name, value in paths.items()}
    behaviour = {
        "train": score_window(train.behaviour, skip_bins).astype(np.float64),
        "validation": score_window(validation.behaviour, skip_bins).astype(np.float64),
        "test": score_window(test.behaviour, skip_bins).astype(np.float64),
    }
    observed = {
        name: None if split.behaviour_mask is None else score_window(split.behaviour_mask, skip_bins)
        for name, split in (("train", train), ("validation", validation), ("test", test))
    }

    decoder = fit_ridge_decoder(
        paths["train"], behaviour["train"], paths["validation"], behaviour["validation"], observed["train"],
        observed["validation"],
    )
    ridge = BehaviourPrediction(decoder.decode(paths["test"]), decoder.noise_std)
    scores = {"split": "test", "names": list(names), "n_samples": n_samples,
              "ridge": {**calibration_scores(ridge, behaviour["test"], list(names), observed["test"]),
                        "alpha": decoder.alpha}}
    if model.behaviour is not None:
        scores["behaviour_head"] = calibration_scores(
            head_prediction(model, paths["test"]), behaviour["test"], list(names), observed["test"]
        )
    logger.info("behaviour decoding on test trials: %s", describe_decoding(scores))
    return scores


def describe_decoding(scores: dict) -> str:
    """Describe `behaviour_decoding_scores` on one line: each decoder's R^2 per variable and interval coverage."""
    parts = []
    for method, label in (("ridge", "ridge decoder"), ("behaviour_head", "behaviour head")):
        if method not in scores:
            continue
        r_squared_values = scores[method]["r_squared"]
        per_variable = ", ".join(f"{name} {r_squared_values[name]:.3f}" for name in scores["names"])
        coverage = " and ".join(
            f"{value:.2f} of the {100 * float(level):g}% interval" for level, value in scores[method]["coverage"].items()
        )
        parts.append(f"{label} R^2 {per_variable} (mean {r_squared_values['mean']:.3f}), coverage {coverage}")
    return "; ".join(parts)
