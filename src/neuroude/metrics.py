"""Scores of predictions against recordings: Poisson likelihood, bits per spike, R^2.

Every function takes numpy arrays of shape (trials, time, channels). `mean_counts` is
the expected count per bin (rate times bin width). `mask`, when given, is a bool array of
the same shape, True where an entry is observed and scored.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, xlogy

from neuroude.errors import DataError


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
