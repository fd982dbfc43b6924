import h5py
import numpy as np
import pytest
import scipy.io

from neuroude.data.arrays import load_hdf5, load_mat
from neuroude.errors import ConfigError, DataError, DataFileError

RNG = np.random.default_rng(0)
# (trials, time, channels) = (4, 6, 3), the shapes every test expects back.
Y = RNG.poisson(1.0, size=(4, 6, 3)).astype(np.float64)
U = RNG.normal(size=(4, 6, 2))
MASK = np.ones((4, 6, 3), dtype=bool)
MASK[0, -1] = False


def write_mat_v73(path, variables):
    """Write a MATLAB v7.3 file: a 512-byte MATLAB header, then HDF5 with axes reversed."""
    with h5py.File(path, "w", userblock_size=512) as file:
        for name, value in variables.items():
            file[name] = np.asarray(value).T
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116)
    with open(path, "r+b") as file:
        file.write(header)


def test_mat_v5_round_trip(tmp_path):
    path = tmp_path / "session.mat"
    scipy.io.savemat(path, {"spikes": Y, "stim": U, "observed": MASK.astype(np.uint8), "dt": 0.02})

    recording = load_mat(path, y="spikes", dt="dt", u="stim", mask="observed")

    assert np.array_equal(recording.y, Y)
    assert np.allclose(recording.u, U)
    assert np.array_equal(recording.mask, MASK)
    assert np.allclose(recording.ts, np.arange(6) * 0.02)
    assert recording.metadata["format"] == "mat"


def test_mat_v5_struct_field_and_layout(tmp_path):
    path = tmp_path / "session.mat"
    # Stored as (channels, time, trials), a common MATLAB layout, inside a struct.
    scipy.io.savemat(path, {"data": {"spikes": np.transpose(Y, (2, 1, 0)), "t": np.arange(6) * 0.01}})

    recording = load_mat(path, y="data/spikes", ts="data/t", layout="channels,time,trials")

    assert np.array_equal(recording.y, Y)
    assert np.allclose(recording.ts, np.arange(6) * 0.01)


def test_mat_v73_matches_matlab_shapes(tmp_path):
    path = tmp_path / "session73.mat"
    write_mat_v73(path, {"spikes": Y, "behaviour": U})

    recording = load_mat(path, y="spikes", behaviour="behaviour", dt=0.05)

    assert np.array_equal(recording.y, Y)
    assert np.allclose(recording.behaviour, U)


def test_hdf5_groups_and_single_trial(tmp_path):
    path = tmp_path / "session.h5"
    with h5py.File(path, "w") as file:
        file["neural/counts"] = Y[0].T  # (channels, time), one trial
        file["neural/ts"] = np.arange(6) * 0.1

    recording = load_hdf5(path, y="neural/counts", ts="neural/ts", layout="trials,channels,time")

    assert recording.y.shape == (1, 6, 3)
    assert np.array_equal(recording.y[0], Y[0])


def test_missing_mat_variable_lists_present(tmp_path):
    path = tmp_path / "session.mat"
    scipy.io.savemat(path, {"spikes": Y})
    with pytest.raises(DataError, match=r"no variable 'counts' in .*session\.mat; the file contains: spikes"):
        load_mat(path, y="counts", dt=0.1)


def test_missing_struct_field(tmp_path):
    path = tmp_path / "session.mat"
    scipy.io.savemat(path, {"data": {"spikes": Y}})
    with pytest.raises(DataError, match=r"'data' in .* has no field 'rates'; its fields are \['spikes'\]"):
        load_mat(path, y="data/rates", dt=0.1)


def test_missing_hdf5_dataset_lists_present(tmp_path):
    path = tmp_path / "session.h5"
    with h5py.File(path, "w") as file:
        file["neural/counts"] = Y
    with pytest.raises(DataError, match=r"dataset 'neural' in .* is a group; .*neural/counts"):
        load_hdf5(path, y="neural", dt=0.1)
    with pytest.raises(DataError, match=r"dataset 'spikes' .* is missing"):
        load_hdf5(path, y="spikes", dt=0.1)


def test_shape_mismatch_names_file(tmp_path):
    path = tmp_path / "session.h5"
    with h5py.File(path, "w") as file:
        file["y"] = Y
        file["u"] = U[:3]
    with pytest.raises(DataError, match=r"session\.h5: different trial counts in y and u"):
        load_hdf5(path, y="y", u="u", dt=0.1)


def test_non_binary_mask(tmp_path):
    path = tmp_path / "session.h5"
    with h5py.File(path, "w") as file:
        file["y"] = Y
        file["mask"] = np.full(Y.shape, 2)
    with pytest.raises(DataError, match=r"mask 'mask' .* values other than 0 and 1"):
        load_hdf5(path, y="y", mask="mask", dt=0.1)


def test_text_variable_rejected(tmp_path):
    path = tmp_path / "session.mat"
    scipy.io.savemat(path, {"spikes": Y, "label": "monkey J"})
    with pytest.raises(DataError, match=r"'label' .* has dtype <U8; expected a numeric array"):
        load_mat(path, y="label", dt=0.1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"y": "y"}, "expected exactly one of them"),
        ({"y": "y", "ts": "ts", "dt": 0.1}, "expected exactly one of them"),
        ({"y": "y", "dt": -1.0}, "dt is -1.0"),
        ({"y": "y", "dt": 0.1, "layout": "time,trials"}, "layout is 'time,trials'"),
    ],
)
def test_invalid_options(tmp_path, options, message):
    path = tmp_path / "session.h5"
    with h5py.File(path, "w") as file:
        file["y"] = Y
        file["ts"] = np.arange(6) * 0.1
    with pytest.raises(ConfigError, match=message):
        load_hdf5(path, **options)


def test_mat_extension_with_hdf5_content(tmp_path):
    path = tmp_path / "session.mat"
    with h5py.File(path, "w") as file:
        file["y"] = Y
    with pytest.raises(DataFileError, match=r"named like a MAT file, but its content is a HDF5 file"):
        load_mat(path, y="y", dt=0.1)


def test_hdf5_extension_with_mat_content(tmp_path):
    path = tmp_path / "session.h5"
    scipy.io.savemat(path.with_suffix(".mat"), {"y": Y})
    path.write_bytes(path.with_suffix(".mat").read_bytes())
    with pytest.raises(DataFileError, match=r"named like a HDF5 file, but its content is a MAT file"):
        load_hdf5(path, y="y", dt=0.1)


def test_mat_two_dimensional_lacks_last_axis(tmp_path):
    path = tmp_path / "session.mat"
    # MATLAB stores a (4 trials, 6 bins, 1 channel) array as 4 x 6.
    scipy.io.savemat(path, {"rate": Y[:, :, 0], "single": Y[0].T})

    one_channel = load_mat(path, y="rate", dt=0.1)
    one_trial = load_mat(path, y="single", dt=0.1, layout="channels,time,trials")

    assert one_channel.y.shape == (4, 6, 1)
    assert np.array_equal(one_channel.y[:, :, 0], Y[:, :, 0])
    assert one_trial.y.shape == (1, 6, 3)
    assert np.array_equal(one_trial.y[0], Y[0])


def test_one_dimensional_rejected(tmp_path):
    path = tmp_path / "session.h5"
    with h5py.File(path, "w") as file:
        file["y"] = np.zeros(5)
    with pytest.raises(DataError, match=r"'y' in .* has shape \(5,\); expected 3 axes \(trials, time, channels\), or 2 without the trials axis"):
        load_hdf5(path, y="y", dt=0.1)
