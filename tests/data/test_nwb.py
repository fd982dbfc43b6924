import h5py
import numpy as np
import pytest
from nwb_files import SPIKES, TRIALS, write_nwb

from neuroude.data.nwb import load_nwb
from neuroude.errors import ConfigError, DataError, DataFileError


@pytest.fixture(scope="module")
def nwb_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("nwb") / "session.nwb"
    write_nwb(path)
    return path


def expected_counts(start, n_bins, bin_width=0.1):
    counts = np.zeros((n_bins, len(SPIKES)))
    for unit, times in enumerate(SPIKES):
        for time in times:
            index = int(np.floor((time - start) / bin_width + 1e-9))
            if time >= start and index < n_bins:
                counts[index, unit] += 1
    return counts


def test_padded_trials_counts_and_mask(nwb_path):
    recording = load_nwb(nwb_path, bin_width=0.1)

    assert recording.y.shape == (2, 10, 3)
    assert np.array_equal(recording.y[0], expected_counts(0.0, 10))
    assert np.array_equal(recording.y[1, :8], expected_counts(1.1, 8))
    assert np.all(recording.y[1, 8:] == 0)
    assert recording.mask[0].all()
    assert recording.mask[1, :8].all()
    assert not recording.mask[1, 8:].any()
    assert np.allclose(recording.ts, np.arange(10) * 0.1)
    assert recording.metadata["trial_info"]["n_bins"] == [10, 8]


def test_cut_trials_to_shortest(nwb_path):
    recording = load_nwb(nwb_path, bin_width=0.1, trial_length="cut")

    assert recording.y.shape == (2, 8, 3)
    assert recording.mask is None
    assert np.array_equal(recording.y[0], expected_counts(0.0, 8))


def test_spike_total_matches_bins(nwb_path):
    recording = load_nwb(nwb_path, bin_width=0.05)
    in_trials = sum(
        sum(start <= t < start + np.floor((stop - start) / 0.05 + 1e-9) * 0.05 for t in times)
        for times in SPIKES
        for start, stop, _ in TRIALS
    )
    assert recording.y.sum() == in_trials
    recording.check_counts()


def test_time_series_resampled_at_bin_centres(nwb_path):
    recording = load_nwb(nwb_path, bin_width=0.1, stimulus=["stimulus"], behaviour=["pos"])
    centres = np.array([start for start, _, _ in TRIALS])[:, None] + (np.arange(10) + 0.5) * 0.1

    assert recording.u.shape == (2, 10, 1)
    assert np.allclose(recording.u[0, :, 0], 2 * centres[0], atol=1e-5)
    assert np.allclose(recording.u[1, :8, 0], 2 * centres[1, :8], atol=1e-5)
    assert np.all(recording.u[1, 8:] == 0)
    assert recording.behaviour.shape == (2, 10, 2)
    assert np.allclose(recording.behaviour[0, :, 0], centres[0], atol=1e-5)
    assert np.allclose(recording.behaviour[0, :, 1], -centres[0], atol=1e-5)
    assert recording.metadata["input_names"] == ["stimulus"]
    assert recording.metadata["behaviour_names"] == ["pos[0]", "pos[1]"]


def test_qualified_series_name(nwb_path):
    recording = load_nwb(nwb_path, bin_width=0.1, behaviour=["Position/pos"])
    assert recording.behaviour.shape == (2, 10, 2)


def test_nlb_split_and_heldout_units(nwb_path):
    recording = load_nwb(nwb_path, bin_width=0.1)

    assert recording.metadata["trial_info"]["split"] == ["train", "test"]
    assert recording.metadata["heldout_units"] == [1]
    assert recording.metadata["heldin_units"] == [0, 2]
    assert recording.metadata["trial_info"]["start_time"] == [0.0, 1.1]


def test_select_splits(nwb_path):
    recording = load_nwb(nwb_path, bin_width=0.1, splits=["test"])

    assert recording.n_trials == 1
    assert recording.n_time == 8
    assert recording.metadata["trial_info"]["split"] == ["test"]


def test_unknown_split_lists_present_ones(nwb_path):
    with pytest.raises(DataError, match=r"no trial .* has a split in \['val'\].*\['test', 'train'\]"):
        load_nwb(nwb_path, bin_width=0.1, splits=["val"])


def test_windows_without_trials_table(tmp_path):
    path = tmp_path / "session.nwb"
    write_nwb(path, trials=False)
    recording = load_nwb(path, bin_width=0.1, trial_duration=0.5)

    # Spikes span 0.05 s to 1.85 s, so two whole windows of 0.5 s start at 0.05 s.
    assert recording.y.shape == (3, 5, 3)
    assert recording.metadata["trial_info"]["start_time"] == pytest.approx([0.05, 0.55, 1.05])


