"""Scores of predictions against recordings: Poisson likelihood, bits per spike, R^2,
co-smoothing, decoding, functional connectivity (FC) and its dynamics (FCD).

Scores of predictions take numpy arrays of shape (trials, time, channels); the FC
functions take one (time, channels) signal. `mean_counts` is the expected count per bin
(rate times bin width). `mask`, when given, is a bool array of the same shape as y,
True where an entry is observed and scored.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, xlogy

from neuroude.errors import ConfigError, DataError

HELDOUT_SEED = 0  # fixed, so the held-out neurons stay the same whatever the run's seed


def _as_array(name: str, value) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 3:
        raise DataError(f"{name} has shape {array.shape}; expected (trials, time, channels)")
    return array


def _validate_pair(
    y, other, other_name: str, mask
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return y, the other array and a full bool mask after checking that the shapes match."""
    y = _as_array("y", y)
    other = _as_array(other_name, other)
    if other.shape != y.shape:
        raise DataError(f"{other_name} has shape {other.shape}; expected the shape of y, {y.shape}")

    if mask is None:
        mask = np.ones(y.shape, dtype=bool)
    else:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != y.shape:
            raise DataError(f"mask has shape {mask.shape} and dtype {mask.dtype}; expected bool of shape {y.shape}")
    if not mask.any():
        raise DataError("mask is False everywhere; expected at least one observed entry to score")

    for name, array in (("y", y), (other_name, other)):
        if not np.all(np.isfinite(array[mask])):
            raise DataError(f"{name} has NaN or infinite values at observed entries; expected finite values")
    return y, other, mask


def _validate_counts(y: np.ndarray, mean_counts: np.ndarray, mask: np.ndarray) -> None:
    if np.any(y[mask] < 0):
        raise DataError(f"y has negative values (minimum {y[mask].min()}); expected spike counts >= 0")
    if np.any(mean_counts[mask] < 0):
        raise DataError(f"mean_counts has negative values (minimum {mean_counts[mask].min()}); expected expected counts >= 0")


def _poisson_log_pmf(y: np.ndarray, mean_counts: np.ndarray) -> np.ndarray:
    # xlogy gives 0 for y = 0 and mean 0, and -inf for y > 0 and mean 0.
    with np.errstate(divide="ignore"):
        return xlogy(y, mean_counts) - mean_counts - gammaln(y + 1.0)


def poisson_log_likelihood(y, mean_counts, mask=None) -> float:
    """Return the Poisson log-likelihood in nats, summed over observed entries.

    sum over observed (i, t, n) of y log(l) - l - log(y!), with l = mean_counts. It is
    -inf when some l is 0 where y > 0.
    """
    y, mean_counts, mask = _validate_pair(y, mean_counts, "mean_counts", mask)
    _validate_counts(y, mean_counts, mask)
    return float(_poisson_log_pmf(y[mask], mean_counts[mask]).sum())


