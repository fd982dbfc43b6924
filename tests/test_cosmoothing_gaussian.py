"""Co-smoothing with Gaussian observations: held-out channels scored by R^2 beside reduced-rank regression."""

import json

import numpy as np
import pytest
import yaml

from neuroude.cli import main
from neuroude.data import Recording, save_npz

from conftest import tiny_config


def linked_traces(n_trials=14, n_time=12, seed=0) -> Recording:
    """Channel 0 is the sum of channels 1 and 2 plus small noise, so it is predictable from them bin by bin."""
    rng = np.random.default_rng(seed)
    sources = rng.normal(size=(n_trials, n_time, 2))
    target = sources.sum(axis=-1, keepdims=True) + 0.05 * rng.normal(size=(n_trials, n_time, 1))
    return Recording(y=np.concatenate([target, sources], axis=-1), ts=np.arange(n_time) * 0.01)


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gaussian-cosmoothing")
    save_npz(linked_traces(), folder / "traces.npz")
    config = tiny_config(
        data={"source": "npz", "path": str(folder / "traces.npz"), "heldout_neurons": [0]},
        model={"observation": "gaussian", "encoder": "identity"},
        training={"steps": 2, "eval_every": 1},
    )
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert main(["fit", str(config_path), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


def test_evaluate_reports_reduced_rank_regression(fitted_run, capsys):
    assert main(["evaluate", str(fitted_run)]) == 0
    output = capsys.readouterr().out
    assert "R^2 from the held-in channels" in output
    assert "reduced_rank_regression (rank 1)" in output

    scores = json.loads((fitted_run / "metrics.json").read_text())["test"]["co_smoothing"]
    assert scores["heldout_channels"] == [0]
    assert np.isfinite(scores["model"])
    # The held-out channel is a rank-1 map of the held-in ones plus noise of variance 0.0025 against 2.
    assert scores["reduced_rank_regression"] > 0.99
    assert scores["reduced_rank_regression_settings"]["rank"] == 1