def test_missing_units_table(tmp_path):
    path = tmp_path / "nounits.nwb"
    write_nwb(path, units=False)
    with pytest.raises(DataError, match=r"nounits\.nwb has no Units table"):
        load_nwb(path, bin_width=0.1)


def test_missing_trials_table(tmp_path):
    path = tmp_path / "notrials.nwb"
    write_nwb(path, trials=False)
    with pytest.raises(DataError, match=r"notrials\.nwb has no trials table.*trial_duration"):
        load_nwb(path, bin_width=0.1)


def test_trials_without_stop_time(tmp_path):
    path = tmp_path / "nostop.nwb"
    write_nwb(path)
    with h5py.File(path, "a") as file:
        trials = file["intervals/trials"]
        del trials["stop_time"]
        trials.attrs["colnames"] = np.array([name for name in trials.attrs["colnames"] if name != "stop_time"], dtype=object)

    with pytest.raises(DataError, match=r"trials table of .*nostop\.nwb has no stop_time column"):
        load_nwb(path, bin_width=0.1)


def test_trials_with_nan_stop_time(tmp_path):
    path = tmp_path / "nanstop.nwb"
    write_nwb(path)
    with h5py.File(path, "a") as file:
        file["intervals/trials/stop_time"][1] = np.nan

    with pytest.raises(DataError, match=r"nanstop\.nwb has 1 missing or non-finite stop_time values \(first in trial 1\)"):
        load_nwb(path, bin_width=0.1)


def test_unknown_series_lists_available(nwb_path):
    with pytest.raises(DataError) as error:
        load_nwb(nwb_path, bin_width=0.1, behaviour=["speed"])

    message = str(error.value)
    assert "no TimeSeries named 'speed'" in message
    assert "Position/pos" in message
    assert "root/stimulus" in message


def test_series_not_covering_trials(tmp_path):
    path = tmp_path / "late.nwb"
    write_nwb(path)
    with h5py.File(path, "a") as file:
        file["acquisition/stimulus/starting_time"][()] = 0.5

    with pytest.raises(DataError, match=r"'stimulus' .* covers 0\.5 to 3\.5 s"):
        load_nwb(path, bin_width=0.1, stimulus=["stimulus"])


def test_trial_shorter_than_bin(nwb_path):
    with pytest.raises(DataError, match=r"trial 1 .* lasts 0\.8 s, shorter than one bin of 0\.9 s"):
        load_nwb(nwb_path, bin_width=0.9)


def test_wrong_content_for_extension(tmp_path):
    path = tmp_path / "fake.nwb"
    np.savez(path.with_suffix(".npz"), y=np.zeros(3))
    path.write_bytes(path.with_suffix(".npz").read_bytes())
    with pytest.raises(DataFileError, match=r"fake\.nwb is named like a NWB file, but its content is a NPZ file"):
        load_nwb(path, bin_width=0.1)


def test_plain_hdf5_is_not_nwb(tmp_path):
    path = tmp_path / "plain.nwb"
    with h5py.File(path, "w") as file:
        file["y"] = np.zeros(3)
    with pytest.raises(DataFileError, match=r"content is a HDF5 file"):
        load_nwb(path, bin_width=0.1)


def test_text_file_is_rejected(tmp_path):
    path = tmp_path / "notes.nwb"
    path.write_text("not a recording")
    with pytest.raises(DataFileError, match=r"notes\.nwb is not an NWB, MATLAB, HDF5 or NPZ file"):
        load_nwb(path, bin_width=0.1)


def test_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="not found"):
        load_nwb(tmp_path / "absent.nwb", bin_width=0.1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bin_width": 0.0}, "bin_width is 0.0"),
        ({"bin_width": 0.1, "trial_length": "trim"}, "trial_length is 'trim'"),
        ({"bin_width": 0.1, "trial_duration": 0.01}, "trial_duration is 0.01"),
    ],
)
def test_invalid_options(nwb_path, options, message):
    with pytest.raises(ConfigError, match=message):
        load_nwb(nwb_path, **options)


