"""Bad NPZ recording files given to load_npz."""

import json

import numpy as np
import pytest

from neuroude.data import load_npz
from neuroude.errors import DataError, DataFileError

from .cases import Case, check

Y = np.ones((4, 5, 2))
TS = np.arange(5) * 0.01


def saved(tmp, **arrays):
    path = tmp / "recording.npz"
    np.savez(path, **arrays)
    return path


def load_saved(**arrays):
    return lambda tmp: load_npz(saved(tmp, **arrays))


def load_bytes(transform):
    def action(tmp):
        path = saved(tmp, y=Y, ts=TS)
        path.write_bytes(transform(path.read_bytes()))
        return load_npz(path)

    return action


def load_directory(tmp):
    (tmp / "recording.npz").mkdir()
    return load_npz(tmp / "recording.npz")


def load_single_array(tmp):
    np.save(tmp / "recording.npy", Y)
    return load_npz(tmp / "recording.npy")


def load_pickled(tmp):
    path = tmp / "recording.npz"
    np.savez(path, y=Y, ts=TS, extra=np.array([{"a": 1}], dtype=object))
    return load_npz(path)


def load_unreadable(tmp):
    path = saved(tmp, y=Y, ts=TS)
    path.chmod(0)
    return load_npz(path)


def corrupt_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(byte ^ 0xFF for byte in data[middle : middle + 64]) + data[middle + 64 :]


CASES = [
    Case("file missing", lambda tmp: load_npz(tmp / "absent.npz"), DataFileError,
         "recording file not found", "absent.npz", "expected an existing NPZ file"),
    Case("directory", load_directory, DataFileError,
         "recording path", "is a directory", "expected an NPZ file"),
    Case("truncated", load_bytes(lambda data: data[: len(data) // 2]), DataFileError,
         "could not read", "recording.npz", "expected a file written by numpy.savez"),
    Case("corrupted bytes", load_bytes(corrupt_middle), DataFileError,
         "could not read", "recording.npz", "expected a file written by numpy.savez"),
    Case("text file", load_bytes(lambda data: b"trial,time,rate\n1,0.0,3\n"), DataFileError,
         "is not a valid NPZ (zip) archive", "b'trial,ti'", "expected a file written by numpy.savez"),
    Case("empty file", load_bytes(lambda data: b""), DataFileError,
         "is not a valid NPZ (zip) archive", "first bytes are b''", "expected a file written by numpy.savez"),
    Case("pickled object array", load_pickled, DataFileError,
         "could not read", "Object arrays cannot be loaded when allow_pickle=False", "pickled objects"),
    Case("single .npy array", load_single_array, DataFileError,
         "recording.npy", "a single .npy array", "expected a file written by numpy.savez"),
    Case("unreadable permissions", load_unreadable, DataFileError,
         "recording file", "permission denied", "expected a readable file", needs_permissions=True),
    Case("y key missing", load_saved(rates=Y, ts=TS), DataError,
         "contains the keys", "['rates', 'ts']", "expected one of ['y', 'spikes', 'traces']"),
    Case("ts and dt missing", load_saved(y=Y), DataError,
         "contains the keys", "['y']", "either 'ts' or 'dt'"),
    Case("two data arrays", load_saved(y=Y, spikes=Y, ts=TS), DataError,
         "contains ['y', 'spikes']", "which all name the data array", "expected only one"),
    Case("y 2-D", load_saved(y=np.ones((5, 2)), ts=TS), DataError,
         "y in", "shape (5, 2)", "expected (trials, time, channels)"),
    Case("y NaN", load_saved(y=np.where(np.arange(40).reshape(4, 5, 2) == 7, np.nan, 1.0), ts=TS), DataError,
         "y contains 1 NaN", "index (0, 3, 1)", "expected finite values", extra=("recording.npz",)),
    Case("dt negative", load_saved(y=Y, dt=-0.01), DataError,
         "dt in", "is -0.01", "expected a positive number of seconds"),
    Case("dt text", load_saved(y=Y, dt="fast"), DataError,
         "dt in", "dtype <U4", "expected a number of seconds"),
    Case("dt disagrees with ts", load_saved(y=Y, dt=0.02, ts=TS), DataError,
         "has dt = 0.02", "median step of ts is 0.01", "expected them to agree"),
    Case("ts unsorted", load_saved(y=Y, ts=TS[::-1]), DataError,
         "ts is unsorted", "comes after", "expected strictly increasing", extra=("recording.npz",)),
    Case("u trial count", load_saved(y=Y, ts=TS, u=np.zeros((3, 5, 1))), DataError,
         "trial counts in y and u", "u has 3", "y has 4 trials"),
    Case("metadata invalid JSON", load_saved(y=Y, ts=TS, metadata_json="{source:"), DataError,
         "metadata_json in", "is not valid JSON", "Expecting property name"),
    Case("metadata not object", load_saved(y=Y, ts=TS, metadata_json=json.dumps([1, 2])), DataError,
         "metadata_json in", "contains a list", "expected a JSON object"),
    Case("sample times unsorted", load_saved(y=Y, dt=0.01, sample_times=np.tile([0.0, 0.01, 0.03, 0.02, 0.04], (4, 1))),
         DataError, "sample_times of trial 0 is unsorted at index 3", "0.02 s does not come after 0.03 s",
         "expected strictly increasing times", extra=("recording.npz",)),
    Case("sample time NaN", load_saved(y=Y, dt=0.01, sample_times=np.tile([0.0, 0.01, np.nan, 0.03, 0.04], (4, 1))),
         DataError, "sample_times of trial 0", "is nan at index 2", "expected finite times in seconds"),
    Case("sample time after trial",
         load_saved(y=Y, dt=0.01, duration=0.03, sample_times=np.tile([0.0, 0.01, 0.02, 0.03, 0.04], (4, 1))),
         DataError, "sample_times of trial 0", "0.04 s at index 4, after the trial ends at 0.03 s",
         "expected times inside the trial"),
    Case("sample times with ts", load_saved(y=Y, ts=TS, sample_times=np.tile(TS, (4, 1))), DataError,
         "has sample_times and the keys", "'ts'", "expected 'dt', the solver grid width, and no 'ts'"),
]


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_bad_npz_rejected(case, tmp_path):
    check(case, tmp_path)
