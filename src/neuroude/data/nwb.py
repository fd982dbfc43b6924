"""Read sorted units, trials and time series from a Neurodata Without Borders (NWB 2) file.

The Units table's spike times are counted in bins of `bin_width` seconds that start at each
trial's `start_time`. Trial k has `n_k = floor((stop_time - start_time) / bin_width)` whole
bins; a last partial bin is dropped. Trials of different lengths are either

- padded ("pad", the default) to the longest trial: the extra bins contain 0 in y, u and
  behaviour, and `Recording.mask` is False there, so the likelihood ignores them; or
- cut ("cut") to the shortest trial, which keeps every trial's first bins and needs no mask.

Stimulus and behaviour are TimeSeries named by the user, found in the file's acquisition,
stimulus or processing modules, and linearly interpolated at the bin centres
`start_time + (i + 0.5) * bin_width`.

Neural Latents Benchmark (NLB) files are read as they are: a text `split` column of the
trials table ("train", "val", "test") is kept in `metadata["trial_info"]["split"]` and can
filter the trials, and a boolean `heldout` column of the Units table lists the held-out
units in `metadata["heldout_units"]` (indices into the channels), with the rest in
`metadata["heldin_units"]`.

When the Units table has an `obs_intervals` column, each unit counts as recorded only inside
its own intervals. A bin of a unit is observed only when it lies wholly inside one of that
unit's intervals; the other bins are masked (`Recording.mask` False, y 0), so a unit that
was lost or not yet isolated adds no zero counts to the likelihood.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from neuroude.data.formats import check_format
from neuroude.data.recording import TRIAL_INFO_KEY, Recording
from neuroude.errors import ConfigError, DataError, DataFileError

logger = logging.getLogger(__name__)

TRIAL_LENGTHS = ("pad", "cut")
# Tolerance when counting whole bins in a trial, so that 1.0 / 0.05 is 20 bins and not 19.
_BIN_TOLERANCE = 1e-9


def load_nwb(
    path: str | os.PathLike,
    bin_width: float,
    stimulus: Sequence[str] = (),
    behaviour: Sequence[str] = (),
    trial_length: Literal["pad", "cut"] = "pad",
    splits: Sequence[str] | None = None,
    trial_duration: float | None = None,
    align_to: str | None = None,
    align_window: tuple[float, float] | None = None,
) -> Recording:
    """Bin the Units table of an NWB file into a Recording aligned to its trials.

    Parameters
    ----------
    path : NWB file.
    bin_width : seconds per bin.
    stimulus : names of TimeSeries that become `u`, their columns stacked in this order.
    behaviour : names of TimeSeries that become `behaviour`.
    trial_length : "pad" (mask the bins after a shorter trial's end) or "cut" (keep the
        shortest trial's number of bins).
    splits : keep only the trials whose `split` column is one of these, e.g. ["train", "val"].
    trial_duration : seconds; when the file has no trials table, cut the span from the first
        to the last spike into consecutive windows of this length. Ignored when it has one.
    align_to : a trials column of event times, e.g. "move_onset_time"; each trial then spans
        `event + align_window[0]` to `event + align_window[1]` instead of start_time to
        stop_time. Trials whose event time is missing (NaN) are dropped, with a warning, and
        counted in `metadata["dropped_trials"]`.
    align_window : (before, after) in seconds relative to the event, e.g. (-0.25, 0.45).

    A TimeSeries is named by its name, or by "parent/name" when several objects share the
    name (for example "Position/pos" for a SpatialSeries inside a Position container, and
    "root/stimulus" for one stored directly in the file's acquisition or stimulus group).

    Raises DataFileError when the file is missing or not an NWB file, ConfigError for invalid
    options and DataError when the file lacks a Units table, trial times or a named series.
    """
    _check_options(bin_width, trial_length, trial_duration)
    _check_alignment(align_to, align_window)
    path = check_format(path, "nwb")

    _check_trial_columns(path)

    with open_nwb(path) as (io, nwbfile):
        spike_times, unit_info = _read_units(nwbfile, path)
        obs_intervals = _read_obs_intervals(nwbfile.units, path)
        trials = _read_trials(nwbfile, path, spike_times, trial_duration)
        trials = _select_splits(trials, splits, path)
        trials, dropped = _align_trials(trials, align_to, align_window, path)
        n_bins, n_time = _trial_bins(trials, bin_width, trial_length, path)

        y, mask = _bin_spikes(spike_times, trials["start_time"], n_bins, n_time, bin_width, obs_intervals)
        u, input_names = _resample_series(nwbfile, stimulus, trials["start_time"], n_bins, n_time, bin_width, path)
        b, behaviour_names = _resample_series(nwbfile, behaviour, trials["start_time"], n_bins, n_time, bin_width, path)

    metadata = {
        "source": str(path),
        "format": "nwb",
        "units": "spikes per bin",
        "bin_width": bin_width,
        "trial_length": trial_length,
        **unit_info,
        TRIAL_INFO_KEY: {**_json_columns(trials), "n_bins": [int(n) for n in n_bins]},
    }
    if align_to is not None:
        metadata["aligned_to"] = {"column": align_to, "window": [float(edge) for edge in align_window]}
        metadata["dropped_trials"] = dropped
    if input_names:
        metadata["input_names"] = input_names
    if behaviour_names:
        metadata["behaviour_names"] = behaviour_names

    try:
        recording = Recording(
            y=y, ts=np.arange(n_time) * bin_width, u=u, behaviour=b, mask=mask, metadata=metadata
        )
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
    logger.info("loaded %r from %s", recording, path)
    return recording


@contextmanager
def open_nwb(path: Path) -> Iterator[tuple[Any, Any]]:
    """Open `path` with pynwb, closing it afterwards, and report a file pynwb cannot build as DataFileError."""
    import pynwb

    io = None
    try:
        io = pynwb.NWBHDF5IO(str(path), mode="r")
        nwbfile = io.read()
    except Exception as error:  # hdmf raises many types on a file it cannot build
        if io is not None:
            io.close()
        raise DataFileError(f"could not read {path} as an NWB file ({type(error).__name__}: {error})") from error

    with io:
        yield io, nwbfile


def _check_options(bin_width: Any, trial_length: Any, trial_duration: Any) -> None:
    if not isinstance(bin_width, (int, float)) or not (math.isfinite(bin_width) and bin_width > 0):
        raise ConfigError(f"bin_width is {bin_width!r}; expected a positive number of seconds")
    if trial_length not in TRIAL_LENGTHS:
        raise ConfigError(f"trial_length is {trial_length!r}; expected one of {list(TRIAL_LENGTHS)}")
    if trial_duration is not None and not (
        isinstance(trial_duration, (int, float)) and math.isfinite(trial_duration) and trial_duration >= bin_width
    ):
        raise ConfigError(f"trial_duration is {trial_duration!r}; expected a number of seconds >= bin_width ({bin_width})")


def _check_alignment(align_to: Any, align_window: Any) -> None:
    if align_to is None:
        if align_window is not None:
            raise ConfigError(f"align_window is {align_window!r} but align_to is None; name the event column to align to")
        return
    if not isinstance(align_to, str):
        raise ConfigError(f"align_to is {align_to!r}; expected the name of a trials column of event times")
    try:
        before, after = (float(edge) for edge in align_window)
    except (TypeError, ValueError):
        raise ConfigError(f"align_window is {align_window!r}; expected (before, after) in seconds") from None
    if not (math.isfinite(before) and math.isfinite(after) and before < after):
        raise ConfigError(f"align_window is {align_window!r}; expected finite (before, after) with before < after")


def _align_trials(trials: dict, align_to: str | None, align_window, path: Path) -> tuple[dict, int]:
    """Replace each trial's span by a window around its `align_to` event; drop trials without one."""
    if align_to is None:
        return trials, 0
    if align_to not in trials:
        raise DataError(
            f"align_to is {align_to!r}, but the trials table of {path} has no such column; "
            f"its columns are {sorted(trials)}"
        )
    events = trials[align_to]
    if events.dtype.kind not in "iuf":
        raise DataError(f"the trials column {align_to!r} of {path} has dtype {events.dtype}; expected times in seconds")

    events = events.astype(np.float64)
    keep = np.isfinite(events)
    if not keep.any():
        raise DataError(f"the trials column {align_to!r} of {path} has no finite event time; cannot align any trial")
    dropped = int((~keep).sum())
    if dropped:
        logger.warning("%s: dropped %d of %d trials with no %s", path, dropped, keep.size, align_to)

    aligned = {name: values[keep] for name, values in trials.items()}
    aligned["trial_start_time"] = aligned["start_time"]
    aligned["trial_stop_time"] = aligned["stop_time"]
    aligned["start_time"] = events[keep] + float(align_window[0])
    aligned["stop_time"] = events[keep] + float(align_window[1])
    return aligned, dropped


def _check_trial_columns(path: Path) -> None:
    # pynwb cannot build a trials table that lacks a required column and reports it in a long
    # builder dump, so the columns are checked with h5py first.
    import h5py

    with h5py.File(path, "r") as file:
        trials = file.get("intervals/trials")
        if not isinstance(trials, h5py.Group):
            return
        missing = [name for name in ("start_time", "stop_time") if name not in trials]
    if missing:
        raise DataError(
            f"the trials table of {path} has no {' or '.join(missing)} column; "
            "expected start_time and stop_time in seconds for every trial"
        )


def _read_units(nwbfile, path: Path) -> tuple[list[np.ndarray], dict]:
    units = nwbfile.units
    if units is None or len(units) == 0:
        found = "no Units table" if units is None else "an empty Units table"
        raise DataError(f"{path} has {found} (nwbfile.units); expected sorted units with spike_times")
    if "spike_times" not in units.colnames:
        raise DataError(f"the Units table of {path} has the columns {list(units.colnames)}; expected 'spike_times'")

    spike_times = []
    for index in range(len(units)):
        times = np.sort(np.asarray(units.get_unit_spike_times(index), dtype=np.float64))
        if not np.all(np.isfinite(times)):
            raise DataError(f"unit {index} in the Units table of {path} has non-finite spike times; expected finite times in seconds")
        spike_times.append(times)

    info: dict[str, Any] = {"channel_names": [str(unit_id) for unit_id in units.id[:]]}
    if "heldout" in units.colnames:
        heldout = np.asarray(units["heldout"].data[:]).astype(bool)
        info["heldout_units"] = [int(i) for i in np.flatnonzero(heldout)]
        info["heldin_units"] = [int(i) for i in np.flatnonzero(~heldout)]
    return spike_times, info


def _read_obs_intervals(units, path: Path) -> list[np.ndarray] | None:
    """Return each unit's observation intervals as an (intervals, 2) array, or None without the column."""
    if "obs_intervals" not in units.colnames:
        return None

    intervals = []
    for index in range(len(units)):
        unit = np.asarray(units.get_unit_obs_intervals(index), dtype=np.float64).reshape(-1, 2)
        if not np.all(np.isfinite(unit)):
            raise DataError(
                f"unit {index} in the Units table of {path} has non-finite obs_intervals; expected times in seconds"
            )
        reversed_rows = np.flatnonzero(unit[:, 1] <= unit[:, 0])
        if reversed_rows.size:
            start, stop = unit[reversed_rows[0]]
            raise DataError(
                f"unit {index} in the Units table of {path} has the obs_interval [{start}, {stop}], which ends before "
                "it starts; expected start < stop"
            )
        intervals.append(unit)
    return intervals


def _read_trials(nwbfile, path: Path, spike_times: list[np.ndarray], trial_duration: float | None) -> dict:
    """Return the trials table as a dict of 1-D numpy columns with start_time and stop_time."""
    trials = nwbfile.trials
    if trials is None:
        if trial_duration is None:
            raise DataError(
                f"{path} has no trials table (nwbfile.trials); expected trials with start_time and stop_time, "
                "or pass trial_duration to cut the session into consecutive windows"
            )
        return _consecutive_windows(spike_times, trial_duration, path)

    missing = [name for name in ("start_time", "stop_time") if name not in trials.colnames]
    if missing:
        raise DataError(
            f"the trials table of {path} has no {' or '.join(missing)} column (columns: {list(trials.colnames)}); "
            "expected start_time and stop_time in seconds"
        )

    from hdmf.common import DynamicTableRegion, VectorIndex

    columns = {}
    for name in trials.colnames:
        column = trials[name]
        # Ragged columns and references to other tables have no single value per trial.
        if isinstance(column, (VectorIndex, DynamicTableRegion)):
            continue
        values = np.asarray(column.data[:])
        if values.ndim == 1 and values.dtype.kind in "biufSUO":
            columns[name] = values
    columns["start_time"] = columns["start_time"].astype(np.float64)
    columns["stop_time"] = columns["stop_time"].astype(np.float64)
    if "split" in columns:
        columns["split"] = np.array([_as_text(value) for value in columns["split"]])

    _check_trial_times(columns, path)
    return columns


def _consecutive_windows(spike_times: list[np.ndarray], duration: float, path: Path) -> dict:
    non_empty = [times for times in spike_times if times.size]
    if not non_empty:
        raise DataError(f"the Units table of {path} contains no spikes; cannot place trial windows")
    first = min(times[0] for times in non_empty)
    last = max(times[-1] for times in non_empty)

    n_windows = max(1, int((last - first) // duration))
    starts = first + np.arange(n_windows) * duration
    return {"start_time": starts, "stop_time": starts + duration}


def _check_trial_times(columns: dict, path: Path) -> None:
    start, stop = columns["start_time"], columns["stop_time"]
    if start.size == 0:
        raise DataError(f"the trials table of {path} is empty; expected at least one trial")
    for name, values in (("start_time", start), ("stop_time", stop)):
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataError(
                f"the trials table of {path} has {int(bad.sum())} missing or non-finite {name} values "
                f"(first in trial {int(np.argmax(bad))}); expected a time in seconds for every trial"
            )
    reversed_trials = np.flatnonzero(stop <= start)
    if reversed_trials.size:
        index = int(reversed_trials[0])
        raise DataError(
            f"trial {index} in {path} has stop_time {stop[index]} <= start_time {start[index]}; "
            "expected every trial to end after it starts"
        )


def _select_splits(trials: dict, splits: Sequence[str] | None, path: Path) -> dict:
    if splits is None:
        return trials
    if isinstance(splits, str):
        splits = [splits]
    if "split" not in trials:
        raise DataError(f"splits is {list(splits)}, but the trials table of {path} has no 'split' column")

    keep = np.isin(trials["split"], list(splits))
    if not keep.any():
        raise DataError(
            f"no trial in {path} has a split in {list(splits)}; the file's splits are {sorted(set(trials['split'].tolist()))}"
        )
    return {name: values[keep] for name, values in trials.items()}


def _trial_bins(trials: dict, bin_width: float, trial_length: str, path: Path) -> tuple[np.ndarray, int]:
    durations = trials["stop_time"] - trials["start_time"]
    n_bins = np.floor(durations / bin_width + _BIN_TOLERANCE).astype(np.int64)

    too_short = np.flatnonzero(n_bins < 1)
    if too_short.size:
        index = int(too_short[0])
        raise DataError(
            f"trial {index} in {path} lasts {durations[index]:g} s, shorter than one bin of {bin_width:g} s; "
            "expected trials of at least one bin (use a smaller bin width or drop the trial)"
        )

    n_time = int(n_bins.max()) if trial_length == "pad" else int(n_bins.min())
    return np.minimum(n_bins, n_time), n_time


def _bin_spikes(
    spike_times: list[np.ndarray],
    starts: np.ndarray,
    n_bins: np.ndarray,
    n_time: int,
    bin_width: float,
    obs_intervals: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Count each unit's spikes in [start + i * bin_width, start + (i + 1) * bin_width).

    The mask is False after a trial's last bin and, with `obs_intervals`, in the bins a unit's
    intervals do not wholly cover.
    """
    n_trials = starts.size
    valid = np.arange(n_time)[None, :] < n_bins[:, None]

    edges = starts[:, None] + np.arange(n_time + 1)[None, :] * bin_width
    y = np.zeros((n_trials, n_time, len(spike_times)), dtype=np.float32)
    for unit, times in enumerate(spike_times):
        cumulative = np.searchsorted(times, edges, side="left")
        y[:, :, unit] = np.diff(cumulative, axis=1)

    mask = np.broadcast_to(valid[:, :, None], y.shape).copy()
    if obs_intervals is not None:
        for unit, intervals in enumerate(obs_intervals):
            mask[:, :, unit] &= _covered_bins(edges, intervals, bin_width)
    y[~mask] = 0.0

    if mask.all():
        return y, None
    return y, mask


def _covered_bins(edges: np.ndarray, intervals: np.ndarray, bin_width: float) -> np.ndarray:
    """Return (trials, bins) True where the bin between consecutive `edges` lies inside one of `intervals`."""
    # A tolerance of a millionth of a bin, so that an interval ending exactly on a bin edge covers that bin.
    slack = 1e-6 * bin_width
    left, right = edges[:, :-1, None], edges[:, 1:, None]
    inside = (intervals[:, 0] <= left + slack) & (right - slack <= intervals[:, 1])
    return inside.any(axis=-1)


def _resample_series(
    nwbfile, names: Sequence[str], starts: np.ndarray, n_bins: np.ndarray, n_time: int, bin_width: float, path: Path
) -> tuple[np.ndarray | None, list[str]]:
    """Interpolate the named TimeSeries at the bin centres and stack their columns."""
    if isinstance(names, str):
        names = [names]
    if not names:
        return None, []

    centres = starts[:, None] + (np.arange(n_time)[None, :] + 0.5) * bin_width
    valid = np.arange(n_time)[None, :] < n_bins[:, None]

    blocks, column_names = [], []
    for name in names:
        series = find_time_series(nwbfile, name, path)
        times, data = _series_arrays(series, name, path)
        _check_covers(times, centres[valid], name, path)

        block = np.zeros((*centres.shape, data.shape[1]), dtype=np.float32)
        for column in range(data.shape[1]):
            block[valid, column] = np.interp(centres[valid], times, data[:, column])
        blocks.append(block)
        column_names += [name] if data.shape[1] == 1 else [f"{name}[{i}]" for i in range(data.shape[1])]
    return np.concatenate(blocks, axis=2), column_names


def list_time_series(nwbfile) -> dict[str, Any]:
    """Map "parent/name" of every TimeSeries in an open NWB file to the object."""
    import pynwb

    found = {}
    for obj in nwbfile.objects.values():
        if isinstance(obj, pynwb.TimeSeries):
            parent = obj.parent.name if obj.parent is not None else ""
            found[f"{parent}/{obj.name}"] = obj
    return found


def find_time_series(nwbfile, name: str, path: Path):
    """Return the TimeSeries called `name` or "parent/name"; raise DataError naming the ones present."""
    available = list_time_series(nwbfile)
    if "/" in name:
        matches = [qualified for qualified in available if qualified == name]
    else:
        matches = [qualified for qualified in available if qualified.split("/")[-1] == name]

    if len(matches) == 1:
        return available[matches[0]]
    if not matches:
        names = sorted(available) or ["none"]
        raise DataError(f"no TimeSeries named {name!r} in {path}; the file contains: {', '.join(names)}")
    raise DataError(f"several TimeSeries in {path} are named {name!r}: {sorted(matches)}; name one as 'parent/name'")


def _series_arrays(series, name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(series.data[:])
    if not np.issubdtype(data.dtype, np.number):
        raise DataError(f"TimeSeries {name!r} in {path} has dtype {data.dtype}; expected numbers")
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[0] < 2:
        raise DataError(f"TimeSeries {name!r} in {path} has shape {data.shape}; expected (time,) or (time, columns) with >= 2 samples")
    data = data.astype(np.float64)

    if series.timestamps is not None:
        times = np.asarray(series.timestamps[:], dtype=np.float64)
    else:
        times = series.starting_time + np.arange(data.shape[0]) / series.rate
    if times.shape[0] != data.shape[0]:
        raise DataError(
            f"TimeSeries {name!r} in {path} has {times.shape[0]} timestamps for {data.shape[0]} samples; "
            "expected one timestamp per sample"
        )
    steps = np.diff(times)
    if np.any(steps <= 0):
        index = int(np.argmax(steps <= 0))
        raise DataError(
            f"TimeSeries {name!r} in {path} has timestamps that do not strictly increase: "
            f"timestamps[{index + 1}] = {times[index + 1]:g} follows {times[index]:g}; expected strictly increasing times"
        )

    bad = ~np.isfinite(data)
    if bad.any():
        raise DataError(
            f"TimeSeries {name!r} in {path} has {int(bad.sum())} NaN or infinite samples "
            f"(first at time {times[np.argwhere(bad)[0][0]]:g} s); expected finite values"
        )
    return times, data


def _check_covers(times: np.ndarray, centres: np.ndarray, name: str, path: Path) -> None:
    if centres.min() < times[0] or centres.max() > times[-1]:
        raise DataError(
            f"TimeSeries {name!r} in {path} covers {times[0]:g} to {times[-1]:g} s, but the bins need values "
            f"from {centres.min():g} to {centres.max():g} s; expected a series that covers every trial"
        )


def _as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json_columns(trials: dict) -> dict[str, list]:
    """Convert the trial columns to JSON-friendly lists for `metadata["trial_info"]`."""
    converted = {}
    for name, values in trials.items():
        if values.dtype.kind in "SUO":
            converted[name] = [_as_text(value) for value in values]
        elif values.dtype.kind == "f":
            converted[name] = [float(value) if np.isfinite(value) else None for value in values]
        else:
            converted[name] = values.tolist()
    return converted
