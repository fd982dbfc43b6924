"""Bad arrays given to Recording and its methods."""

import numpy as np
import pytest

from neuroude.data import Recording
from neuroude.errors import ConfigError, DataError

from .cases import Case, check

TS = np.arange(5) * 0.01


def counts(trials=4, time=5, channels=2):
    return np.ones((trials, time, channels))


def good(**changes):
    arrays = {"y": counts(), "ts": TS, "u": np.zeros((4, 5, 1))}
    arrays.update(changes)
    return Recording(**arrays)


def with_value(index, value, array=None):
    array = counts() if array is None else array.copy()
    array[index] = value
    return array


def unsorted_ts():
    return np.array([0.0, 0.02, 0.01, 0.03, 0.04])


CASES = [
    Case("y 2-D", lambda tmp: good(y=np.ones((4, 5))), DataError,
         "y has shape", "(4, 5)", "expected (trials, time, channels)"),
    Case("y 4-D", lambda tmp: good(y=np.ones((4, 5, 2, 1))), DataError,
         "y has shape", "(4, 5, 2, 1)", "expected (trials, time, channels)"),
    Case("y strings", lambda tmp: good(y=np.full((4, 5, 2), "a")), DataError,
         "y has dtype", "<U1", "expected a numeric array"),
    Case("y ragged", lambda tmp: good(y=[[[1, 2]], [[1]]]), DataError,
         "y could not be converted", "inhomogeneous", "expected a numeric array"),
    Case("y NaN", lambda tmp: good(y=with_value((1, 2, 0), np.nan)), DataError,
         "y contains 1 NaN", "index (1, 2, 0)", "expected finite values"),
    Case("y infinity", lambda tmp: good(y=with_value((3, 4, 1), -np.inf)), DataError,
         "y contains 1 NaN or infinite", "index (3, 4, 1)", "expected finite values"),
    Case("zero-length trials", lambda tmp: good(y=np.ones((4, 0, 2)), ts=np.zeros(0), u=None), DataError,
         "y has shape", "(4, 0, 2) with an empty time axis", "expected at least one time bin"),
    Case("no trials", lambda tmp: good(y=np.ones((0, 5, 2)), u=None), DataError,
         "y has shape", "(0, 5, 2)", "expected at least one trial"),
    Case("no channels", lambda tmp: good(y=np.ones((4, 5, 0))), DataError,
         "y has shape", "(4, 5, 0)", "one channel"),
    Case("ts wrong length", lambda tmp: good(ts=np.arange(6) * 0.01), DataError,
         "ts has shape", "(6,)", "expected (5,)"),
    Case("ts unsorted", lambda tmp: good(ts=unsorted_ts()), DataError,
         "ts is unsorted", "ts[2] = 0.01 comes after ts[1] = 0.02", "expected strictly increasing"),
    Case("ts repeated", lambda tmp: good(ts=np.array([0.0, 0.01, 0.01, 0.02, 0.03])), DataError,
         "ts has a repeated time", "0.01 at indices 1 and 2", "expected strictly increasing"),
    Case("ts NaN", lambda tmp: good(ts=with_value(3, np.nan, TS)), DataError,
         "ts contains 1 NaN", "index (3,)", "expected finite values"),
    Case("u trial count", lambda tmp: good(u=np.zeros((3, 5, 1))), DataError,
         "trial counts in y and u", "u has 3", "y has 4 trials"),
    Case("u time length", lambda tmp: good(u=np.zeros((4, 6, 1))), DataError,
         "time lengths in y and u", "u has 6", "y has 5 bins"),
    Case("u 2-D", lambda tmp: good(u=np.zeros((4, 5))), DataError,
         "u has shape", "(4, 5)", "expected (trials, time, u channels)"),
    Case("u infinity", lambda tmp: good(u=with_value((0, 1, 0), np.inf, np.zeros((4, 5, 1)))), DataError,
         "u contains 1 NaN", "index (0, 1, 0)", "expected finite values"),
    Case("behaviour trial count", lambda tmp: good(behaviour=np.zeros((5, 5, 1))), DataError,
         "trial counts in y and behaviour", "behaviour has 5", "y has 4 trials"),
    Case("mask float", lambda tmp: good(mask=np.ones((4, 5, 2))), DataError,
         "mask has dtype", "float64", "expected bool"),
    Case("mask shape", lambda tmp: good(mask=np.ones((4, 5), bool)), DataError,
         "mask has shape", "(4, 5)", "expected the shape of y, (4, 5, 2)"),
    Case("metadata list", lambda tmp: good(metadata=["source"]), DataError,
         "metadata has type", "list", "expected a dict"),
    Case("metadata not JSON", lambda tmp: good(metadata={"when": object()}), DataError,
         "metadata is not JSON-serialisable", "object", "expected a dict of JSON values"),
    Case("trial info count", lambda tmp: good(metadata={"trial_info": {"rate": [1, 2]}}), DataError,
         "metadata['trial_info']['rate']", "has 2 entries", "one entry per trial (4)"),
    Case("negative counts", lambda tmp: good(y=with_value((0, 0, 0), -2.0)).check_counts(), DataError,
         "y has 1 negative values", "minimum -2.0", "expected non-negative spike counts"),
    Case("fractional counts", lambda tmp: good(y=with_value((0, 0, 0), 0.5)).check_counts(), DataError,
         "y has 1 non-integer values", "e.g. 0.5", "expected integer spike counts"),
    Case("check_counts field", lambda tmp: good().check_counts("spikes"), ConfigError,
         "field is", "'spikes'", "expected 'y', 'u' or 'behaviour'"),
    Case("select out of range", lambda tmp: good().select([0, 4]), DataError,
         "trials contains indices", "from 0 to 4", "expected indices in [0, 4)"),
    Case("select empty", lambda tmp: good().select([]), DataError,
         "trials is empty", "empty", "expected at least one trial index"),
    Case("select fractional", lambda tmp: good().select([0.5, 1.0]), DataError,
         "trials has shape", "dtype float64", "expected a 1-D array of integer indices"),
    Case("select mask length", lambda tmp: good().select(np.ones(3, bool)), DataError,
         "trials is a boolean array", "shape (3,)", "expected (4,)"),
    Case("split too few trials", lambda tmp: good(y=counts(trials=2), u=None).split(), DataError,
         "cannot split 2 trials", "(0.7, 0.15, 0.15)", "expected at least 3 trials"),
    Case("split fractions sum", lambda tmp: good().split((0.5, 0.3, 0.3)), ConfigError,
         "fractions sum to", "1.1", "expected them to sum to 1"),
    Case("dt of one bin", lambda tmp: good(y=counts(time=1), ts=np.zeros(1), u=None).dt, DataError,
         "dt is undefined", "a single time bin", "expected at least 2 time bins"),
]


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_bad_recording_rejected(case, tmp_path):
    check(case, tmp_path)
