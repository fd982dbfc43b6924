"""Read and write recordings in the canonical NPZ format (see docs/data-format.md).

Files are read with `numpy.load(allow_pickle=False)` only, so an archive that contains
Python objects is rejected instead of executed.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from neuroude.data.formats import ZIP_SIGNATURES
from neuroude.data.recording import TRIAL_INFO_KEY, Recording
from neuroude.errors import ConfigError, DataError, DataFileError

logger = logging.getLogger(__name__)

# Accepted names for y, in order of preference. "spikes" and "traces" are the names used by
# recordings converted from other toolboxes.
Y_KEYS = ("y", "spikes", "traces")
BEHAVIOUR_KEYS = ("behaviour", "behavior")
METADATA_KEY = "metadata_json"
DESCRIPTION_KEY = "README"
# Name arrays copied to the metadata key of the same name.
NAME_KEYS = ("channel_names", "input_names", "behaviour_names")
# Keys of recordings sampled at irregular times: sample times, and the start and length of each trial.
IRREGULAR_KEYS = ("sample_times", "t_start", "duration", "behaviour_times")
CANONICAL_KEYS = {"ts", "dt", "u", "mask", "behaviour_mask", *IRREGULAR_KEYS, METADATA_KEY, DESCRIPTION_KEY, *Y_KEYS, *BEHAVIOUR_KEYS, *NAME_KEYS}

# numpy.save writes this magic string at the start of a .npy file.
NPY_SIGNATURE = b"\x93NUMPY"
# Errors numpy and zipfile raise on a file that is not a readable NPZ archive.
# zipfile raises NotImplementedError when a damaged header names an unknown compression method.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, KeyError, NotImplementedError)


def save_npz(recording: Recording, path: str | os.PathLike) -> None:
    """Write `recording` to `path` in the canonical NPZ format.

    The arrays y, ts and, when present, u, behaviour, mask and behaviour_mask are stored under those names,
    and metadata as a JSON string under "metadata_json". The archive is written to a
    temporary file in the same folder and renamed onto `path`, so readers never see a
    partial file.
    """
    if not isinstance(recording, Recording):
        raise DataError(f"recording has type {type(recording).__name__}; expected a neuroude Recording")

    path = Path(path)
    if not path.parent.is_dir():
        raise DataFileError(f"cannot write {path}: the folder {path.parent} does not exist")

    arrays = {"y": recording.y, "ts": recording.ts, METADATA_KEY: np.array(json.dumps(recording.metadata))}
    for name in ("u", "behaviour", "mask", "behaviour_mask"):
        value = getattr(recording, name)
        if value is not None:
            arrays[name] = value

    _write_atomically(path, arrays)
    logger.info("saved %r to %s", recording, path)


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez_compressed(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_npz(path: str | os.PathLike) -> Recording:
    """Read a recording from an NPZ archive.

    Required: y (or its alias "spikes" or "traces") of shape (trials, time, channels), and
    either ts (time,) in seconds or a scalar dt, which gives ts = arange(time) * dt.
    Optional: u, behaviour (alias "behavior"), mask, behaviour_mask, metadata_json.

    Samples at irregular times: `sample_times` (trials, samples) in seconds gives the time of
    each row of y, which is then (trials, samples, channels). `dt` is required and is the
    width of the solver grid the samples are placed on; the scalars `t_start` (default 0)
    and `duration` set each trial's window. `mask`, when present, has the shape of y and
    marks missing samples, and `u` is on the grid. Behaviour at irregular times comes with
    its own `behaviour_times` (trials, samples) and optional `behaviour_mask` of its shape.
    See `Recording.from_irregular`.

    Other arrays go into metadata. A "README" string becomes metadata["description"], and
    the string arrays channel_names, input_names and behaviour_names keep their names. Any
    other array is stored as a nested list in metadata["trial_info"] when its first axis
    has one entry per trial, else in metadata["arrays"].

    Raises DataFileError when the file is missing or not a readable NPZ archive, and
    DataError when required keys are missing or the arrays are invalid.
    """
    path = Path(path)
    arrays = _read_arrays(path)

    y_key = _find_y_key(arrays, path)
    y = arrays[y_key]
    if y.ndim != 3:
        raise DataError(f"{y_key} in {path} has shape {y.shape}; expected (trials, time, channels)")

    metadata = _read_metadata(arrays, path, y_key, n_trials=y.shape[0])
    behaviour_key = next((key for key in BEHAVIOUR_KEYS if key in arrays), None)
    if "sample_times" in arrays:
        return _read_irregular(arrays, y, metadata, behaviour_key, path)
    ts = _read_ts(arrays, y.shape[1], path)

    try:
        return Recording(
            y=y,
            ts=ts,
            u=arrays.get("u"),
            behaviour=arrays[behaviour_key] if behaviour_key else None,
            mask=arrays.get("mask"),
            metadata=metadata,
            behaviour_mask=arrays.get("behaviour_mask"),
        )
    except DataError as error:
        raise DataError(f"{path}: {error}") from None


def _read_irregular(arrays: dict, y: np.ndarray, metadata: dict, behaviour_key: str | None, path: Path) -> Recording:
    if "ts" in arrays or "dt" not in arrays:
        raise DataError(
            f"{path} has sample_times and the keys {sorted(arrays)}; expected 'dt', the solver grid width, "
            "and no 'ts', since the grid comes from dt"
        )
    if (behaviour_key is None) != ("behaviour_times" not in arrays):
        raise DataError(
            f"{path} has sample_times and the keys {sorted(arrays)}; expected both 'behaviour' and "
            "'behaviour_times' (the time of each behaviour sample) or neither"
        )

    scalars = {key: _scalar(arrays, key, path) for key in ("dt", "t_start", "duration") if key in arrays}
    try:
        return Recording.from_irregular(
            arrays["sample_times"], y, scalars["dt"], t_start=scalars.get("t_start", 0.0),
            duration=scalars.get("duration"), sample_mask=arrays.get("mask"), u=arrays.get("u"), metadata=metadata,
            behaviour_times=arrays.get("behaviour_times"),
            behaviour=arrays[behaviour_key] if behaviour_key else None,
            behaviour_sample_mask=arrays.get("behaviour_mask"),
        )
    except (DataError, ConfigError) as error:
        raise DataError(f"{path}: {error}") from None


def _scalar(arrays: dict[str, np.ndarray], key: str, path: Path) -> float:
    value = arrays[key]
    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        raise DataError(f"{key} in {path} has shape {value.shape} and dtype {value.dtype}; expected a number of seconds")
    return float(value.reshape(()))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    # Members are decompressed lazily, so a truncated archive can fail only here.
    with open_npz(path) as loaded:
        return {key: read_member(loaded, key, path) for key in loaded.files}


def open_npz(path: str | os.PathLike) -> np.lib.npyio.NpzFile:
    """Open `path` as an NPZ archive without reading its members, checking it as `load_npz` does.

    Raises DataFileError, naming the file and the format expected, for a missing, unreadable,
    non-ZIP (a text file, for example) or truncated file and for a single .npy array. A damaged
    member can fail only when it is read, so read members with `read_member`.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"recording file not found: {path}; expected an existing NPZ file")
    if path.is_dir():
        raise DataFileError(f"recording path {path} is a directory; expected an NPZ file")
    if not path.is_file():
        raise DataFileError(f"recording path {path} is not a regular file; expected an NPZ file")

    _check_archive_signature(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except PermissionError:
        raise DataFileError(
            f"recording file {path} could not be read: permission denied; expected a readable file"
        ) from None
    except _READ_ERRORS as error:
        raise _unreadable(path, error) from error

    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataFileError(f"{path} is a single .npy array, not an NPZ archive; expected a file written by numpy.savez")
    return loaded


def read_member(archive: np.lib.npyio.NpzFile, key: str, path: str | os.PathLike) -> np.ndarray:
    """Read one array of an archive from `open_npz`, raising DataFileError when it is corrupt or pickled."""
    try:
        return archive[key]
    except _READ_ERRORS as error:
        raise _unreadable(Path(path), error) from error


def _check_archive_signature(path: Path) -> None:
    """Raise DataFileError when `path` starts like neither a ZIP archive nor a .npy array.

    numpy.load reads any other file as a pickle and, with allow_pickle=False, blames pickled
    data, which misleads for a text file or an empty file.
    """
    try:
        with open(path, "rb") as file:
            head = file.read(8)
    except PermissionError:
        raise DataFileError(f"recording file {path} could not be read: permission denied; expected a readable file") from None
    if head[:4] in ZIP_SIGNATURES or head.startswith(NPY_SIGNATURE):
        return
    raise DataFileError(
        f"{path} is not a valid NPZ (zip) archive: its first bytes are {head!r}, not the ZIP signature {ZIP_SIGNATURES[0]!r}; "
        "expected a file written by numpy.savez or numpy.savez_compressed"
    )


def _unreadable(path: Path, error: Exception) -> DataFileError:
    return DataFileError(
        f"could not read {path} as an NPZ archive ({type(error).__name__}: {error}); "
        "the file may be truncated, corrupt, in another format or contain pickled objects; "
        "expected a file written by numpy.savez or numpy.savez_compressed"
    )


def _find_y_key(arrays: dict[str, np.ndarray], path: Path) -> str:
    present = [key for key in Y_KEYS if key in arrays]
    if not present or not ("ts" in arrays or "dt" in arrays):
        raise DataError(
            f"{path} contains the keys {sorted(arrays)}; expected one of {list(Y_KEYS)} "
            "and either 'ts' or 'dt'"
        )
    if len(present) > 1:
        raise DataError(f"{path} contains {present}, which all name the data array; expected only one")
    return present[0]


def _read_ts(arrays: dict[str, np.ndarray], n_time: int, path: Path) -> np.ndarray:
    if "dt" not in arrays:
        return arrays["ts"]

    dt = arrays["dt"]
    if dt.size != 1 or not np.issubdtype(dt.dtype, np.number):
        raise DataError(f"dt in {path} has shape {dt.shape} and dtype {dt.dtype}; expected a number of seconds")
    dt = float(dt.reshape(()))
    if not (np.isfinite(dt) and dt > 0):
        raise DataError(f"dt in {path} is {dt}; expected a positive number of seconds")

    if "ts" not in arrays:
        return np.arange(n_time) * dt

    ts = arrays["ts"]
    if ts.ndim == 1 and ts.size > 1 and not np.isclose(np.median(np.diff(ts)), dt, rtol=1e-6):
        raise DataError(f"{path} has dt = {dt} but the median step of ts is {np.median(np.diff(ts))}; expected them to agree")
    return ts


def _read_metadata(arrays: dict[str, np.ndarray], path: Path, y_key: str, n_trials: int) -> dict:
    metadata = _parse_metadata_json(arrays, path)
    metadata.setdefault("source", str(path))
    if y_key == "spikes":
        metadata.setdefault("units", "spikes per bin")
    if DESCRIPTION_KEY in arrays:
        metadata.setdefault("description", str(arrays[DESCRIPTION_KEY]))
    for key in NAME_KEYS:
        if key in arrays:
            metadata.setdefault(key, [str(name) for name in np.ravel(arrays[key])])

    trial_info = dict(metadata.get(TRIAL_INFO_KEY, {}))
    other_arrays = dict(metadata.get("arrays", {}))
    for key, value in arrays.items():
        if key in CANONICAL_KEYS:
            continue
        if value.ndim >= 1 and value.shape[0] == n_trials:
            trial_info.setdefault(key, value.tolist())
        else:
            other_arrays.setdefault(key, value.tolist())

    if trial_info:
        metadata[TRIAL_INFO_KEY] = trial_info
    if other_arrays:
        metadata["arrays"] = other_arrays
    return metadata


def _parse_metadata_json(arrays: dict[str, np.ndarray], path: Path) -> dict:
    if METADATA_KEY not in arrays:
        return {}

    text = arrays[METADATA_KEY]
    if text.size != 1 or text.dtype.kind != "U":
        raise DataError(f"{METADATA_KEY} in {path} has shape {text.shape} and dtype {text.dtype}; expected one JSON string")
    try:
        metadata = json.loads(str(text.reshape(())))
    except json.JSONDecodeError as error:
        raise DataError(f"{METADATA_KEY} in {path} is not valid JSON: {error}") from error
    if not isinstance(metadata, dict):
        raise DataError(f"{METADATA_KEY} in {path} contains a {type(metadata).__name__}; expected a JSON object")
    return metadata
