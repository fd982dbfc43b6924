"""Describe what a recording file contains and how neuroude can load it (`neuroude data inspect`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neuroude.data.loaders import detect_format
from neuroude.data.npz import BEHAVIOUR_KEYS, Y_KEYS, open_npz, read_member
from neuroude.errors import DataFileError, NeuroudeError

# Bin width tried when checking that an NWB file loads, in seconds.
_TRIAL_BIN_WIDTH = 0.05
_MAX_LISTED = 40
_NUMERIC_CLASSES = {"double", "single", "logical", *(f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64))}


def describe_file(path: str | os.PathLike) -> str:
    """Return a multi-line description of the file: format, contents and loading options."""
    path = Path(path)
    kind = detect_format(path)
    describe = {"npz": _describe_npz, "nwb": _describe_nwb, "mat": _describe_mat, "hdf5": _describe_hdf5}[kind]
    lines = [f"{path}: {kind.upper()} file, {path.stat().st_size / 1e6:.3g} MB", *describe(path)]
    return "\n".join(lines)


def _array_line(name: str, shape: tuple, dtype: object) -> str:
    return f"  {name}: shape {tuple(shape)}, dtype {dtype}"


def _limited(lines: list[str]) -> list[str]:
    if len(lines) <= _MAX_LISTED:
        return lines
    return lines[:_MAX_LISTED] + [f"  ... and {len(lines) - _MAX_LISTED} more"]


def _try_load(path: Path, options: dict) -> list[str]:
    lines, _ = _load_attempt(path, options)
    return lines


def _load_attempt(path: Path, options: dict) -> tuple[list[str], object | None]:
    """Load the file with `options` and return the lines that report whether it loads, with the recording or None."""
    from neuroude.data.loaders import load_recording

    shown = ", ".join(f"{key}={value!r}" for key, value in options.items()) or "no options"
    try:
        recording = load_recording(path, **options)
    except NeuroudeError as error:
        return [f"loadable with {shown}: no ({error})"], None
    return [f"loadable with {shown}: yes, {recording!r}"], recording


def _describe_npz(path: Path) -> list[str]:
    # The same checks as `load_npz`, so a corrupt, truncated or non-ZIP file raises DataFileError.
    lines = ["arrays:"]
    with open_npz(path) as archive:
        for name in archive.files:
            array = read_member(archive, name, path)
            lines.append(_array_line(name, array.shape, array.dtype))
        names = list(archive.files)
    loaded, recording = _load_attempt(path, {})
    if recording is None:
        return _limited(lines) + loaded
    return _limited(lines) + loaded + _npz_roles(names, recording)


def _npz_roles(names: list[str], recording) -> list[str]:
    """Return lines naming the npz arrays that became the recording's y, u and behaviour."""
    y_name = next(name for name in Y_KEYS if name in names)
    lines = [f"  y (neural data) from array {y_name!r}: {recording.n_trials} trials x {recording.n_time} bins x "
             f"{recording.n_channels} channels"]
    if recording.u is not None:
        lines.append(f"  u (stimulus) from array 'u': {recording.n_inputs} inputs")
    if recording.behaviour is None:
        lines.append("  behaviour: none (no array named " + " or ".join(repr(key) for key in BEHAVIOUR_KEYS) + ")")
        return lines
    behaviour_name = next(name for name in BEHAVIOUR_KEYS if name in names)
    count = recording.behaviour.shape[2]
    variables = recording.metadata.get("behaviour_names") or [f"behaviour_{index}" for index in range(count)]
    lines.append(f"  behaviour from array {behaviour_name!r}: {count} variable{'s' if count != 1 else ''} "
                 f"({', '.join(str(name) for name in variables)})")
    return lines


def _describe_nwb(path: Path) -> list[str]:
    from neuroude.data.nwb import list_time_series, open_nwb

    try:
        with open_nwb(path) as (_, nwbfile):
            lines = [f"session: {nwbfile.session_description!r}, starts {nwbfile.session_start_time}"]
            lines += _nwb_units(nwbfile)
            trial_lines, shortest = _nwb_trials(nwbfile)
            lines += trial_lines
            series = list_time_series(nwbfile)
            lines.append(f"time series ({len(series)}):")
            lines += _limited([_series_line(name, obj) for name, obj in sorted(series.items())])
    except DataFileError as error:
        return [str(error)]

    if nwbfile.units is None:
        return lines + ["loadable: no, the file has no Units table (neuroude bins sorted units)"]
    options = {"bin_width": _TRIAL_BIN_WIDTH if shortest is None else min(_TRIAL_BIN_WIDTH, shortest)}
    if nwbfile.trials is None:
        options["trial_duration"] = 1.0
    return lines + _try_load(path, options) + [
        "choose data.bin_width; name series with data.read.stimulus and data.read.behaviour"
    ]


