import json

import numpy as np
import pytest

from neuroude.data import Recording
from neuroude.errors import ConfigError, DataError


def make_recording(n_trials=6, n_time=5, n_channels=3, **kwargs):
    rng = np.random.default_rng(0)
    y = rng.poisson(1.0, size=(n_trials, n_time, n_channels))
    ts = np.arange(n_time) * 0.01
    return Recording(y=y, ts=ts, **kwargs)


def test_recording_casts_dtypes():
    recording = Recording(y=[[[1, 2]], [[3, 4]]], ts=[0.5], u=np.ones((2, 1, 1), dtype=np.float64))
    assert recording.y.dtype == np.float32
    assert recording.ts.dtype == np.float64
    assert recording.u.dtype == np.float32


def test_recording_properties():
    recording = make_recording(u=np.zeros((6, 5, 2)))
    assert recording.n_trials == 6
    assert recording.n_time == 5
    assert recording.n_channels == 3
    assert recording.n_inputs == 2
    assert recording.dt == pytest.approx(0.01)


def test_recording_without_input_has_zero_inputs():
    assert make_recording().n_inputs == 0


def test_dt_is_median_step():
    recording = Recording(y=np.zeros((1, 4, 1)), ts=[0.0, 0.1, 0.2, 1.0])
    assert recording.dt == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (np.zeros((3, 100)), r"y has shape \(3, 100\); expected \(trials, time, channels\)"),
        (np.zeros((3, 0, 2)), "empty trials"),
        (np.zeros((0, 4, 2)), "at least one trial"),
        (np.array([[["a"]]]), "dtype"),
    ],
)
def test_recording_rejects_bad_y(y, message):
    with pytest.raises(DataError, match=message):
        Recording(y=y, ts=np.arange(y.shape[1] if y.ndim > 1 else 1, dtype=float))


def test_recording_reports_nan_count_and_index():
    y = np.zeros((2, 3, 1))
    y[1, 2, 0] = np.nan
    y[0, 1, 0] = np.inf
    with pytest.raises(DataError, match=r"y contains 2 NaN or infinite values \(first at index \(0, 1, 0\)\)"):
        Recording(y=y, ts=[0, 1, 2])


def test_recording_rejects_nan_in_u():
    u = np.zeros((2, 3, 1))
    u[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="u contains 1 NaN"):
        Recording(y=np.zeros((2, 3, 1)), ts=[0, 1, 2], u=u)


def test_recording_rejects_inf_in_behaviour():
    behaviour = np.zeros((2, 3, 2))
    behaviour[1, 0, 1] = -np.inf
    with pytest.raises(DataError, match="behaviour contains 1 NaN"):
        Recording(y=np.zeros((2, 3, 1)), ts=[0, 1, 2], behaviour=behaviour)


@pytest.mark.parametrize(
    ("ts", "message"),
    [
        ([0.0, 1.0], r"ts has shape \(2,\); expected \(3,\)"),
        ([[0.0, 1.0, 2.0]], r"ts has shape \(1, 3\)"),
        ([0.0, 2.0, 1.0], r"ts is unsorted: ts\[2\] = 1.0 comes after ts\[1\] = 2.0"),
        ([0.0, 1.0, 1.0], r"ts has a repeated time 1.0 at indices 1 and 2"),
        ([0.0, np.nan, 2.0], "ts contains 1 NaN"),
    ],
)
def test_recording_rejects_bad_ts(ts, message):
    with pytest.raises(DataError, match=message):
        Recording(y=np.zeros((2, 3, 1)), ts=ts)


def test_recording_rejects_different_trial_counts():
    with pytest.raises(DataError, match="different trial counts in y and u: y has 2 trials, u has 3"):
        Recording(y=np.zeros((2, 3, 1)), ts=[0, 1, 2], u=np.zeros((3, 3, 1)))


def test_recording_rejects_different_time_lengths():
    with pytest.raises(DataError, match="different time lengths in y and behaviour"):
        Recording(y=np.zeros((2, 3, 1)), ts=[0, 1, 2], behaviour=np.zeros((2, 4, 1)))


def test_recording_rejects_2d_u():
    with pytest.raises(DataError, match=r"u has shape \(2, 3\)"):
        Recording(y=np.zeros((2, 3, 1)), ts=[0, 1, 2], u=np.zeros((2, 3)))


def test_recording_rejects_non_bool_mask():
    with pytest.raises(DataError, match="mask has dtype int64; expected bool"):
        Recording(y=np.zeros((2, 3, 1)), ts=[0, 1, 2], mask=np.ones((2, 3, 1), dtype=np.int64))