def test_trial_columns_in_metadata(tmp_path):
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile

    nwbfile = NWBFile(session_description="test", identifier="columns", session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    nwbfile.add_unit(spike_times=[0.1, 0.2])
    nwbfile.add_trial_column(name="condition", description="scalar per trial")
    nwbfile.add_trial_column(name="events", description="ragged per trial", index=True)
    nwbfile.add_trial(start_time=0.0, stop_time=0.5, condition=3, events=[0.1, 0.2, 0.3])
    nwbfile.add_trial(start_time=0.5, stop_time=1.0, condition=7, events=[0.6])
    path = tmp_path / "columns.nwb"
    with NWBHDF5IO(str(path), mode="w") as io:
        io.write(nwbfile)

    trial_info = load_nwb(path, bin_width=0.1).metadata["trial_info"]

    assert trial_info["condition"] == [3, 7]
    assert "events" not in trial_info


@pytest.fixture(scope="module")
def event_path(tmp_path_factory):
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile

    nwbfile = NWBFile(session_description="test", identifier="events", session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    for times in SPIKES:
        nwbfile.add_unit(spike_times=times)
    nwbfile.add_trial_column(name="move_onset_time", description="movement onset, s")
    nwbfile.add_trial(start_time=0.0, stop_time=1.0, move_onset_time=0.4)
    nwbfile.add_trial(start_time=1.0, stop_time=1.5, move_onset_time=np.nan)
    nwbfile.add_trial(start_time=1.0, stop_time=2.0, move_onset_time=1.2)
    path = tmp_path_factory.mktemp("events") / "events.nwb"
    with NWBHDF5IO(str(path), mode="w") as io:
        io.write(nwbfile)
    return path


def test_align_to_event(event_path, caplog):
    with caplog.at_level("WARNING", logger="neuroude.data.nwb"):
        recording = load_nwb(event_path, bin_width=0.1, align_to="move_onset_time", align_window=(-0.3, 0.7))

    assert recording.y.shape == (2, 10, 3)
    assert recording.mask is None
    assert np.array_equal(recording.y[0], expected_counts(0.1, 10))
    assert np.array_equal(recording.y[1], expected_counts(0.9, 10))
    assert recording.metadata["dropped_trials"] == 1
    assert recording.metadata["trial_info"]["trial_start_time"] == [0.0, 1.0]
    assert recording.metadata["trial_info"]["start_time"] == pytest.approx([0.1, 0.9])
    assert "dropped 1 of 3 trials with no move_onset_time" in caplog.text


def test_align_to_unknown_column(event_path):
    with pytest.raises(DataError, match=r"align_to is 'go_cue_time', but the trials table .* has no such column"):
        load_nwb(event_path, bin_width=0.1, align_to="go_cue_time", align_window=(-0.3, 0.7))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"align_window": (-0.3, 0.7)}, "align_to is None"),
        ({"align_to": "move_onset_time", "align_window": (0.5, 0.1)}, "before < after"),
        ({"align_to": "move_onset_time", "align_window": 0.5}, r"expected \(before, after\)"),
    ],
)
def test_invalid_alignment(event_path, options, message):
    with pytest.raises(ConfigError, match=message):
        load_nwb(event_path, bin_width=0.1, **options)


OBS_INTERVALS = [[(0.0, 2.0)], [(0.0, 0.55), (1.3, 2.0)], [(0.35, 0.9)]]


def test_obs_intervals_mask_unobserved_bins(tmp_path):
    path = tmp_path / "intervals.nwb"
    write_nwb(path, obs_intervals=OBS_INTERVALS)
    recording = load_nwb(path, bin_width=0.1)

    expected = np.zeros((2, 10, 3), bool)
    expected[0, :, 0], expected[1, :8, 0] = True, True
    expected[0, :5, 1], expected[1, 2:8, 1] = True, True
    # Bin [0.3, 0.4) of unit 2 is only partly inside [0.35, 0.9], so it stays masked.
    expected[0, 4:9, 2] = True
    np.testing.assert_array_equal(recording.mask, expected)

    counts = np.stack([expected_counts(0.0, 10), np.pad(expected_counts(1.1, 8), ((0, 2), (0, 0)))])
    np.testing.assert_array_equal(recording.y, np.where(expected, counts, 0.0))
    # The spike of unit 1 at 0.50 s lies outside its first interval, so it is not counted.
    assert recording.y[0, 5, 1] == 0


def test_obs_intervals_reversed_rejected(tmp_path):
    path = tmp_path / "reversed.nwb"
    write_nwb(path, obs_intervals=[[(0.0, 2.0)], [(0.6, 0.2)], [(0.0, 2.0)]])
    with pytest.raises(DataError, match=r"unit 1 .* obs_interval \[0.6, 0.2\]"):
        load_nwb(path, bin_width=0.1)