def _nwb_units(nwbfile) -> list[str]:
    units = nwbfile.units
    if units is None:
        return ["units: none"]
    lines = [f"units: {len(units)}, columns {list(units.colnames)}"]
    if "heldout" in units.colnames:
        heldout = np.asarray(units["heldout"].data[:]).astype(bool)
        lines.append(f"  held-out units (NLB 'heldout' column): {int(heldout.sum())}")
    return lines


def _nwb_trials(nwbfile) -> tuple[list[str], float | None]:
    trials = nwbfile.trials
    if trials is None:
        return ["trials: none (pass data.read.window to cut the session into windows)"], None

    lines = [f"trials: {len(trials)}, columns {list(trials.colnames)}"]
    shortest = None
    if {"start_time", "stop_time"} <= set(trials.colnames) and len(trials):
        durations = np.asarray(trials["stop_time"].data[:]) - np.asarray(trials["start_time"].data[:])
        shortest = float(np.nanmin(durations))
        lines.append(f"  durations: {shortest:.4g} to {float(np.nanmax(durations)):.4g} s")
    if "split" in trials.colnames:
        values, counts = np.unique([str(v) for v in trials["split"].data[:]], return_counts=True)
        lines.append("  splits: " + ", ".join(f"{value} {count}" for value, count in zip(values, counts)))
    return lines, shortest


def _series_line(name: str, series) -> str:
    if series.rate is not None:
        sampling = f"{series.rate:g} Hz"
    elif series.timestamps is not None and len(series.timestamps) > 1:
        steps = np.diff(np.asarray(series.timestamps[: min(len(series.timestamps), 10000)]))
        sampling = f"median step {np.median(steps):.4g} s"
    else:
        sampling = "unknown sampling"
    return f"  {name}: shape {tuple(series.data.shape)}, dtype {series.data.dtype}, {sampling}, unit {series.unit!r}"


def _describe_mat(path: Path) -> list[str]:
    with open(path, "rb") as file:
        version_73 = file.read(19) == b"MATLAB 7.3 MAT-file"
    if version_73:
        lines, candidates = _hdf5_datasets(path, matlab=True)
        lines.insert(0, "MATLAB v7.3 (HDF5); variables, with the shapes MATLAB shows:")
    else:
        import scipy.io

        entries = scipy.io.whosmat(path)
        lines = ["MATLAB v5 to v7; variables:"]
        lines += [f"  {name}: shape {shape}, class {matlab_class}" for name, shape, matlab_class in entries]
        candidates = [name for name, shape, matlab_class in entries if len(shape) == 3 and matlab_class in _NUMERIC_CLASSES]
    return _limited(lines) + _array_advice("mat", candidates)


def _describe_hdf5(path: Path) -> list[str]:
    lines, candidates = _hdf5_datasets(path, matlab=False)
    return _limited(["datasets:", *lines]) + _array_advice("hdf5", candidates)


def _hdf5_datasets(path: Path, matlab: bool) -> tuple[list[str], list[str]]:
    import h5py

    lines, candidates = [], []

    def visit(name: str, node) -> None:
        if not isinstance(node, h5py.Dataset):
            return
        shape = node.shape[::-1] if matlab else node.shape
        lines.append(_array_line(name, shape, node.dtype))
        if len(shape) == 3 and np.issubdtype(node.dtype, np.number):
            candidates.append(name)

    with h5py.File(path, "r") as file:
        file.visititems(visit)
    return lines, candidates


def _array_advice(source: str, candidates: list[str]) -> list[str]:
    if not candidates:
        return [f"loadable: name the data variable with data.read.y (source {source}); no 3-D numeric array found"]
    return [
        f"loadable: set data.source {source}, data.read.y to one of {candidates}, data.read.dt or data.read.ts, "
        "and data.read.layout if the axes are not trials,time,channels"
    ]
