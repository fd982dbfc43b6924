"""Bad HDF5 files given to load_hdf5 and load_recording."""

import h5py
import numpy as np
import pytest
import scipy.io

from neuroude.data import load_hdf5, load_recording
from neuroude.errors import ConfigError, DataError, DataFileError

from .cases import Case, check
from .files import copy_bytes, flip, truncate

Y = np.ones((4, 5, 2))
TS = np.arange(5) * 0.01


def saved(tmp, **datasets):
    path = tmp / "session.h5"
    with h5py.File(path, "w") as file:
        for name, value in datasets.items():
            file[name] = value
    return path


def load_saved(options=None, **datasets):
    return lambda tmp: load_hdf5(saved(tmp, **datasets), **(options or {"y": "spikes", "dt": 0.01}))


def load_damaged(damage):
    return lambda tmp: load_hdf5(damage(saved(tmp, spikes=Y)), y="spikes", dt=0.01)


def load_mat_named_h5(tmp):
    scipy.io.savemat(tmp / "session.mat", {"spikes": Y})
    return load_hdf5(copy_bytes(tmp / "session.mat", tmp / "session.h5"), y="spikes", dt=0.01)


def load_npz_named_h5(tmp):
    np.savez(tmp / "session.npz", y=Y, ts=TS)
    return load_hdf5(copy_bytes(tmp / "session.npz", tmp / "session.h5"), y="y", dt=0.01)


def load_directory(tmp):
    (tmp / "session.h5").mkdir()
    return load_hdf5(tmp / "session.h5", y="spikes", dt=0.01)


def with_value(index, value):
    changed = Y.copy()
    changed[index] = value
    return changed


