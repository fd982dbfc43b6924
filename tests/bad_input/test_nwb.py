"""Bad NWB files given to load_nwb and load_recording.

Each case starts from one small NWB file written with pynwb (three units, two trials, two
TimeSeries) and damages a copy with h5py, which is much faster than writing a file per case.
"""

import atexit
import functools
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from neuroude.data import load_nwb, load_recording
from neuroude.errors import ConfigError, DataError, DataFileError

from .cases import Case, check
from .files import copy_bytes, flip, truncate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from nwb_files import write_nwb  # noqa: E402


@functools.cache
def template(**parts) -> Path:
    """Write the NWB file once per set of `write_nwb` flags, in a folder that lives as long as the tests."""
    folder = tempfile.mkdtemp(prefix="neuroude-bad-nwb-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / "session.nwb"
    write_nwb(path, **parts)
    return path


def session(tmp, edit=None, **parts) -> Path:
    """Copy the template to `tmp` and apply `edit(h5py_file)` to the copy."""
    path = tmp / "session.nwb"
    shutil.copy(template(**parts), path)
    if edit is not None:
        with h5py.File(path, "r+") as file:
            edit(file)
    return path


def load_session(edit=None, parts=None, **options):
    options.setdefault("bin_width", 0.1)
    return lambda tmp: load_nwb(session(tmp, edit, **(parts or {})), **options)


def load_damaged(damage):
    return lambda tmp: load_nwb(damage(session(tmp)), bin_width=0.1)


POS_TIMES = "processing/behavior/Position/pos/timestamps"


def replace(name, value):
    def edit(file):
        del file[name]
        file[name] = value

    return edit


def set_value(name, index, value):
    def edit(file):
        file[name][index] = value

    return edit


def drop(*names):
    def edit(file):
        for name in names:
            del file[name]

    return edit


def load_short_timestamps(tmp):
    def edit(file):
        replace(POS_TIMES, file[POS_TIMES][:-3])(file)

    # pynwb warns about the shortened timestamps when it reads the file, before the loader rejects them.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Length of data does not match", category=UserWarning)
        return load_nwb(session(tmp, edit), bin_width=0.1, behaviour=["pos"])


def load_npz_named_nwb(tmp):
    np.savez(tmp / "session.npz", y=np.ones((2, 3, 1)), ts=np.arange(3) * 0.1)
    return load_nwb(copy_bytes(tmp / "session.npz", tmp / "session.nwb"), bin_width=0.1)


def load_text_named_nwb(tmp):
    (tmp / "session.nwb").write_text("unit,spike_time\n0,0.05\n")
    return load_nwb(tmp / "session.nwb", bin_width=0.1)


def load_plain_hdf5_named_nwb(tmp):
    with h5py.File(tmp / "session.nwb", "w") as file:
        file["spikes"] = np.ones((2, 3, 1))
    return load_nwb(tmp / "session.nwb", bin_width=0.1)


def load_directory(tmp):
    (tmp / "session.nwb").mkdir()
    return load_nwb(tmp / "session.nwb", bin_width=0.1)


CASES = [
    Case("directory", load_directory, DataFileError,
         "recording path", "session.nwb is a directory", "expected a recording file"),
    Case("truncated", load_damaged(truncate), DataFileError,
         "could not open", "truncated file", "expected a complete, undamaged HDF5 or NWB file",
         extra=("session.nwb",)),
    Case("corrupted superblock", load_damaged(lambda path: flip(path, 8, 92)), DataFileError,
         "could not open", "bad superblock version number", "expected a complete, undamaged HDF5 or NWB file"),
    Case("text named .nwb", load_text_named_nwb, DataFileError,
         "is not an NWB, MATLAB, HDF5 or NPZ file", "b'unit,spike_time\\n'", "expected the HDF5 signature"),
    Case("NPZ bytes named .nwb", load_npz_named_nwb, DataFileError,
         "named like a NWB file", "its content is a NPZ file", "format='npz'"),
    Case("plain HDF5 named .nwb", load_plain_hdf5_named_nwb, DataFileError,
         "named like a NWB file", "its content is a HDF5 file", "format='hdf5'"),
    Case("no Units table", load_session(parts={"units": False}), DataError,
         "session.nwb", "has no Units table", "expected sorted units with spike_times"),
    Case("NaN spike time", load_session(set_value("units/spike_times", 2, np.nan)), DataError,
         "unit 0 in the Units table", "non-finite spike times", "expected finite times in seconds"),
    Case("no trials table", load_session(parts={"trials": False}), DataError,
         "session.nwb", "has no trials table", "expected trials with start_time and stop_time"),
    Case("trials without stop_time", load_session(drop("intervals/trials/stop_time")), DataError,
         "the trials table of", "has no stop_time column", "expected start_time and stop_time"),
    Case("trials without start and stop", load_session(drop("intervals/trials/start_time", "intervals/trials/stop_time")),
         DataError, "the trials table of", "has no start_time or stop_time column", "expected start_time and stop_time"),
    Case("NaN start_time", load_session(set_value("intervals/trials/start_time", 0, np.nan)), DataError,
         "start_time values", "1 missing or non-finite", "expected a time in seconds for every trial"),
    Case("stop before start", load_session(set_value("intervals/trials/stop_time", 1, 1.0)), DataError,
         "trial 1", "stop_time 1.0 <= start_time 1.1", "expected every trial to end after it starts"),
    Case("trial shorter than a bin", load_session(bin_width=2.0), DataError,
         "trial 0", "lasts 1 s, shorter than one bin of 2 s", "expected trials of at least one bin"),
    Case("unknown TimeSeries", load_session(stimulus=["lick"]), DataError,
         "no TimeSeries named 'lick'", "the file contains: Position/pos, root/stimulus", "session.nwb"),
    Case("TimeSeries strings", load_session(replace("acquisition/stimulus/data", np.array([b"on"] * 301)),
                                            stimulus=["stimulus"]),
         DataError, "TimeSeries 'stimulus'", "dtype |S2", "expected numbers"),
    Case("TimeSeries infinity", load_session(set_value("acquisition/stimulus/data", 20, np.inf), stimulus=["stimulus"]),
         DataError, "TimeSeries 'stimulus'", "1 NaN or infinite samples (first at time 0.2 s)", "expected finite values"),
    Case("timestamps repeated", load_session(set_value(POS_TIMES, 5, 0.0), behaviour=["pos"]), DataError,
         "TimeSeries 'pos'", "timestamps[5] = 0 follows", "expected strictly increasing times"),
    Case("timestamps fewer than samples", load_short_timestamps, DataError, "TimeSeries 'pos'", "199 timestamps for 202 samples", "expected one timestamp per sample"),
    Case("split missing", load_session(splits=["val"]), DataError,
         "no trial in", "a split in ['val']", "the file's splits are ['test', 'train']"),
    Case("split column absent", load_session(parts={"split": False}, splits=["train"]), DataError,
         "splits is ['train']", "has no 'split' column", "the trials table of"),
    Case("align_to column absent", load_session(align_to="go_cue_time", align_window=(-0.1, 0.2)), DataError,
         "align_to is 'go_cue_time'", "has no such column", "its columns are ['split', 'start_time', 'stop_time']"),
    Case("bin_width negative", load_session(bin_width=-0.1), ConfigError,
         "bin_width is", "-0.1", "expected a positive number of seconds"),
    Case("trial_length unknown", load_session(trial_length="truncate"), ConfigError,
         "trial_length is", "'truncate'", "expected one of ['pad', 'cut']"),
    Case("bin_width missing", lambda tmp: load_recording(session(tmp)), ConfigError,
         "nwb files need the option bin_width", "options given: none", "expected the required options: bin_width"),
]


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_bad_nwb_rejected(case, tmp_path):
    check(case, tmp_path)
