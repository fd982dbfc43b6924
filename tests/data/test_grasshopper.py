import importlib.util
from pathlib import Path

import numpy as np
import pytest

from neuroude.data import load_grasshopper
from neuroude.errors import ConfigError

DATA_FOLDER = Path(importlib.util.find_spec("nitime").origin).parent / "data"


def spike_times_in_file(number):
    lines = (DATA_FOLDER / f"grasshopper_spike_times{number}.txt").read_text().splitlines()
    return np.array([float(line) for line in lines if line.strip() and not line.startswith("#")]) * 1e-6


@pytest.fixture(scope="module")
def recording():
    return load_grasshopper()


def test_default_shapes(recording):
    assert recording.y.shape == (20, 200, 1)
    assert recording.u.shape == (20, 200, 1)
    assert recording.ts.shape == (200,)
    assert recording.dt == pytest.approx(0.005)
    assert recording.ts[0] == 0.0


def test_counts_match_spike_files(recording):
    expected = len(spike_times_in_file(1)) + len(spike_times_in_file(2))
    assert recording.y.sum() == expected
    recording.check_counts()


def test_counts_per_recording(recording):
    from_recording_1 = np.array(recording.metadata["trial_info"]["recording"]) == 1
    assert recording.y[from_recording_1].sum() == len(spike_times_in_file(1))


def test_counts_within_used_range():
    recording = load_grasshopper(bin_width=0.01, trial_duration=3.0, recordings=(2,))
    times = spike_times_in_file(2)
    assert recording.y.shape == (3, 300, 1)
    assert recording.y.sum() == np.sum(times < 9.0)


def test_first_trial_bins_match_spike_times(recording):
    # Integer microseconds keep spikes on a bin edge in the later bin, as [start, end) bins do.
    microseconds = np.round(spike_times_in_file(1) * 1e6).astype(np.int64)
    expected = np.bincount(microseconds // 5000, minlength=200)[:200]
    assert np.array_equal(recording.y[0, :, 0], expected)


def test_stimulus_is_standardised_per_recording(recording):
    for number in (1, 2):
        trials = np.array(recording.metadata["trial_info"]["recording"]) == number
        assert recording.u[trials].mean() == pytest.approx(0.0, abs=1e-5)
        assert recording.u[trials].std() == pytest.approx(1.0, abs=1e-4)


def test_stimulus_transform_inverts_to_db(recording):
    amplitude = np.loadtxt(DATA_FOLDER / "grasshopper_stimulus1.txt", max_rows=100)[:, 1]
    transform = recording.metadata["stimulus_transform"]["per_recording"]["1"]
    level_db = recording.u[0, 0, 0] * transform["std_db"] + transform["mean_db"]
    assert level_db == pytest.approx(20 * np.log10(amplitude.mean()), abs=1e-3)


def test_metadata(recording):
    metadata = recording.metadata
    assert "Rokem" in metadata["citation"]
    assert metadata["units"]["y"] == "spikes per bin"
    assert metadata["units"]["u"] == "standardised dB"
    assert metadata["channel_names"] == ["receptor neuron"]
    assert metadata["input_names"] == ["sound level"]
    assert metadata["trial_info"]["recording"] == [1] * 10 + [2] * 10
    assert metadata["trial_info"]["start_s"][:3] == [0.0, 1.0, 2.0]
    assert metadata["recording_headers"]["2"]["cut-off frequency (Hz)"] == 800.0


def test_partial_last_trial_is_dropped():
    recording = load_grasshopper(bin_width=0.005, trial_duration=3.0, recordings=(1,))
    assert recording.n_trials == 3
    assert recording.metadata["trial_info"]["start_s"] == [0.0, 3.0, 6.0]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"bin_width": 0.0}, "bin_width"),
        ({"bin_width": -0.005}, "bin_width"),
        ({"bin_width": 0.003}, "does not divide"),
        ({"trial_duration": 11.0}, "trial_duration"),
        ({"trial_duration": 0.0}, "trial_duration"),
        ({"recordings": (3,)}, "recordings"),
        ({"recordings": ()}, "recordings"),
        ({"recordings": (1, 1)}, "recordings"),
    ],
)
def test_rejects_bad_arguments(arguments, message):
    with pytest.raises(ConfigError, match=message):
        load_grasshopper(**arguments)
