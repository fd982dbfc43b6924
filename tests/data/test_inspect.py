import h5py
import numpy as np
import pytest
import scipy.io
from nwb_files import write_nwb

from neuroude.cli import main
from neuroude.data import Recording, save_npz


def inspect(path, capsys):
    code = main(["data", "inspect", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_inspect_nwb(tmp_path, capsys):
    path = tmp_path / "session.nwb"
    write_nwb(path)
    code, out, _ = inspect(path, capsys)

    assert code == 0
    assert "NWB file" in out
    assert "units: 3" in out
    assert "held-out units (NLB 'heldout' column): 1" in out
    assert "trials: 2" in out
    assert "splits: test 1, train 1" in out
    assert "Position/pos: shape (202, 2), dtype float64" in out
    assert "root/stimulus: shape (301,), dtype float64, 100 Hz" in out
    assert "loadable with bin_width=0.05: yes, Recording(trials=2, time=20, channels=3" in out


def test_inspect_nwb_without_units(tmp_path, capsys):
    path = tmp_path / "nounits.nwb"
    write_nwb(path, units=False)
    code, out, _ = inspect(path, capsys)

    assert code == 0
    assert "units: none" in out
    assert "loadable: no, the file has no Units table" in out


# A 2 x 2 x 2 MATLAB cell array of strings.
LABELS = np.full((2, 2, 2), "a", dtype=object)


def test_inspect_mat_and_hdf5(tmp_path, capsys):
    mat = tmp_path / "session.mat"
    scipy.io.savemat(mat, {"spikes": np.zeros((3, 4, 5), dtype=np.uint8), "dt": 0.1, "labels": LABELS})
    hdf5 = tmp_path / "session.h5"
    with h5py.File(hdf5, "w") as file:
        file["neural/y"] = np.zeros((2, 3, 4), dtype=np.float32)

    _, mat_out, _ = inspect(mat, capsys)
    _, hdf5_out, _ = inspect(hdf5, capsys)

    assert "spikes: shape (3, 4, 5), class uint8" in mat_out
    assert "labels: shape (2, 2, 2), class cell" in mat_out
    assert "data.read.y to one of ['spikes']" in mat_out
    assert "neural/y: shape (2, 3, 4), dtype float32" in hdf5_out
    assert "data.read.y to one of ['neural/y']" in hdf5_out


def test_inspect_npz(tmp_path, capsys):
    path = tmp_path / "recording.npz"
    save_npz(Recording(y=np.ones((2, 3, 1)), ts=[0.0, 0.1, 0.2]), path)
    code, out, _ = inspect(path, capsys)

    assert code == 0
    assert "y: shape (2, 3, 1), dtype float32" in out
    assert "loadable with no options: yes" in out


@pytest.mark.parametrize("content", [b"plain text, not a recording", None])
def test_inspect_bad_file(tmp_path, capsys, content):
    path = tmp_path / "notes.txt"
    if content is not None:
        path.write_bytes(content)
    code, _, err = inspect(path, capsys)

    assert code == 2
    assert "neuroude data: error:" in err
    assert "notes.txt" in err


def test_inspect_npz_names_y_and_behaviour(tmp_path, capsys):
    path = tmp_path / "track.npz"
    np.savez(path, spikes=np.ones((2, 3, 4)), dt=0.05, behaviour=np.zeros((2, 3, 3)),
             behaviour_names=np.array(["x_px", "y_px", "speed_px_per_s"]))
    code, out, _ = inspect(path, capsys)

    assert code == 0
    assert "y (neural data) from array 'spikes': 2 trials x 3 bins x 4 channels" in out
    assert "behaviour from array 'behaviour': 3 variables (x_px, y_px, speed_px_per_s)" in out


def test_inspect_npz_without_behaviour(tmp_path, capsys):
    path = tmp_path / "recording.npz"
    save_npz(Recording(y=np.ones((2, 3, 1)), ts=[0.0, 0.1, 0.2]), path)
    _, out, _ = inspect(path, capsys)

    assert "y (neural data) from array 'y'" in out
    assert "behaviour: none" in out
