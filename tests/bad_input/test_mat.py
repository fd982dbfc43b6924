"""Bad MATLAB files given to load_mat (v5 files read by scipy.io, v7.3 files by h5py)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from neuroude.data import load_mat
from neuroude.errors import ConfigError, DataError, DataFileError

from .cases import Case, check
from .files import copy_bytes, flip, truncate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_arrays import write_mat_v73  # noqa: E402

Y = np.ones((4, 5, 2))
TS = np.arange(5) * 0.01


def with_value(index, value, array=Y):
    changed = np.array(array, dtype=np.float64)
    changed[index] = value
    return changed


def saved(tmp, **variables):
    path = tmp / "session.mat"
    scipy.io.savemat(path, variables)
    return path


def load_saved(options=None, **variables):
    return lambda tmp: load_mat(saved(tmp, **variables), **(options or {"y": "spikes", "dt": 0.01}))


def load_damaged(damage, version_73=False, compressed=False):
    def action(tmp):
        path = tmp / "session.mat"
        if version_73:
            write_mat_v73(path, {"spikes": Y})
        else:
            scipy.io.savemat(path, {"spikes": Y}, do_compression=compressed)
        return load_mat(damage(path), y="spikes", dt=0.01)

    return action


def load_v73(**variables):
    def action(tmp):
        path = tmp / "session.mat"
        write_mat_v73(path, variables)
        return load_mat(path, y="spikes", dt=0.01)

    return action


def load_npz_named_mat(tmp):
    np.savez(tmp / "session.npz", y=Y, ts=TS)
    return load_mat(copy_bytes(tmp / "session.npz", tmp / "session.mat"), y="y", dt=0.01)


def load_text_named_mat(tmp):
    (tmp / "session.mat").write_text("trial,time,spikes\n1,0.0,3\n")
    return load_mat(tmp / "session.mat", y="spikes", dt=0.01)


def load_directory(tmp):
    (tmp / "session.mat").mkdir()
    return load_mat(tmp / "session.mat", y="spikes", dt=0.01)


CASES = [
    Case("directory", load_directory, DataFileError,
         "recording path", "session.mat is a directory", "expected a recording file"),
    Case("truncated v5", load_damaged(truncate), DataFileError,
         "could not read", "session.mat as a MATLAB file", "expected a complete file written by MATLAB"),
    Case("cut inside the header", load_damaged(lambda path: truncate(path, 100)), DataFileError,
         "could not read", "IndexError", "expected a complete file written by MATLAB"),
    Case("header only", load_damaged(lambda path: truncate(path, 128)), DataError,
         "no variable 'spikes'", "the file contains: no variables", "session.mat"),
    Case("corrupted v5 tag", load_damaged(lambda path: flip(path, 128, 72)), DataFileError,
         "could not read", "Expecting miMATRIX type", "expected a complete file written by MATLAB"),
    Case("corrupted compressed v5", load_damaged(lambda path: flip(path, 140, 32), compressed=True), DataFileError,
         "could not read", "error: Error -3 while decompressing data", "expected a complete file written by MATLAB"),
    Case("truncated v7.3", load_damaged(truncate, version_73=True), DataFileError,
         "could not read", "truncated file", "expected a complete, undamaged HDF5 file"),
    Case("corrupted v7.3", load_damaged(lambda path: flip(path, len(path.read_bytes()) // 2), version_73=True),
         DataFileError, "could not read", "RuntimeError", "expected a complete, undamaged HDF5 file"),
    Case("NPZ bytes named .mat", load_npz_named_mat, DataFileError,
         "named like a MAT file", "its content is a NPZ file", "format='npz'"),
    Case("text named .mat", load_text_named_mat, DataFileError,
         "is not an NWB, MATLAB, HDF5 or NPZ file", "b'trial,time,spike'", "expected the HDF5 signature"),
    Case("variable missing", load_saved(rates=Y, dt=0.01), DataError,
         "no variable 'spikes'", "the file contains: dt, rates", "session.mat"),
    Case("struct field missing", load_saved({"y": "data/spikes", "dt": 0.01}, data={"rates": Y}), DataError,
         "'data' in", "has no field 'spikes'", "its fields are ['rates']"),
    Case("v7.3 dataset missing", load_v73(rates=Y), DataError,
         "dataset 'spikes'", "is missing", "the file contains the datasets: rates"),
    Case("y 4-D", load_saved(spikes=np.ones((4, 5, 2, 3))), DataError,
         "'spikes' in", "shape (4, 5, 2, 3)", "expected 3 axes (trials, time, channels)"),
    Case("y strings", load_saved(spikes=np.array(["ab", "cd"])), DataError,
         "'spikes' in", "dtype <U2", "expected a numeric array"),
    Case("y cell array", load_saved(spikes=np.array([[1, 2], [3]], dtype=object)), DataError,
         "'spikes' in", "dtype object", "expected a numeric array"),
    Case("v7.3 y strings", load_v73(spikes=np.array([b"ab", b"cd"])), DataError,
         "'spikes' in", "dtype |S2", "expected a numeric array"),
    Case("y NaN", load_saved(spikes=with_value((1, 2, 0), np.nan)), DataError,
         "y contains 1 NaN", "index (1, 2, 0)", "expected finite values", extra=("session.mat",)),
    Case("y infinity", load_saved(spikes=with_value((3, 4, 1), np.inf)), DataError,
         "y contains 1 NaN or infinite", "index (3, 4, 1)", "expected finite values"),
    Case("negative counts", lambda tmp: load_saved(spikes=with_value((0, 1, 1), -3.0))(tmp).check_counts(), DataError,
         "y has 1 negative values", "minimum -3.0", "expected non-negative spike counts"),
    Case("fractional counts", lambda tmp: load_saved(spikes=with_value((0, 1, 1), 0.5))(tmp).check_counts(), DataError,
         "y has 1 non-integer values", "e.g. 0.5", "expected integer spike counts"),
    Case("ts unsorted", load_saved({"y": "spikes", "ts": "t"}, spikes=Y, t=np.array([0, 0.02, 0.01, 0.03, 0.04])),
         DataError, "ts is unsorted", "ts[2] = 0.01 comes after ts[1] = 0.02", "expected strictly increasing"),
    Case("ts repeated", load_saved({"y": "spikes", "ts": "t"}, spikes=Y, t=np.array([0, 0.01, 0.01, 0.03, 0.04])),
         DataError, "ts has a repeated time", "0.01 at indices 1 and 2", "expected strictly increasing"),
    Case("ts wrong length", load_saved({"y": "spikes", "ts": "t"}, spikes=Y, t=np.arange(6) * 0.01), DataError,
         "ts has shape", "(6,)", "expected (5,)"),
    Case("u trial count", load_saved({"y": "spikes", "dt": 0.01, "u": "stim"}, spikes=Y, stim=np.ones((3, 5, 1))),
         DataError, "different trial counts in y and u", "u has 3", "expected 4", extra=("session.mat",)),
    Case("behaviour trial count",
         load_saved({"y": "spikes", "dt": 0.01, "behaviour": "pos"}, spikes=Y, pos=np.ones((3, 5, 2))),
         DataError, "different trial counts in y and behaviour", "behaviour has 3", "expected 4"),
    Case("dt variable negative", load_saved({"y": "spikes", "dt": "dt"}, spikes=Y, dt=-0.01), DataError,
         "dt 'dt' in", "is -0.01", "expected a positive number of seconds", extra=("session.mat",)),
    Case("dt variable text", load_saved({"y": "spikes", "dt": "dt"}, spikes=Y, dt="fast"), DataError,
         "'dt' in", "dtype <U4", "expected a numeric array"),
    Case("ts and dt both", load_saved({"y": "spikes", "dt": 0.01, "ts": "t"}, spikes=Y, t=TS), ConfigError,
         "ts is 't' and dt is 0.01", "ts is 't'", "expected exactly one of them"),
    Case("layout two axes", load_saved({"y": "spikes", "dt": 0.01, "layout": "trials,time"}, spikes=Y), ConfigError,
         "layout is", "'trials,time'", "expected a comma-separated order of trials, time, channels"),
]


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_bad_mat_rejected(case, tmp_path):
    check(case, tmp_path)