CASES = [
    Case("directory", load_directory, DataFileError,
         "recording path", "session.h5 is a directory", "expected a recording file"),
    Case("empty file", load_damaged(lambda path: truncate(path, 0)), DataFileError,
         "is not an NWB, MATLAB, HDF5 or NPZ file", "its first bytes are b''", "expected the HDF5 signature"),
    Case("truncated", load_damaged(truncate), DataFileError,
         "could not open", "truncated file", "expected a complete, undamaged HDF5 or NWB file",
         extra=("session.h5",)),
    Case("corrupted superblock", load_damaged(lambda path: flip(path, 8, 92)), DataFileError,
         "could not open", "bad superblock version number", "expected a complete, undamaged HDF5 or NWB file"),
    Case("MATLAB v5 bytes named .h5", load_mat_named_h5, DataFileError,
         "named like a HDF5 file", "its content is a MAT file", "format='mat'"),
    Case("NPZ bytes named .h5", load_npz_named_h5, DataFileError,
         "named like a HDF5 file", "its content is a NPZ file", "format='npz'"),
    Case("dataset missing", load_saved(rates=Y), DataError,
         "dataset 'spikes'", "is missing", "the file contains the datasets: rates"),
    Case("dataset is a group", load_saved({"y": "neural", "dt": 0.01}, **{"neural/counts": Y}), DataError,
         "dataset 'neural'", "is a group", "the file contains the datasets: neural/counts"),
    Case("y scalar", load_saved(spikes=3.0), DataError,
         "'spikes' in", "shape ()", "expected 3 axes (trials, time, channels), or 2 without the trials axis"),
    Case("y 4-D", load_saved(spikes=np.ones((4, 5, 2, 1))), DataError,
         "'spikes' in", "shape (4, 5, 2, 1)", "expected 3 axes"),
    Case("y no trials", load_saved(spikes=np.ones((0, 5, 2))), DataError,
         "y has shape", "(0, 5, 2)", "expected at least one trial", extra=("session.h5",)),
    Case("y byte strings", load_saved(spikes=np.array([b"ab", b"cd"])), DataError,
         "'spikes' in", "dtype |S2", "expected a numeric array"),
    Case("y variable-length strings", load_saved(spikes=np.array(["ab", "cd"], dtype=h5py.string_dtype())),
         DataError, "'spikes' in", "dtype object", "expected a numeric array"),
    Case("y compound", load_saved(spikes=np.zeros(3, dtype=[("a", "f4"), ("b", "i4")])), DataError,
         "'spikes' in", "dtype [('a', '<f4'), ('b', '<i4')]", "expected a numeric array"),
    Case("y NaN", load_saved(spikes=with_value((2, 1, 0), np.nan)), DataError,
         "y contains 1 NaN", "index (2, 1, 0)", "expected finite values", extra=("session.h5",)),
    Case("y infinity", load_saved(spikes=with_value((0, 0, 1), -np.inf)), DataError,
         "y contains 1 NaN or infinite", "index (0, 0, 1)", "expected finite values"),
    Case("negative counts", lambda tmp: load_saved(spikes=with_value((1, 1, 1), -1.0))(tmp).check_counts(), DataError,
         "y has 1 negative values", "minimum -1.0", "expected non-negative spike counts"),
    Case("fractional counts", lambda tmp: load_saved(spikes=with_value((1, 1, 1), 2.5))(tmp).check_counts(), DataError,
         "y has 1 non-integer values", "e.g. 2.5", "expected integer spike counts"),
    Case("ts 2-D", load_saved({"y": "spikes", "ts": "t"}, spikes=Y, t=np.ones((5, 2))), DataError,
         "ts 't' in", "shape (5, 2)", "expected a vector of 5 times"),
    Case("ts strings", load_saved({"y": "spikes", "ts": "t"}, spikes=Y, t=np.array([b"a"] * 5)), DataError,
         "'t' in", "dtype |S1", "expected a numeric array"),
    Case("ts unsorted", load_saved({"y": "spikes", "ts": "t"}, spikes=Y, t=np.array([0, 0.01, 0.03, 0.02, 0.04])),
         DataError, "ts is unsorted", "ts[3] = 0.02 comes after ts[2] = 0.03", "expected strictly increasing"),
    Case("ts repeated", load_saved({"y": "spikes", "ts": "t"}, spikes=Y, t=np.array([0, 0.01, 0.02, 0.02, 0.04])),
         DataError, "ts has a repeated time", "0.02 at indices 2 and 3", "expected strictly increasing"),
    Case("ts NaN", load_saved({"y": "spikes", "ts": "t"}, spikes=Y, t=np.array([0, 0.01, np.nan, 0.03, 0.04])),
         DataError, "ts contains 1 NaN", "index (2,)", "expected finite values"),
    Case("u trial count", load_saved({"y": "spikes", "dt": 0.01, "u": "stim"}, spikes=Y, stim=np.ones((2, 5, 1))),
         DataError, "different trial counts in y and u", "u has 2", "expected 4", extra=("session.h5",)),
    Case("u time length", load_saved({"y": "spikes", "dt": 0.01, "u": "stim"}, spikes=Y, stim=np.ones((4, 6, 1))),
         DataError, "different time lengths in y and u", "u has 6", "expected 5"),
    Case("behaviour trial count",
         load_saved({"y": "spikes", "dt": 0.01, "behaviour": "pos"}, spikes=Y, pos=np.ones((5, 5, 2))),
         DataError, "different trial counts in y and behaviour", "behaviour has 5", "expected 4"),
    Case("u blocks disagree",
         load_saved({"y": "spikes", "dt": 0.01, "u": ["a", "b"]}, spikes=Y, a=np.ones((4, 5, 1)), b=np.ones((4, 6, 1))),
         DataError, "different trial or time lengths", "a (4, 5, 1), b (4, 6, 1)", "expected them to match"),
    Case("mask not logical", load_saved({"y": "spikes", "dt": 0.01, "mask": "m"}, spikes=Y, m=np.full((4, 5, 2), 2)),
         DataError, "mask 'm' in", "dtype int64 with values other than 0 and 1", "expected logical values"),
    Case("dt variable zero", load_saved({"y": "spikes", "dt": "bin"}, spikes=Y, bin=0.0), DataError,
         "dt 'bin' in", "is 0.0", "expected a positive number of seconds"),
    Case("y option missing", lambda tmp: load_recording(saved(tmp, spikes=Y), dt=0.01), ConfigError,
         "hdf5 files need the option y", "options given: ['dt']", "expected the required options: y"),
    Case("NWB option given", lambda tmp: load_recording(saved(tmp, spikes=Y), y="spikes", dt=0.01, bin_width=0.1),
         ConfigError, "hdf5 files take no option", "bin_width", "the options for hdf5 are: y, ts, dt"),
]


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_bad_hdf5_rejected(case, tmp_path):
    check(case, tmp_path)
