"""The `Recording` container shared by every loader, metric and model."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import numpy as np

from neuroude.errors import ConfigError, DataError

# Per-trial lists in `metadata["trial_info"]` are subset by `Recording.select`.
TRIAL_INFO_KEY = "trial_info"


def _as_numeric_array(name: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise DataError(
            f"{name} could not be converted to an array: {error}; expected a numeric array with equal-length rows"
        ) from error
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(f"{name} has dtype {array.dtype}; expected a numeric array")
    return array


def _check_finite(name: str, array: np.ndarray) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        # Only y and behaviour have masks, so only their gaps can be marked as unobserved.
        mask_name = {"y": "mask", "behaviour": "behaviour_mask"}.get(name)
        hint = f" Mark unobserved entries with `{mask_name}` and fill them with 0." if mask_name else ""
        raise DataError(
            f"{name} contains {int(bad.sum())} NaN or infinite values (first at index {first}); "
            f"expected finite values.{hint}"
        )


def _validate_y(y: Any) -> np.ndarray:
    y = _as_numeric_array("y", y)
    if y.ndim != 3:
        raise DataError(f"y has shape {y.shape}; expected (trials, time, channels)")

    if y.shape[1] == 0:
        raise DataError(f"y has shape {y.shape} with an empty time axis (empty trials); expected at least one time bin")
    if y.shape[0] == 0 or y.shape[2] == 0:
        raise DataError(f"y has shape {y.shape}; expected at least one trial and one channel")

    y = y.astype(np.float32)
    _check_finite("y", y)
    return y


def _validate_ts(ts: Any, n_time: int) -> np.ndarray:
    ts = _as_numeric_array("ts", ts).astype(np.float64)
    if ts.ndim != 1 or ts.shape[0] != n_time:
        raise DataError(f"ts has shape {ts.shape}; expected ({n_time},), one time per bin of y")
    _check_finite("ts", ts)

    steps = np.diff(ts)
    if np.any(steps < 0):
        index = int(np.argmax(steps < 0))
        raise DataError(
            f"ts is unsorted: ts[{index + 1}] = {ts[index + 1]} comes after ts[{index}] = {ts[index]}; "
            "expected strictly increasing times"
        )
    if np.any(steps == 0):
        index = int(np.argmax(steps == 0))
        raise DataError(
            f"ts has a repeated time {ts[index]} at indices {index} and {index + 1}; "
            "expected strictly increasing times"
        )
    return ts


def _validate_companion(name: str, value: Any, y_shape: tuple[int, ...]) -> np.ndarray | None:
    """Validate `u` or `behaviour`: 3-D, same trials and time as y, finite, float32."""
    if value is None:
        return None

    array = _as_numeric_array(name, value)
    if array.ndim != 3:
        raise DataError(f"{name} has shape {array.shape}; expected (trials, time, {name} channels)")
    if array.shape[0] != y_shape[0]:
        raise DataError(
            f"different trial counts in y and {name}: y has {y_shape[0]} trials, {name} has {array.shape[0]}; "
            f"expected {y_shape[0]}"
        )
    if array.shape[1] != y_shape[1]:
        raise DataError(
            f"different time lengths in y and {name}: y has {y_shape[1]} bins, {name} has {array.shape[1]}; "
            f"expected {y_shape[1]}"
        )
    if array.shape[2] == 0:
        raise DataError(f"{name} has shape {array.shape} with no channels; pass None instead")

    array = array.astype(np.float32)
    _check_finite(name, array)
    return array


def _validate_mask(mask: Any, y_shape: tuple[int, ...], name: str = "mask", of: str = "y") -> np.ndarray | None:
    if mask is None:
        return None

    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise DataError(f"{name} has dtype {mask.dtype}; expected bool (True where observed), e.g. {name}.astype(bool)")
    if mask.shape != y_shape:
        raise DataError(f"{name} has shape {mask.shape}; expected the shape of {of}, {y_shape}")
    return mask


def _validate_behaviour_mask(mask: Any, behaviour: np.ndarray | None) -> np.ndarray | None:
    if mask is not None and behaviour is None:
        raise DataError("behaviour_mask is given but behaviour is None; expected a behaviour array beside its mask")
    if mask is None:
        return None
    return _validate_mask(mask, behaviour.shape, "behaviour_mask", "behaviour")


def _validate_metadata(metadata: Any, n_trials: int) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise DataError(f"metadata has type {type(metadata).__name__}; expected a dict")

    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as error:
        raise DataError(
            f"metadata is not JSON-serialisable: {error}; expected a dict of JSON values (str, number, bool, None, "
            "list, dict)"
        ) from error

    trial_info = metadata.get(TRIAL_INFO_KEY, {})
    if not isinstance(trial_info, dict):
        raise DataError(f"metadata['{TRIAL_INFO_KEY}'] has type {type(trial_info).__name__}; expected a dict of lists")
    for key, values in trial_info.items():
        if not isinstance(values, list) or len(values) != n_trials:
            found = len(values) if isinstance(values, list) else type(values).__name__
            raise DataError(
                f"metadata['{TRIAL_INFO_KEY}']['{key}'] has {found} entries; expected a list with one entry per trial ({n_trials})"
            )
    # A deep copy, so that nested dicts are not shared with the caller or with selections.
    return copy.deepcopy(metadata)


def _grid_behaviour(grid: dict, neural: tuple, behaviour: tuple, bin_width, t_start, duration) -> tuple[dict, dict]:
    """Place behaviour samples on the grid of the neural samples; return the behaviour grid and the neural one.

    Without `duration` each stream would end at its own latest sample, so the shorter
    one is placed again on the longer grid.
    """
    from neuroude.data.irregular import grid_irregular_samples

    behaviour_times, behaviour_values, behaviour_mask = behaviour
    if behaviour_times is None or behaviour_values is None:
        raise DataError(
            "behaviour_times and behaviour must be given together for behaviour sampled at irregular times; "
            "one of them is None"
        )
    try:
        behaviour_grid = grid_irregular_samples(
            behaviour_times, behaviour_values, bin_width, t_start, duration, behaviour_mask
        )
    except DataError as error:
        raise DataError(f"behaviour: {error}") from None

    n_trials, n_bins = grid["y"].shape[:2]
    if behaviour_grid["y"].shape[0] != n_trials:
        raise DataError(
            f"behaviour has {behaviour_grid['y'].shape[0]} trials and the neural samples {n_trials}; "
            "expected the same number"
        )
    if behaviour_grid["y"].shape[1] != n_bins:
        # Only possible without `duration`: both streams are placed on the longer grid.
        longest = max(grid["ts"][-1], behaviour_grid["ts"][-1]) - t_start
        times, values, sample_mask = neural
        grid = grid_irregular_samples(times, values, bin_width, t_start, longest, sample_mask)
        behaviour_grid = grid_irregular_samples(behaviour_times, behaviour_values, bin_width, t_start, longest, behaviour_mask)
    return behaviour_grid, grid


@dataclass(frozen=True, eq=False)
class Recording:
    """Trials of neural data on a shared time grid, with optional input, behaviour and mask.

    Attributes
    ----------
    y : (trials, time, channels) float32 spike counts or continuous traces.
    ts : (time,) float64 times in seconds, strictly increasing, shared by all trials.
    u : (trials, time, inputs) float32 stimulus or task input, or None.
    behaviour : (trials, time, b) float32 behavioural variables, or None.
    mask : (trials, time, channels) bool, True where y is observed, or None when all is observed.
    behaviour_mask : (trials, time, b) bool, True where behaviour is observed, or None when all is.
    metadata : JSON-serialisable dict, e.g. "source", "citation", "units", "channel_names",
        "input_names". `metadata["trial_info"]`, when present, maps names to lists with one
        entry per trial, and `select` subsets those lists with the trials.

    Inputs are converted with `numpy.asarray` and cast (y, u, behaviour to float32, ts to
    float64). Invalid shapes, dtypes or values raise `DataError` at construction.
    """

    y: np.ndarray
    ts: np.ndarray
    u: np.ndarray | None = None
    behaviour: np.ndarray | None = None
    mask: np.ndarray | None = None
    metadata: dict = dataclass_field(default_factory=dict)
    behaviour_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        y = _validate_y(self.y)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "ts", _validate_ts(self.ts, y.shape[1]))
        object.__setattr__(self, "u", _validate_companion("u", self.u, y.shape))
        object.__setattr__(self, "behaviour", _validate_companion("behaviour", self.behaviour, y.shape))
        object.__setattr__(self, "mask", _validate_mask(self.mask, y.shape))
        object.__setattr__(self, "behaviour_mask", _validate_behaviour_mask(self.behaviour_mask, self.behaviour))
        object.__setattr__(self, "metadata", _validate_metadata(self.metadata, y.shape[0]))

    @classmethod
    def from_irregular(
        cls,
        times: Any,
        values: Any,
        bin_width: float,
        t_start: float = 0.0,
        duration: float | None = None,
        sample_mask: Any = None,
        u: Any = None,
        metadata: dict | None = None,
        behaviour_times: Any = None,
        behaviour: Any = None,
        behaviour_sample_mask: Any = None,
    ) -> Recording:
        """Build a recording from samples taken at irregular times (jittered or dropped frames, irregular TR).

        `times` (trials, samples) in seconds and `values` (trials, samples, channels), or
        per-trial sequences when trials have different numbers of samples. Each sample goes
        to the grid point `ts[k] = t_start + k * bin_width` nearest its time, and grid points
        without a sample are masked out. The solver path is then evaluated at most
        `bin_width / 2` from each sample's true time: for drift bounded by F and diffusion by
        sigma, the error is at most `F * bin_width / 2` plus noise of standard deviation
        at most `sigma * sqrt(bin_width / 2)`. `u`, when given, is already on that grid.
        `metadata["sample_times"]` records `bin_width`, the largest offset and the sample count.

        Behaviour sampled at its own times: `behaviour_times` and `behaviour` (trials,
        samples, b), with an optional `behaviour_sample_mask`, go onto the same grid the
        same way, and `behaviour_mask` is False at the grid points without a behaviour
        sample. Without `duration`, the trials end at the latest neural or behaviour sample.

        Raises DataError naming the trial and index for NaN, unsorted or out-of-trial times
        and for two samples that fall on one grid point.
        """
        from neuroude.data.irregular import check_grid_input, grid_irregular_samples

        grid = grid_irregular_samples(times, values, bin_width, t_start, duration, sample_mask)
        behaviour_grid = None
        if behaviour_times is not None or behaviour is not None:
            behaviour_grid, grid = _grid_behaviour(
                grid, (times, values, sample_mask), (behaviour_times, behaviour, behaviour_sample_mask),
                bin_width, t_start, duration,
            )
        check_grid_input(u, grid["y"].shape[0], grid["y"].shape[1])
        metadata = dict(metadata or {})
        metadata["sample_times"] = {
            "bin_width": float(bin_width),
            "largest_offset": grid["largest_offset"],
            "n_samples": int(grid["mask"].any(axis=2).sum()),
        }
        if behaviour_grid is None:
            return cls(y=grid["y"], ts=grid["ts"], u=u, mask=grid["mask"], metadata=metadata)
        metadata["sample_times"]["behaviour_largest_offset"] = behaviour_grid["largest_offset"]
        return cls(
            y=grid["y"], ts=grid["ts"], u=u, mask=grid["mask"], metadata=metadata,
            behaviour=behaviour_grid["y"], behaviour_mask=behaviour_grid["mask"],
        )

    @property
    def observed(self) -> np.ndarray:
        """(trials, time, channels) bool, True where y is observed: `mask`, or all True when mask is None."""
        if self.mask is None:
            return np.ones(self.y.shape, bool)
        return self.mask

    @property
    def behaviour_observed(self) -> np.ndarray | None:
        """(trials, time, b) bool, True where behaviour is observed, or None without behaviour."""
        if self.behaviour is None:
            return None
        if self.behaviour_mask is None:
            return np.ones(self.behaviour.shape, bool)
        return self.behaviour_mask

    @property
    def n_trials(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_time(self) -> int:
        return int(self.y.shape[1])

    @property
    def n_channels(self) -> int:
        return int(self.y.shape[2])

    @property
    def n_inputs(self) -> int:
        """Number of input channels, 0 when `u` is None."""
        return 0 if self.u is None else int(self.u.shape[2])

    @property
    def dt(self) -> float:
        """Median spacing of `ts` in seconds."""
        if self.n_time < 2:
            raise DataError("dt is undefined for a recording with a single time bin; expected at least 2 time bins")
        return float(np.median(np.diff(self.ts)))

    def select(self, trials: Any) -> Recording:
        """Return a new recording with the given trials, in the given order.

        `trials` is a sequence of integer indices or a boolean array of length `n_trials`.
        """
        index = self._trial_index(trials)

        def take(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array[index]

        metadata = dict(self.metadata)
        if TRIAL_INFO_KEY in metadata:
            metadata[TRIAL_INFO_KEY] = {
                key: [values[i] for i in index] for key, values in metadata[TRIAL_INFO_KEY].items()
            }
        return Recording(
            y=self.y[index],
            ts=self.ts,
            u=take(self.u),
            behaviour=take(self.behaviour),
            mask=take(self.mask),
            metadata=metadata,
            behaviour_mask=take(self.behaviour_mask),
        )

    def _trial_index(self, trials: Any) -> np.ndarray:
        index = np.asarray(trials)
        if index.dtype == np.bool_:
            if index.shape != (self.n_trials,):
                raise DataError(f"trials is a boolean array of shape {index.shape}; expected ({self.n_trials},)")
            index = np.flatnonzero(index)

        if index.ndim != 1 or (index.size > 0 and not np.issubdtype(index.dtype, np.integer)):
            raise DataError(f"trials has shape {index.shape} and dtype {index.dtype}; expected a 1-D array of integer indices")
        if index.size == 0:
            raise DataError("trials is empty; expected at least one trial index")
        if index.min() < -self.n_trials or index.max() >= self.n_trials:
            raise DataError(
                f"trials contains indices from {index.min()} to {index.max()}; expected indices in [0, {self.n_trials})"
            )
        return index.astype(np.int64) % self.n_trials

    def _field_array(self, name: str) -> np.ndarray:
        if name not in ("y", "u", "behaviour"):
            raise ConfigError(f"field is {name!r}; expected 'y', 'u' or 'behaviour'")
        array = getattr(self, name)
        if array is None:
            raise DataError(f"{name} is None; there is nothing to check")
        return array

    def check_counts(self, field: str = "y") -> None:
        """Raise DataError unless `field` contains counts: finite, >= 0 and integer-valued.

        Only entries where `mask` is True are checked (all of them when mask is None, and
        always all of them for u and behaviour, which have no mask).
        """
        array = self._field_array(field)
        if field == "y" and self.mask is not None:
            values = array[self.mask]
        else:
            values = array.ravel()

        if not np.all(np.isfinite(values)):
            raise DataError(f"{field} contains non-finite values; expected spike counts")
        negative = values < 0
        if negative.any():
            raise DataError(
                f"{field} has {int(negative.sum())} negative values (minimum {values.min()}); expected non-negative spike counts"
            )
        fractional = values != np.round(values)
        if fractional.any():
            example = values[np.argmax(fractional)]
            raise DataError(
                f"{field} has {int(fractional.sum())} non-integer values (e.g. {example}); expected integer spike counts. "
                "Continuous traces need a Gaussian observation model (model.observation: gaussian) instead of a Poisson one."
            )

    def split(
        self, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Split trial indices at random into disjoint, non-empty train, validation and test sets.

        The validation and test sizes are `round(fraction * n_trials)`, at least 1 each, and
        training takes the rest. The same seed gives the same split. Each set is sorted.
        """
        fractions = self._validate_fractions(fractions)

        n = self.n_trials
        n_val = max(1, int(round(fractions[1] * n)))
        n_test = max(1, int(round(fractions[2] * n)))
        n_train = n - n_val - n_test
        if n_train < 1:
            raise DataError(
                f"cannot split {n} trials into non-empty train, validation and test sets with fractions {fractions}; "
                "expected at least 3 trials and enough for each fraction"
            )

        order = np.random.default_rng(seed).permutation(n)
        train = np.sort(order[:n_train])
        val = np.sort(order[n_train : n_train + n_val])
        test = np.sort(order[n_train + n_val :])
        return train, val, test

    @staticmethod
    def _validate_fractions(fractions: Any) -> tuple[float, float, float]:
        try:
            values = tuple(float(f) for f in fractions)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"fractions is {fractions!r}; expected three numbers (train, validation, test)") from error
        if len(values) != 3 or min(values) <= 0:
            raise ConfigError(f"fractions is {fractions!r}; expected three positive numbers (train, validation, test)")
        if abs(sum(values) - 1.0) > 1e-6:
            raise ConfigError(f"fractions sum to {sum(values)}; expected them to sum to 1")
        return values

    def _behaviour_description(self) -> str:
        if self.behaviour is None:
            return "none"
        count = self.behaviour.shape[2]
        text = f"{count} variable{'s' if count != 1 else ''}"
        names = self.metadata.get("behaviour_names")
        return f"{text} ({', '.join(str(name) for name in names)})" if names else text

    def summary(self) -> str:
        """Describe shapes, timing, value ranges and metadata on several lines."""
        lines = [
            f"Recording from {self.metadata.get('source', 'an unnamed source')}",
            f"  y: {self.n_trials} trials x {self.n_time} bins x {self.n_channels} channels, "
            f"values {self.y.min():.4g} to {self.y.max():.4g}, mean {self.y.mean():.4g}",
            f"  ts: {self.ts[0]:.6g} to {self.ts[-1]:.6g} s" + (f", dt {self.dt:.6g} s" if self.n_time > 1 else ""),
            f"  u: {'none' if self.u is None else f'{self.n_inputs} input channels'}",
            f"  behaviour: {self._behaviour_description()}"
            + ("" if self.behaviour_mask is None else f", {self.behaviour_mask.mean():.1%} observed"),
            f"  mask: {'all observed' if self.mask is None else f'{self.mask.mean():.1%} observed'}",
        ]
        if "sample_times" in self.metadata and self.mask is not None:
            # Counted from the mask, so that a selection of trials reports its own samples.
            n_samples = int(self.mask.any(axis=2).sum())
            lines.append(
                f"  samples at irregular times: {n_samples} samples placed on the grid, at most "
                f"{self.metadata['sample_times']['largest_offset']:.3g} s from their recorded times"
            )
        if "units" in self.metadata:
            lines.append(f"  units: {self.metadata['units']}")
        if "citation" in self.metadata:
            lines.append(f"  citation: {self.metadata['citation']}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        dt = f"{self.dt:.6g}" if self.n_time > 1 else "n/a"
        return (
            f"Recording(trials={self.n_trials}, time={self.n_time}, channels={self.n_channels}, "
            f"inputs={self.n_inputs}, dt={dt} s)"
        )
