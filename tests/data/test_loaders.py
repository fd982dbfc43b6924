import h5py
import numpy as np
import pytest
import scipy.io
from conftest import tiny_config
from nwb_files import write_nwb

from neuroude.build import load_data
from neuroude.data import Recording, detect_format, load_recording, save_npz
from neuroude.errors import ConfigError, DataFileError

Y = np.random.default_rng(0).poisson(1.0, size=(3, 5, 2)).astype(float)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    paths = {
        "npz": folder / "recording.npz",
        "nwb": folder / "session.nwb",
        "mat": folder / "session.mat",
        "hdf5": folder / "session.h5",
    }
    save_npz(Recording(y=Y, ts=np.arange(5) * 0.1), paths["npz"])
    write_nwb(paths["nwb"])
    scipy.io.savemat(paths["mat"], {"spikes": Y})
    with h5py.File(paths["hdf5"], "w") as file:
        file["spikes"] = Y
    return paths


def test_detect_format_by_extension(files):
    for expected, path in files.items():
        assert detect_format(path) == expected


def test_detect_format_by_content(files, tmp_path):
    for expected, path in files.items():
        renamed = tmp_path / f"{expected}.bin"
        renamed.write_bytes(path.read_bytes())
        assert detect_format(renamed) == expected


def test_nwb_named_h5_is_read_as_nwb(files, tmp_path):
    path = tmp_path / "session.h5"
    path.write_bytes(files["nwb"].read_bytes())
    assert detect_format(path) == "nwb"
    assert load_recording(path, bin_width=0.1).y.shape == (2, 10, 3)


def test_load_recording_each_format(files):
    assert np.array_equal(load_recording(files["npz"]).y, Y)
    assert np.array_equal(load_recording(files["mat"], y="spikes", dt=0.1).y, Y)
    assert np.array_equal(load_recording(files["hdf5"], y="spikes", dt=0.1).y, Y)
    assert load_recording(files["nwb"], bin_width=0.1).n_channels == 3


def test_option_of_another_format(files):
    with pytest.raises(ConfigError, match=r"nwb files take no option y; the options for nwb are: bin_width"):
        load_recording(files["nwb"], bin_width=0.1, y="spikes")


def test_unknown_format(files):
    with pytest.raises(ConfigError, match=r"format is 'csv'"):
        load_recording(files["npz"], format="csv")


def test_forced_format_must_match_content(files):
    with pytest.raises(DataFileError, match=r"named like a MAT file, but its content is a NPZ file"):
        load_recording(files["npz"], format="mat", y="y", dt=0.1)


def test_config_loads_nwb(files):
    config = tiny_config(data={
        "source": "nwb", "path": str(files["nwb"]), "bin_width": 0.1,
        "read": {"stimulus": ["stimulus"], "behaviour": ["pos"], "splits": ["train"]},
    })
    recording = load_data(config)

    assert recording.y.shape == (1, 10, 3)
    assert recording.u.shape == (1, 10, 1)
    assert recording.behaviour.shape == (1, 10, 2)


def test_config_aligns_nwb(files):
    config = tiny_config(data={
        "source": "nwb", "path": str(files["nwb"]), "bin_width": 0.1,
        "read": {"align_to": "start_time", "align_window": [0.2, 0.7]},
    })
    recording = load_data(config)

    assert recording.y.shape == (2, 5, 3)
    assert recording.metadata["aligned_to"] == {"column": "start_time", "window": [0.2, 0.7]}


def test_config_loads_hdf5(files):
    config = tiny_config(data={"source": "hdf5", "path": str(files["hdf5"]), "read": {"y": "spikes", "dt": 0.1}})
    assert np.array_equal(load_data(config).y, Y)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"source": "nwb"}, "data.path is missing; source 'nwb'"),
        ({"source": "mat", "path": "x.mat", "read": {"dt": 0.1}}, "data.read.y is missing"),
        ({"source": "hdf5", "path": "x.h5", "read": {"y": "y"}}, "expected exactly one"),
        ({"source": "nwb", "path": "x.nwb", "read": {"trial_length": "trim"}}, "trial_length"),
        ({"source": "nwb", "path": "x.nwb", "read": {"align_to": "move_onset_time"}}, "expected both or neither"),
    ],
)
def test_config_rejects_incomplete_read(data, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(data=data)
