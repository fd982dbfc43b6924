from pathlib import Path

import numpy as np
import pytest

from neuroude.data import Recording, load_npz, save_npz
from neuroude.errors import DataError, DataFileError

# The repository's parent folder contains shared/data in development and in CI.
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def make_recording():
    rng = np.random.default_rng(1)
    mask = np.ones((4, 6, 2), dtype=bool)
    mask[0, 0, 1] = False
    return Recording(
        y=rng.poisson(2.0, size=(4, 6, 2)),
        ts=np.linspace(0.0, 0.5, 6),
        u=rng.normal(size=(4, 6, 1)),
        behaviour=rng.normal(size=(4, 6, 3)),
        mask=mask,
        metadata={"source": "test", "channel_names": ["a", "b"], "trial_info": {"id": [3, 1, 4, 1]}},
    )


def test_save_load_round_trip(tmp_path):
    recording = make_recording()
    path = tmp_path / "recording.npz"

    save_npz(recording, path)
    loaded = load_npz(path)

    assert np.array_equal(loaded.y, recording.y)
    assert np.array_equal(loaded.ts, recording.ts)
    assert np.array_equal(loaded.u, recording.u)
    assert np.array_equal(loaded.behaviour, recording.behaviour)
    assert np.array_equal(loaded.mask, recording.mask)
    assert loaded.metadata == recording.metadata


def test_save_without_optional_arrays(tmp_path):
    recording = Recording(y=np.ones((2, 3, 1)), ts=[0.0, 0.1, 0.2])
    save_npz(recording, tmp_path / "plain.npz")
    loaded = load_npz(tmp_path / "plain.npz")
    assert loaded.u is None
    assert loaded.behaviour is None
    assert loaded.mask is None


def test_saved_file_has_canonical_keys(tmp_path):
    save_npz(make_recording(), tmp_path / "recording.npz")
    with np.load(tmp_path / "recording.npz", allow_pickle=False) as archive:
        assert set(archive.files) == {"y", "ts", "u", "behaviour", "mask", "metadata_json"}


def test_save_leaves_no_temporary_file(tmp_path):
    save_npz(make_recording(), tmp_path / "recording.npz")
    assert [path.name for path in tmp_path.iterdir()] == ["recording.npz"]


def test_save_replaces_existing_file(tmp_path):
    path = tmp_path / "recording.npz"
    path.write_text("old content")
    save_npz(make_recording(), path)
    assert load_npz(path).n_trials == 4


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        save_npz(make_recording(), tmp_path / "missing" / "recording.npz")


def test_save_rejects_non_recording(tmp_path):
    with pytest.raises(DataError, match="expected a neuroude Recording"):
        save_npz({"y": np.zeros((1, 1, 1))}, tmp_path / "recording.npz")