def _channel_means(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of each channel over its observed (trials, time) entries, shape (channels,)."""
    n_observed = mask.sum(axis=(0, 1))
    if np.any(n_observed == 0):
        channels = np.flatnonzero(n_observed == 0).tolist()
        raise DataError(f"channels {channels} have no observed entries; expected at least one per channel")
    return np.where(mask, y, 0.0).sum(axis=(0, 1)) / n_observed


def bits_per_spike(y, mean_counts, mask=None) -> float:
    """Return the log-likelihood gain over a constant-rate model, in bits per spike.

    (LL(mean_counts) - LL(null)) / (n_spikes ln 2), where the null model predicts each
    channel's mean count over the scored (trials, time) entries, and n_spikes is the sum
    of y over those entries.
    """
    y, mean_counts, mask = _validate_pair(y, mean_counts, "mean_counts", mask)
    _validate_counts(y, mean_counts, mask)

    n_spikes = y[mask].sum()
    if n_spikes <= 0:
        raise DataError("y has no spikes at the scored entries; bits per spike needs at least one")

    null = np.broadcast_to(_channel_means(y, mask), y.shape)
    model_ll = _poisson_log_pmf(y[mask], mean_counts[mask]).sum()
    null_ll = _poisson_log_pmf(y[mask], null[mask]).sum()
    return float((model_ll - null_ll) / (n_spikes * np.log(2.0)))


def r_squared(y, prediction, mask=None, per_channel=False) -> float | np.ndarray:
    """Return the coefficient of determination 1 - SSE / SST of each channel.

    SST is taken around each channel's mean over its observed entries. The channels'
    values are averaged with equal weights unless `per_channel` is True, which returns
    the array of shape (channels,). A channel with zero variance raises DataError.
    """
    y, prediction, mask = _validate_pair(y, prediction, "prediction", mask)

    means = _channel_means(y, mask)
    sse = np.where(mask, (y - prediction) ** 2, 0.0).sum(axis=(0, 1))
    sst = np.where(mask, (y - means) ** 2, 0.0).sum(axis=(0, 1))
    if np.any(sst == 0):
        channels = np.flatnonzero(sst == 0).tolist()
        raise DataError(f"channels {channels} of y are constant; R^2 is undefined for them")

    scores = 1.0 - sse / sst
    return scores if per_channel else float(scores.mean())


def score_window(array, skip_bins: int) -> np.ndarray:
    """Return array[:, skip_bins:], dropping the first bins of every trial from scoring.

    Used to leave out the start of each trial, where a model's state is still settling.
    """
    array = np.asarray(array)
    if array.ndim < 2:
        raise DataError(f"array has shape {array.shape}; expected (trials, time, ...)")
    if not isinstance(skip_bins, (int, np.integer)) or isinstance(skip_bins, bool):
        raise DataError(f"skip_bins is {skip_bins!r}; expected an integer number of bins")
    if skip_bins < 0 or skip_bins >= array.shape[1]:
        raise DataError(f"skip_bins is {skip_bins}; expected 0 <= skip_bins < {array.shape[1]} (the number of time bins)")
    return array[:, skip_bins:]


def _channel_indices(name: str, indices, n_channels: int) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise DataError(f"{name} is {indices.tolist()!r}; expected a non-empty list of channel indices")
    out_of_range = indices[(indices < 0) | (indices >= n_channels)]
    if out_of_range.size:
        raise DataError(
            f"{name} {out_of_range.tolist()} are out of range; expected indices from 0 to {n_channels - 1}"
        )
    return indices


def heldout_channel_split(heldout, n_channels: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return sorted (held-in, held-out) channel indices for co-smoothing.

    `heldout` is either a fraction in (0, 1), of which round(fraction * n_channels)
    channels are drawn with the fixed seed `HELDOUT_SEED`, or a list of channel indices.
    At least one channel must be held in and one held out.
    """
    if isinstance(heldout, bool):
        raise ConfigError(f"heldout_neurons is {heldout!r}; expected a fraction in (0, 1) or a list of channel indices")
    if isinstance(heldout, float):
        if not 0.0 < heldout < 1.0:
            raise ConfigError(f"heldout_neurons is {heldout}; expected a fraction in (0, 1) or a list of channel indices")
        n_heldout = int(round(heldout * n_channels))
        if not 0 < n_heldout < n_channels:
            raise ConfigError(
                f"heldout_neurons {heldout} of {n_channels} channels holds out {n_heldout}; "
                "expected at least one channel held out and one held in"
            )
        chosen = np.random.default_rng(HELDOUT_SEED).choice(n_channels, n_heldout, replace=False)
    else:
        chosen = np.asarray(heldout)
        if chosen.ndim != 1 or chosen.size == 0 or not np.issubdtype(chosen.dtype, np.integer):
            raise ConfigError(f"heldout_neurons is {heldout!r}; expected a fraction in (0, 1) or a list of channel indices")
        out_of_range = chosen[(chosen < 0) | (chosen >= n_channels)]
        if out_of_range.size:
            raise ConfigError(
                f"heldout_neurons {out_of_range.tolist()} are out of range; the recording has {n_channels} "
                f"channels, so expected indices from 0 to {n_channels - 1}"
            )
        if np.unique(chosen).size != chosen.size or chosen.size >= n_channels:
            raise ConfigError(
                f"heldout_neurons is {chosen.tolist()}; expected distinct indices that leave at least one of "
                f"the {n_channels} channels held in"
            )

    heldout_set = {int(index) for index in chosen}
    heldin = tuple(index for index in range(n_channels) if index not in heldout_set)
    return heldin, tuple(sorted(heldout_set))


def co_smoothing_bits_per_spike(y, mean_counts, heldout, mask=None) -> float:
    """Return co-smoothing bits per spike (co-bps) of the held-out channels.

    The Neural Latents Benchmark score: bits per spike (see `bits_per_spike`) of the
    predicted counts of the held-out neurons only, with each held-out neuron's null model
    its own mean count over the scored trials and bins. `heldout` lists channel indices.
    The predictions must come from the held-in neurons, which this function cannot check.
    """
    y = _as_array("y", y)
    heldout = _channel_indices("heldout", heldout, y.shape[-1])
    mean_counts = _as_array("mean_counts", mean_counts)
    if mean_counts.shape != y.shape:
        raise DataError(f"mean_counts has shape {mean_counts.shape}; expected the shape of y, {y.shape}")
    mask = None if mask is None else np.asarray(mask)[..., heldout]
    return bits_per_spike(y[..., heldout], mean_counts[..., heldout], mask)


def forward_prediction_bits_per_spike(y, mean_counts, n_forward_bins: int, mask=None) -> float:
    """Return bits per spike over the last `n_forward_bins` bins of every trial.

    The Neural Latents Benchmark's forward-prediction score (fp-bps): the model reads the
    bins before them and predicts these ones. The null model is each channel's mean count
    over the forward bins, as in `bits_per_spike`.
    """
    y = _as_array("y", y)
    n_time = y.shape[1]
    if not isinstance(n_forward_bins, (int, np.integer)) or isinstance(n_forward_bins, bool) or not 0 < n_forward_bins <= n_time:
        raise DataError(f"n_forward_bins is {n_forward_bins!r}; expected an integer from 1 to {n_time} (the number of time bins)")
    start = n_time - n_forward_bins
    mask = None if mask is None else np.asarray(mask)[:, start:]
    return bits_per_spike(y[:, start:], np.asarray(mean_counts)[:, start:], mask)


def _flatten_bins(name: str, array) -> np.ndarray:
    """Reshape (trials, time, k) or (samples, k) to (samples, k)."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 3:
        array = array.reshape(-1, array.shape[-1])
    if array.ndim != 2:
        raise DataError(f"{name} has shape {array.shape}; expected (trials, time, channels) or (samples, channels)")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{name} has NaN or infinite values; expected finite values")
    return array


def fit_ridge(features, targets, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Fit targets ~ features @ W + b by ridge regression; return W (features, targets) and b.

    Minimises |targets - features W - b|^2 + alpha |W|^2 with the intercept b unpenalised,
    solved in closed form on centred data: W = (Xc' Xc + alpha I)^-1 Xc' Yc.
    """
    features = _flatten_bins("features", features)
    targets = _flatten_bins("targets", targets)
    if features.shape[0] != targets.shape[0]:
        raise DataError(f"features have {features.shape[0]} samples and targets {targets.shape[0]}; expected the same number")
    if not (np.isfinite(alpha) and alpha >= 0):
        raise DataError(f"alpha is {alpha!r}; expected a non-negative number")

    feature_mean, target_mean = features.mean(axis=0), targets.mean(axis=0)
    centred = features - feature_mean
    gram = centred.T @ centred + alpha * np.eye(features.shape[1])
    weights = np.linalg.lstsq(gram, centred.T @ (targets - target_mean), rcond=None)[0]
    return weights, target_mean - feature_mean @ weights


def decoding_r_squared(train_features, train_targets, test_features, test_targets, alpha: float = 1.0) -> float:
    """Return the test R^2 of a ridge regression fitted on the training trials.

    Features (rates or latents) and targets (e.g. hand velocity or position) are
    (trials, time, k) arrays. Every bin is one sample. R^2 is 1 - SSE / SST per target
    dimension, around the test mean, averaged over dimensions with equal weights. This
    is how the Neural Latents Benchmark scores velocity decoding.
    """
    weights, bias = fit_ridge(train_features, train_targets, alpha)
    test_features = _flatten_bins("test_features", test_features)
    test_targets = _flatten_bins("test_targets", test_targets)
    if test_features.shape[1] != weights.shape[0]:
        raise DataError(f"test_features have {test_features.shape[1]} columns; expected {weights.shape[0]}, as in training")
    prediction = test_features @ weights + bias
    return float(r_squared(test_targets[None], prediction[None]))


def velocity_r_squared(train_rates, train_velocity, test_rates, test_velocity, alpha: float = 1.0) -> float:
    """Return the R^2 of velocity decoded from predicted rates by ridge regression (see `decoding_r_squared`)."""
    return decoding_r_squared(train_rates, train_velocity, test_rates, test_velocity, alpha)


def psth_r_squared(y, mean_counts, conditions) -> float:
    """Return the R^2 of predicted against recorded peri-stimulus time histograms (PSTHs).

    For each condition, the PSTH of a channel is its mean over that condition's trials,
    for the recording and the prediction alike. The PSTHs of all conditions are
    concatenated along time, and R^2 is computed per channel and averaged.
    """
    y = _as_array("y", y)
    mean_counts = _as_array("mean_counts", mean_counts)
    if mean_counts.shape != y.shape:
        raise DataError(f"mean_counts has shape {mean_counts.shape}; expected the shape of y, {y.shape}")
    conditions = np.asarray(conditions)
    if conditions.shape != (y.shape[0],):
        raise DataError(f"conditions has shape {conditions.shape}; expected one label per trial, ({y.shape[0]},)")

    labels = np.unique(conditions)
    recorded = np.concatenate([y[conditions == label].mean(axis=0) for label in labels])
    predicted = np.concatenate([mean_counts[conditions == label].mean(axis=0) for label in labels])
    return float(r_squared(recorded[None], predicted[None]))


def functional_connectivity(signals) -> np.ndarray:
    """Return the functional connectivity (FC): Pearson correlations between channels over time.

    `signals` is (time, channels); the result is (channels, channels).
    """
    signals = np.asarray(signals, dtype=np.float64)
    if signals.ndim != 2 or signals.shape[0] < 2:
        raise DataError(f"signals has shape {signals.shape}; expected (time, channels) with at least 2 time points")
    if np.any(signals.std(axis=0) == 0):
        channels = np.flatnonzero(signals.std(axis=0) == 0).tolist()
        raise DataError(f"channels {channels} are constant; their correlations are undefined")
    return np.corrcoef(signals, rowvar=False)


def _upper_triangle(name: str, matrix) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise DataError(f"{name} has shape {matrix.shape}; expected a square matrix of at least 2 x 2")
    return matrix[np.triu_indices(matrix.shape[0], k=1)]


def fc_correlation(fc_a, fc_b) -> float:
    """Return the Pearson correlation of the upper triangles (diagonal excluded) of two FC matrices."""
    upper_a, upper_b = _upper_triangle("fc_a", fc_a), _upper_triangle("fc_b", fc_b)
    if upper_a.shape != upper_b.shape:
        raise DataError(f"fc_a is {np.shape(fc_a)} and fc_b {np.shape(fc_b)}; expected matrices of the same size")
    if upper_a.size < 2 or upper_a.std() == 0 or upper_b.std() == 0:
        raise DataError("an FC matrix has constant off-diagonal entries; their correlation is undefined")
    return float(np.corrcoef(upper_a, upper_b)[0, 1])


def fc_dynamics(signals, window: int, step: int) -> np.ndarray:
    """Return the FC-dynamics (FCD) matrix of (time, channels) signals.

    FC is computed in windows of `window` bins, starting every `step` bins. Entry (i, j)
    of the FCD matrix is the Pearson correlation between the upper triangles of the FC
    of windows i and j.
    """
    signals = np.asarray(signals, dtype=np.float64)
    if signals.ndim != 2:
        raise DataError(f"signals has shape {signals.shape}; expected (time, channels)")
    for name, value in (("window", window), ("step", step)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise DataError(f"{name} is {value!r}; expected a positive integer number of bins")
    starts = range(0, signals.shape[0] - window + 1, step)
    if len(starts) < 2:
        raise DataError(
            f"signals have {signals.shape[0]} time points; a window of {window} bins and a step of {step} "
            "give fewer than 2 windows, so use a shorter window or step"
        )
    upper = np.stack([_upper_triangle("FC", functional_connectivity(signals[s : s + window])) for s in starts])
    return np.corrcoef(upper)


def ks_distance(sample_a, sample_b) -> float:
    """Return the two-sample Kolmogorov-Smirnov statistic: max |F_a(v) - F_b(v)| over all values v."""
    sample_a = np.sort(np.ravel(np.asarray(sample_a, dtype=np.float64)))
    sample_b = np.sort(np.ravel(np.asarray(sample_b, dtype=np.float64)))
    if sample_a.size == 0 or sample_b.size == 0:
        raise DataError("a sample is empty; the Kolmogorov-Smirnov distance needs values in both")
    values = np.concatenate([sample_a, sample_b])
    cdf_a = np.searchsorted(sample_a, values, side="right") / sample_a.size
    cdf_b = np.searchsorted(sample_b, values, side="right") / sample_b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def fcd_distance(signals_a, signals_b, window: int, step: int) -> float:
    """Return the KS distance between the upper-triangle entries of the FCD matrices of two signals."""
    fcd_a = fc_dynamics(signals_a, window, step)
    fcd_b = fc_dynamics(signals_b, window, step)
    return ks_distance(_upper_triangle("FCD", fcd_a), _upper_triangle("FCD", fcd_b))
