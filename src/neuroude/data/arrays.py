"""Read recordings from MATLAB (.mat) and HDF5 files whose variables the user names.

MATLAB v5 to v7 files are read with `scipy.io.loadmat`; v7.3 files are HDF5 files and are
read with h5py, their axes reversed so that both versions give the shapes MATLAB shows
(MATLAB stores arrays column-major, h5py reads them row-major). Plain HDF5 datasets are
read as stored.

A variable is named by its path: "spikes", or "session/spikes" for a field of a MATLAB
struct or a dataset inside an HDF5 group.

y, u, behaviour and mask share one axis order, `layout`, a comma-separated permutation of
"trials", "time" and "channels" (default "trials,time,channels"). MATLAB drops trailing
axes of size 1, so in a MATLAB file a 2-D array lacks the last axis of `layout`: with the
default layout it is (trials, time) with one channel. In a plain HDF5 file a 2-D array is one
trial, its two axes in the order `layout` gives them. Time is either `ts`, a variable of bin times
in seconds, or `dt`, a number of seconds or the name of a scalar variable. u and behaviour
may each be a list of variables, whose channels are concatenated in that order.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuroude.data.formats import check_format
from neuroude.data.recording import Recording
from neuroude.errors import ConfigError, DataError, DataFileError

logger = logging.getLogger(__name__)

AXES = ("trials", "time", "channels")
DEFAULT_LAYOUT = "trials,time,channels"


def load_mat(
    path: str | os.PathLike,
    y: str,
    ts: str | None = None,
    dt: float | str | None = None,
    u: str | Sequence[str] | None = None,
    behaviour: str | Sequence[str] | None = None,
    mask: str | None = None,
    layout: str = DEFAULT_LAYOUT,
) -> Recording:
    """Read a Recording from the named variables of a MATLAB file (v5 to v7.3).

    Raises DataFileError when the file is missing or not a MATLAB file, ConfigError for
    invalid options and DataError when a variable is missing or has the wrong shape.
    """
    path = check_format(path, "mat")
    with open(path, "rb") as file:
        version_73 = file.read(19) == b"MATLAB 7.3 MAT-file"

    reader = _Hdf5Reader(path, matlab=True) if version_73 else _MatReader(path)
    return _load(reader, path, "mat", y, ts, dt, u, behaviour, mask, layout, missing_axis=-1)


def load_hdf5(
    path: str | os.PathLike,
    y: str,
    ts: str | None = None,
    dt: float | str | None = None,
    u: str | Sequence[str] | None = None,
    behaviour: str | Sequence[str] | None = None,
    mask: str | None = None,
    layout: str = DEFAULT_LAYOUT,
) -> Recording:
    """Read a Recording from the named datasets of an HDF5 file.

    Raises DataFileError when the file is missing or not an HDF5 file, ConfigError for
    invalid options and DataError when a dataset is missing or has the wrong shape.
    """
    path = check_format(path, "hdf5")
    return _load(_Hdf5Reader(path, matlab=False), path, "hdf5", y, ts, dt, u, behaviour, mask, layout, missing_axis=None)


def parse_layout(layout: Any) -> tuple[str, ...]:
    """Split a layout such as "channels,time,trials" into its axis names, checking it."""
    if not isinstance(layout, str):
        raise ConfigError(f"layout is {layout!r}; expected a string such as {DEFAULT_LAYOUT!r}")
    axes = tuple(part.strip() for part in layout.split(","))
    if sorted(axes) != sorted(AXES):
        raise ConfigError(f"layout is {layout!r}; expected a comma-separated order of {', '.join(AXES)}")
    return axes


def _load(reader, path: Path, kind: str, y, ts, dt, u, behaviour, mask, layout, missing_axis: int | None) -> Recording:
    """Read and validate the named arrays; `missing_axis` is the layout axis a 2-D array lacks (None: trials)."""
    axes = parse_layout(layout)
    missing = "trials" if missing_axis is None else axes[missing_axis]

    def to_standard(name: str) -> np.ndarray:
        return _to_trials_time_channels(reader.read(name), axes, missing, name, path)

    if not isinstance(y, str) or not y:
        raise ConfigError(f"y is {y!r}; expected the name of the variable that contains the data")
    if (ts is None) == (dt is None):
        raise ConfigError(f"ts is {ts!r} and dt is {dt!r}; expected exactly one of them (times or a bin width)")

    arrays = {"y": to_standard(y)}
    if mask is not None:
        arrays["mask"] = _as_mask(to_standard(mask), mask, path)
    metadata = {"source": str(path), "format": kind, "variables": {"y": y, "mask": mask}}

    for field, names in (("u", u), ("behaviour", behaviour)):
        names = [names] if isinstance(names, str) else list(names or [])
        if names:
            blocks = [to_standard(name) for name in names]
            arrays[field] = _concatenate_channels(blocks, names, path)
            metadata[f"{'input' if field == 'u' else field}_names"] = _column_names(blocks, names)
        metadata["variables"][field] = names

    n_time = arrays["y"].shape[1]
    times = _read_times(reader, ts, dt, n_time, path)
    if isinstance(dt, str) or ts is not None:
        metadata["variables"]["time"] = ts if ts is not None else dt

    try:
        recording = Recording(ts=times, metadata=metadata, **arrays)
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
    logger.info("loaded %r from %s", recording, path)
    return recording


def _to_trials_time_channels(
    array: np.ndarray, axes: tuple[str, ...], missing: str, name: str, path: Path
) -> np.ndarray:
    if array.ndim == 2:
        array = np.expand_dims(array, axes.index(missing))
    if array.ndim == 3:
        return np.transpose(array, [axes.index(axis) for axis in AXES])
    raise DataError(
        f"{name!r} in {path} has shape {array.shape}; expected 3 axes ({', '.join(axes)}), or 2 without the {missing} axis"
    )


def _concatenate_channels(blocks: list[np.ndarray], names: list[str], path: Path) -> np.ndarray:
    leading = {block.shape[:2] for block in blocks}
    if len(leading) > 1:
        shapes = ", ".join(f"{name} {block.shape}" for name, block in zip(names, blocks))
        raise DataError(f"the variables in {path} have different trial or time lengths: {shapes}; expected them to match")
    return np.concatenate(blocks, axis=2)


def _column_names(blocks: list[np.ndarray], names: list[str]) -> list[str]:
    columns = []
    for name, block in zip(names, blocks):
        columns += [name] if block.shape[2] == 1 else [f"{name}[{i}]" for i in range(block.shape[2])]
    return columns


def _as_mask(array: np.ndarray, name: str, path: Path) -> np.ndarray:
    # MATLAB logicals come back as uint8 from v7.3 files, so 0/1 integers are accepted too.
    if array.dtype == np.bool_:
        return array
    if np.issubdtype(array.dtype, np.number) and np.isin(array, (0, 1)).all():
        return array.astype(bool)
    raise DataError(f"mask {name!r} in {path} has dtype {array.dtype} with values other than 0 and 1; expected logical values")


def _read_times(reader, ts: str | None, dt: float | str | None, n_time: int, path: Path) -> np.ndarray:
    if ts is not None:
        times = reader.read(ts)
        if times.ndim > 1 and sorted(times.shape)[:-1] == [1] * (times.ndim - 1):
            times = times.ravel()
        if times.ndim != 1:
            raise DataError(f"ts {ts!r} in {path} has shape {times.shape}; expected a vector of {n_time} times")
        return times

    if isinstance(dt, str):
        value = reader.read(dt)
        if value.size != 1:
            raise DataError(f"dt {dt!r} in {path} has shape {value.shape}; expected one number of seconds")
        value = float(value.ravel()[0])
        if not (np.isfinite(value) and value > 0):
            raise DataError(f"dt {dt!r} in {path} is {value!r}; expected a positive number of seconds")
        dt = value
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not (np.isfinite(dt) and dt > 0):
        raise ConfigError(f"dt is {dt!r}; expected a positive number of seconds")
    return np.arange(n_time) * float(dt)


class _MatReader:
    """Variables of a MATLAB v5 to v7 file, loaded one top-level variable at a time."""

    def __init__(self, path: Path):
        self.path = path

    def read(self, name: str) -> np.ndarray:
        import scipy.io

        parts = name.split("/")
        # scipy raises IndexError on a file cut inside its 128-byte header, and zlib.error on damaged compressed data.
        errors = (ValueError, TypeError, OSError, NotImplementedError, IndexError, zlib.error)
        try:
            loaded = scipy.io.loadmat(self.path, variable_names=[parts[0]])
            available = [] if parts[0] in loaded else sorted(entry[0] for entry in scipy.io.whosmat(self.path))
        except errors as error:
            raise DataFileError(
                f"could not read {self.path} as a MATLAB file ({type(error).__name__}: {error}); "
                "expected a complete file written by MATLAB or scipy.io.savemat"
            ) from error

        if parts[0] not in loaded:
            raise DataError(f"no variable {parts[0]!r} in {self.path}; the file contains: {', '.join(available) or 'no variables'}")

        value = loaded[parts[0]]
        for depth, part in enumerate(parts[1:], start=1):
            fields = value.dtype.names or ()
            if part not in fields or value.size != 1:
                parent = "/".join(parts[:depth])
                raise DataError(
                    f"{parent!r} in {self.path} has no field {part!r}; its fields are {list(fields) or 'none (not a struct)'}"
                )
            value = value[part].flat[0]
        return _numeric(value, name, self.path)


class _Hdf5Reader:
    """Datasets of an HDF5 file (MATLAB v7.3 files reverse their axes)."""

    def __init__(self, path: Path, matlab: bool):
        self.path = path
        self.matlab = matlab

    def read(self, name: str) -> np.ndarray:
        import h5py

        try:
            with h5py.File(self.path, "r") as file:
                node = file.get(name)
                if not isinstance(node, h5py.Dataset):
                    raise DataError(self._missing(file, name, node))
                value = node[()]
        except (OSError, RuntimeError, KeyError) as error:
            # h5py raises RuntimeError or KeyError when the file's internal structure is damaged.
            raise DataFileError(
                f"could not read {self.path} as an HDF5 file ({type(error).__name__}: {error}); "
                "expected a complete, undamaged HDF5 file"
            ) from error

        value = np.asarray(value)
        if self.matlab:
            value = value.T
        return _numeric(value, name, self.path)

    def _missing(self, file, name: str, node) -> str:
        kind = "a group" if node is not None else "missing"
        available = []
        file.visititems(lambda key, item: available.append(key) if hasattr(item, "shape") else None)
        shown = ", ".join(available[:20]) + (", ..." if len(available) > 20 else "")
        return f"dataset {name!r} in {self.path} is {kind}; the file contains the datasets: {shown or 'none'}"


def _numeric(value: Any, name: str, path: Path) -> np.ndarray:
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(f"{name!r} in {path} has dtype {array.dtype}; expected a numeric array")
    return array