def test_load_missing_file_names_path(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(DataFileError, match="recording file not found: .*absent.npz"):
        load_npz(path)


def test_load_not_an_npz(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("this is not a zip archive")
    with pytest.raises(DataFileError, match=r"text.npz is not a valid NPZ \(zip\) archive: its first bytes are b.this is"):
        load_npz(path)


def test_load_truncated_file(tmp_path):
    path = tmp_path / "recording.npz"
    save_npz(make_recording(), path)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataFileError, match="NPZ archive"):
        load_npz(path)


def test_load_npy_file(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros((2, 2, 2)))
    with pytest.raises(DataFileError, match="single .npy array"):
        load_npz(path)


def test_load_rejects_pickled_objects(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, y=np.zeros((1, 2, 1)), ts=np.array([0.0, 1.0]), extra=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataFileError, match="pickled objects"):
        load_npz(path)


def test_load_missing_required_keys(tmp_path):
    path = tmp_path / "recording.npz"
    np.savez(path, counts=np.zeros((1, 2, 1)), ts=np.array([0.0, 1.0]))
    with pytest.raises(DataError, match=r"contains the keys \['counts', 'ts'\]; expected one of \['y', 'spikes', 'traces'\]"):
        load_npz(path)


def test_load_missing_times(tmp_path):
    path = tmp_path / "recording.npz"
    np.savez(path, y=np.zeros((1, 2, 1)))
    with pytest.raises(DataError, match="either 'ts' or 'dt'"):
        load_npz(path)


def test_load_ambiguous_data_keys(tmp_path):
    path = tmp_path / "recording.npz"
    np.savez(path, y=np.zeros((1, 2, 1)), spikes=np.zeros((1, 2, 1)), dt=0.1)
    with pytest.raises(DataError, match="expected only one"):
        load_npz(path)


def test_load_dt_instead_of_ts(tmp_path):
    path = tmp_path / "recording.npz"
    np.savez(path, spikes=np.ones((2, 4, 3), dtype=np.uint8), dt=np.float64(0.05))
    recording = load_npz(path)
    assert np.allclose(recording.ts, [0.0, 0.05, 0.1, 0.15])
    assert recording.y.dtype == np.float32
    assert recording.metadata["units"] == "spikes per bin"


@pytest.mark.parametrize("dt", [0.0, -1.0, np.nan])
def test_load_rejects_bad_dt(tmp_path, dt):
    path = tmp_path / "recording.npz"
    np.savez(path, y=np.ones((2, 4, 3)), dt=np.float64(dt))
    with pytest.raises(DataError, match="expected a positive number of seconds"):
        load_npz(path)


def test_load_rejects_dt_disagreeing_with_ts(tmp_path):
    path = tmp_path / "recording.npz"
    np.savez(path, y=np.ones((1, 3, 1)), ts=np.array([0.0, 0.1, 0.2]), dt=np.float64(0.5))
    with pytest.raises(DataError, match="expected them to agree"):
        load_npz(path)


def test_load_validates_arrays(tmp_path):
    path = tmp_path / "recording.npz"
    np.savez(path, y=np.ones((2, 3, 1)), ts=np.array([0.0, 0.2, 0.1]))
    with pytest.raises(DataError, match="ts is unsorted"):
        load_npz(path)


def test_load_maps_extra_arrays_into_metadata(tmp_path):
    path = tmp_path / "recording.npz"
    np.savez(
        path,
        traces=np.zeros((3, 2, 2), dtype=np.float32),
        dt=np.float64(0.1),
        README=np.array("about the data"),
        channel_names=np.array(["left", "right"]),
        condition=np.array([0, 1, 0]),
        channel_area=np.array([0, 1], dtype=np.uint8),
    )
    metadata = load_npz(path).metadata
    assert metadata["description"] == "about the data"
    assert metadata["channel_names"] == ["left", "right"]
    assert metadata["trial_info"]["condition"] == [0, 1, 0]
    assert metadata["arrays"]["channel_area"] == [0, 1]
    assert metadata["source"] == str(path)


def test_loaded_trial_info_follows_select(tmp_path):
    path = tmp_path / "recording.npz"
    np.savez(path, spikes=np.zeros((3, 2, 1)), dt=np.float64(0.1), condition=np.array([5, 6, 7]))
    assert load_npz(path).select([2, 0]).metadata["trial_info"]["condition"] == [7, 5]


def test_load_rejects_invalid_metadata_json(tmp_path):
    path = tmp_path / "recording.npz"
    np.savez(path, y=np.zeros((1, 2, 1)), dt=np.float64(0.1), metadata_json=np.array("{not json"))
    with pytest.raises(DataError, match="metadata_json .* is not valid JSON"):
        load_npz(path)


SHARED_FILES = {
    "hippocampus-wmaze": ((436, 200, 25), 0.05, True),
    "hippocampus-lineartrack": ((198, 200, 31), 0.05, True),
    "v1-v2-residuals": ((400, 10, 141), 0.1, False),
}


@pytest.mark.parametrize("name", sorted(SHARED_FILES))
def test_load_shared_recording(name):
    path = SHARED_DATA / name / "recording.npz"
    if not path.is_file():
        pytest.skip(f"shared data file {path} is absent; it lives beside the repository, not in it")
    shape, dt, has_behaviour = SHARED_FILES[name]

    recording = load_npz(path)

    assert recording.y.shape == shape
    assert recording.dt == pytest.approx(dt)
    assert (recording.behaviour is not None) == has_behaviour
    assert "Source repo" in recording.metadata["description"]


def test_shared_hippocampus_metadata():
    path = SHARED_DATA / "hippocampus-wmaze" / "recording.npz"
    if not path.is_file():
        pytest.skip(f"shared data file {path} is absent; it lives beside the repository, not in it")

    recording = load_npz(path)

    recording.check_counts()
    assert recording.metadata["behaviour_names"] == ["x_px", "y_px", "speed_px_per_s"]
    assert len(recording.metadata["trial_info"]["condition"]) == 436
    assert np.array(recording.metadata["arrays"]["unit_tetrode_index"]).shape == (25, 2)
