"""Place samples taken at irregular times onto the evenly spaced grid the solvers integrate on.

A sample taken at time `t` goes to the grid point nearest `t`,

    k = rint((t - t_start) / bin_width),    ts[k] = t_start + k * bin_width,

and the bins that receive no sample are masked out, so the likelihood counts only
recorded samples, each compared with the latent path at `ts[k]` instead of at `t`.
The offset `|ts[k] - t|` is at most `bin_width / 2`. Take a path whose drift is
bounded by `F` and whose diffusion is bounded by `sigma`. Evaluating it at `ts[k]`
moves its deterministic part by at most `F * bin_width / 2`, and the noise adds a
term with standard deviation at most `sigma * sqrt(bin_width / 2)`. Pick `bin_width`
well below the fastest time scale of the dynamics and below the shortest gap between
samples, because two samples of one trial may not share a grid point.

This fits the fixed-step solver unchanged: it already returns the path at every grid
point, and the mask already removes unobserved bins from the likelihood.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from neuroude.errors import ConfigError, DataError

# Relative tolerance when a grid is derived from a duration, so that 1.0 / 0.1 counts as 10 steps.
GRID_TOLERANCE = 1e-9


def grid_irregular_samples(
    times: Any,
    values: Any,
    bin_width: float,
    t_start: float = 0.0,
    duration: float | None = None,
    sample_mask: Any = None,
) -> dict[str, Any]:
    """Return `y`, `ts`, `mask` and the largest time offset for samples taken at irregular times.

    `times` is (trials, samples) in seconds, or a sequence of 1-D arrays when trials have
    different numbers of samples. `values` is (trials, samples, channels), or a sequence of
    (samples, channels) arrays. `sample_mask`, when given, has the shape of `values` and
    is False for samples whose value is missing on a channel.

    Each trial covers `[t_start, t_start + duration]`. Without `duration`, the trials end
    at the latest sample time of any trial. Raises DataError for NaN, unsorted or
    out-of-window times and for two samples on one grid point, naming the trial and index.
    """
    bin_width = _check_positive("bin_width", bin_width)
    t_start = _check_finite_number("t_start", t_start)
    trial_times, trial_values, trial_masks = _split_trials(times, values, sample_mask)

    for trial, trial_time in enumerate(trial_times):
        _check_trial_times(trial, trial_time, t_start)
    if duration is None:
        duration = max(float(trial_time[-1]) for trial_time in trial_times) - t_start
    else:
        duration = _check_positive("duration", duration)

    n_bins = int(np.rint(duration / bin_width * (1 + GRID_TOLERANCE))) + 1
    n_channels = trial_values[0].shape[1]
    y = np.zeros((len(trial_times), n_bins, n_channels), np.float32)
    mask = np.zeros(y.shape, bool)
    largest_offset = 0.0

    for trial, (trial_time, trial_value, trial_mask) in enumerate(zip(trial_times, trial_values, trial_masks)):
        _check_window(trial, trial_time, t_start, duration)
        index = np.rint((trial_time - t_start) / bin_width).astype(np.int64)
        index = np.minimum(index, n_bins - 1)
        _check_one_sample_per_bin(trial, index, trial_time, bin_width)
        y[trial, index] = trial_value
        mask[trial, index] = trial_mask
        offsets = np.abs(t_start + index * bin_width - trial_time)
        largest_offset = max(largest_offset, float(offsets.max()))

    # Values behind a False mask are set to 0, as Recording expects of unobserved entries. The recognition model
    # reads the mask beside y (model.recognition_mask), so these zeros are not taken for observed ones.
    y[~mask] = 0.0
    ts = t_start + np.arange(n_bins) * bin_width
    return {"y": y, "ts": ts, "mask": mask, "largest_offset": largest_offset}


def _check_positive(name: str, value: Any) -> float:
    value = _check_finite_number(name, value)
    if value <= 0:
        raise ConfigError(f"{name} is {value}; expected a positive number of seconds")
    return value


def _check_finite_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
        raise ConfigError(f"{name} is {value!r}; expected a finite number of seconds")
    return float(value)


def _split_trials(times: Any, values: Any, sample_mask: Any) -> tuple[list, list, list]:
    """Return per-trial lists of times (samples,), values (samples, channels) and masks."""
    trial_times = _per_trial("sample_times", times, ndim=1)
    trial_values = _per_trial("values", values, ndim=2)
    if len(trial_times) != len(trial_values):
        raise DataError(
            f"sample_times has {len(trial_times)} trials and values has {len(trial_values)}; expected the same number"
        )
    if len(trial_times) == 0:
        raise DataError("sample_times has no trials; expected at least one trial")

    channels = {value.shape[1] for value in trial_values}
    if len(channels) != 1 or 0 in channels:
        raise DataError(f"the trials of values have {sorted(channels)} channels; expected one positive channel count")

    if sample_mask is None:
        trial_masks = [np.ones(value.shape, bool) for value in trial_values]
    else:
        trial_masks = _per_trial("sample_mask", sample_mask, ndim=2)

    for trial, (trial_time, trial_value, trial_mask) in enumerate(zip(trial_times, trial_values, trial_masks)):
        if trial_value.shape[0] != trial_time.shape[0]:
            raise DataError(
                f"trial {trial} has {trial_time.shape[0]} sample times and {trial_value.shape[0]} samples in values; "
                "expected one time per sample"
            )
        if trial_mask.shape != trial_value.shape or trial_mask.dtype != np.bool_:
            raise DataError(
                f"sample_mask of trial {trial} has shape {trial_mask.shape} and dtype {trial_mask.dtype}; "
                f"expected bool of shape {trial_value.shape}"
            )
        hidden = np.where(trial_mask, trial_value, 0.0)
        if not np.all(np.isfinite(hidden)):
            first = tuple(int(i) for i in np.argwhere(~np.isfinite(hidden))[0])
            raise DataError(
                f"values of trial {trial} are NaN or infinite at (sample, channel) {first}; "
                "expected finite values, or False in sample_mask there"
            )
    return trial_times, trial_values, trial_masks


def _per_trial(name: str, array: Any, ndim: int) -> list[np.ndarray]:
    """Split a stacked array or a sequence of per-trial arrays into a list with `ndim` axes per trial."""
    if isinstance(array, np.ndarray) or not isinstance(array, Sequence):
        array = np.asarray(array)
        if array.ndim != ndim + 1:
            raise DataError(f"{name} has shape {array.shape}; expected {ndim + 1} axes, trials first")
        array = list(array)

    trials = []
    for trial, value in enumerate(array):
        value = np.asarray(value)
        if value.ndim != ndim:
            raise DataError(f"{name} of trial {trial} has shape {value.shape}; expected {ndim} axes")
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            raise DataError(f"{name} of trial {trial} has dtype {value.dtype}; expected numbers")
        trials.append(value if value.dtype == np.bool_ else value.astype(np.float64))
    return trials


def _check_trial_times(trial: int, times: np.ndarray, t_start: float) -> None:
    if times.size == 0:
        raise DataError(f"trial {trial} has no samples; expected at least one sample time")

    bad = np.flatnonzero(~np.isfinite(times))
    if bad.size:
        raise DataError(
            f"sample_times of trial {trial} is {times[bad[0]]} at index {bad[0]}; expected finite times in seconds"
        )

    steps = np.diff(times)
    backward = np.flatnonzero(steps <= 0)
    if backward.size:
        index = int(backward[0]) + 1
        raise DataError(
            f"sample_times of trial {trial} is unsorted at index {index}: {times[index]} s does not come after "
            f"{times[index - 1]} s at index {index - 1}; expected strictly increasing times"
        )

    if times[0] < t_start:
        raise DataError(
            f"sample_times of trial {trial} is {times[0]} s at index 0, before the trial starts at t_start = {t_start} s"
        )


def _check_window(trial: int, times: np.ndarray, t_start: float, duration: float) -> None:
    t_stop = t_start + duration
    late = np.flatnonzero(times > t_stop * (1 + GRID_TOLERANCE) + GRID_TOLERANCE)
    if late.size:
        index = int(late[0])
        raise DataError(
            f"sample_times of trial {trial} is {times[index]} s at index {index}, after the trial ends at "
            f"{t_stop} s (t_start {t_start} s + duration {duration} s); expected times inside the trial"
        )


def _check_one_sample_per_bin(trial: int, index: np.ndarray, times: np.ndarray, bin_width: float) -> None:
    shared = np.flatnonzero(np.diff(index) == 0)
    if shared.size:
        first = int(shared[0])
        raise DataError(
            f"samples {first} and {first + 1} of trial {trial} ({times[first]} s and {times[first + 1]} s) fall on "
            f"the same grid point with bin_width {bin_width} s; expected a bin_width below the shortest gap between "
            "samples"
        )


def check_grid_input(u: Any, n_trials: int, n_bins: int) -> None:
    """Raise DataError unless `u` is None or sampled on the grid, (trials, n_bins, inputs)."""
    if u is None:
        return
    shape = np.shape(u)
    if len(shape) != 3 or shape[:2] != (n_trials, n_bins):
        raise DataError(
            f"u has shape {shape}; expected the input on the solver grid, ({n_trials}, {n_bins}, inputs), "
            "one row per grid point"
        )