def test_recording_rejects_mask_shape():
    with pytest.raises(DataError, match=r"mask has shape \(2, 3, 2\); expected the shape of y, \(2, 3, 1\)"):
        Recording(y=np.zeros((2, 3, 1)), ts=[0, 1, 2], mask=np.ones((2, 3, 2), dtype=bool))


def test_recording_rejects_unserialisable_metadata():
    with pytest.raises(DataError, match="metadata is not JSON-serialisable"):
        make_recording(metadata={"array": np.zeros(2)})


def test_recording_rejects_short_trial_info():
    with pytest.raises(DataError, match=r"metadata\['trial_info'\]\['condition'\] has 2 entries; expected"):
        make_recording(metadata={"trial_info": {"condition": [0, 1]}})


def test_select_subsets_every_field():
    n_trials = 6
    mask = np.ones((n_trials, 5, 3), dtype=bool)
    mask[4, 0, 0] = False
    recording = make_recording(
        u=np.arange(n_trials * 5).reshape(n_trials, 5, 1),
        behaviour=np.zeros((n_trials, 5, 2)),
        mask=mask,
        metadata={"source": "test", "trial_info": {"id": list(range(10, 16))}},
    )

    subset = recording.select([4, 1])

    assert np.array_equal(subset.y, recording.y[[4, 1]])
    assert np.array_equal(subset.u, recording.u[[4, 1]])
    assert subset.behaviour.shape == (2, 5, 2)
    assert not subset.mask[0, 0, 0]
    assert subset.metadata["trial_info"]["id"] == [14, 11]
    assert subset.metadata["source"] == "test"
    assert recording.metadata["trial_info"]["id"] == list(range(10, 16))


def test_select_accepts_boolean_array():
    recording = make_recording()
    chosen = np.array([True, False, False, True, False, False])
    assert np.array_equal(recording.select(chosen).y, recording.y[[0, 3]])


@pytest.mark.parametrize("trials", [[], [6], [0.5], [[0, 1]]])
def test_select_rejects_bad_indices(trials):
    with pytest.raises(DataError, match="trials"):
        make_recording().select(trials)


def test_check_counts_accepts_counts():
    make_recording().check_counts()


@pytest.mark.parametrize(("value", "message"), [(-1.0, "1 negative values"), (0.5, "1 non-integer values")])
def test_check_counts_rejects_non_counts(value, message):
    y = np.zeros((2, 3, 1))
    y[1, 1, 0] = value
    with pytest.raises(DataError, match=message):
        Recording(y=y, ts=[0, 1, 2]).check_counts()


def test_check_counts_ignores_masked_entries():
    y = np.zeros((2, 3, 1))
    y[1, 1, 0] = 0.5
    mask = np.ones(y.shape, dtype=bool)
    mask[1, 1, 0] = False
    Recording(y=y, ts=[0, 1, 2], mask=mask).check_counts()


def test_check_counts_on_missing_field():
    with pytest.raises(DataError, match="u is None"):
        make_recording().check_counts("u")


def test_check_counts_rejects_unknown_field():
    with pytest.raises(ConfigError, match="field is 'ts'"):
        make_recording().check_counts("ts")


def test_split_is_disjoint_and_covers_all():
    recording = make_recording(n_trials=20)
    train, val, test = recording.split((0.6, 0.2, 0.2), seed=3)
    combined = np.concatenate([train, val, test])
    assert len(train) == 12
    assert len(val) == 4
    assert len(test) == 4
    assert np.array_equal(np.sort(combined), np.arange(20))


def test_split_is_reproducible_from_seed():
    recording = make_recording(n_trials=20)
    first = recording.split(seed=1)
    second = recording.split(seed=1)
    other = recording.split(seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_split_keeps_every_set_non_empty():
    train, val, test = make_recording(n_trials=3).split((0.9, 0.05, 0.05))
    assert (len(train), len(val), len(test)) == (1, 1, 1)


def test_split_rejects_too_few_trials():
    with pytest.raises(DataError, match="cannot split 2 trials"):
        make_recording(n_trials=2).split()


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.7, 0.3, 0.0), (0.5, 0.2, 0.2), "abc"])
def test_split_rejects_bad_fractions(fractions):
    with pytest.raises(ConfigError, match="fractions"):
        make_recording(n_trials=10).split(fractions)


def test_summary_and_repr():
    recording = make_recording(metadata={"source": "unit test", "units": "spikes per bin"})
    summary = recording.summary()
    assert "unit test" in summary
    assert "6 trials x 5 bins x 3 channels" in summary
    assert "spikes per bin" in summary
    assert repr(recording) == "Recording(trials=6, time=5, channels=3, inputs=0, dt=0.01 s)"


def test_metadata_is_json_serialisable():
    recording = make_recording(metadata={"channel_names": ["a", "b", "c"]})
    assert json.loads(json.dumps(recording.metadata))["channel_names"] == ["a", "b", "c"]
