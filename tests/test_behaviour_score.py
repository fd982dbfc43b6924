"""Held-out R^2 of the jointly fitted behaviour head in metrics.json."""

import json

import jax
import numpy as np
import pytest

from neuroude.behaviour_score import _head_on_paths, _r_squared_per_variable
from neuroude.data import Recording, save_npz
from neuroude.evaluate import predict_recording
from neuroude.metrics import r_squared, score_window

from conftest import tiny_config

N_TRIALS, N_TIME = 10, 12


def test_r_squared_per_variable_known_values():
    rng = np.random.default_rng(0)
    behaviour = rng.normal(size=(3, 8, 3))
    behaviour[..., 2] = 1.5
    prediction = behaviour.copy()
    # Variable 1 is predicted by its own mean over the scored bins, which gives R^2 = 0 exactly.
    prediction[:, 2:, 1] = behaviour[:, 2:, 1].mean()
    observed = np.ones(behaviour.shape, bool)

    scores = _r_squared_per_variable(behaviour, prediction, observed, 2, ["x", "y", "flat"])

    assert scores["x"] == pytest.approx(1.0)
    assert scores["y"] == pytest.approx(0.0, abs=1e-12)
    assert scores["flat"] is None
    assert scores["mean"] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from neuroude.workflow import fit_run

    folder = tmp_path_factory.mktemp("behaviour")
    rng = np.random.default_rng(1)
    u = np.sin(np.linspace(0, 6, N_TIME))[None, :, None] + 0.1 * rng.normal(size=(N_TRIALS, N_TIME, 1))
    y = 2.0 * u + 0.3 * rng.normal(size=(N_TRIALS, N_TIME, 3))
    behaviour = np.concatenate([np.cumsum(u, axis=1) * 0.1, -u], axis=2) + 0.05 * rng.normal(size=(N_TRIALS, N_TIME, 2))
    recording = Recording(
        y=y, ts=np.arange(N_TIME) * 0.1, u=u, behaviour=behaviour,
        metadata={"behaviour_names": ["position", "velocity"]},
    )
    save_npz(recording, folder / "behaviour.npz")
    config = tiny_config(
        data={"source": "npz", "path": str(folder / "behaviour.npz")},
        model={"observation": "gaussian", "behaviour": {"weight": 1.0}, "diffusion": "none",
               "drift_time_constant": 0.5},
        training={"steps": 2, "batch_size": 4},
    )
    run = fit_run(config, folder / "run", quiet=True)
    return run, json.loads((folder / "run" / "metrics.json").read_text())


def test_metrics_have_behaviour_r_squared(fitted):
    _, metrics = fitted
    scores = metrics["behaviour_r_squared"]

    assert set(scores) == {"posterior", "prediction"}
    for path_kind in ("posterior", "prediction"):
        assert set(scores[path_kind]) == {"position", "velocity", "mean"}
        assert np.isfinite(scores[path_kind]["mean"])
        assert scores[path_kind]["mean"] == pytest.approx(
            (scores[path_kind]["position"] + scores[path_kind]["velocity"]) / 2
        )


def test_prediction_score_matches_head_on_prior_paths(fitted):
    # evaluate() samples the test trials with the second of two keys split from PRNGKey(seed + 1).
    run, metrics = fitted
    test = run.recording.select(run.split["test"])
    key = jax.random.split(jax.random.PRNGKey(run.config.seed + 1))[1]
    paths = predict_recording(run.model, test, key, run.config.evaluation.n_samples)["paths"]
    expected = np.asarray(_head_on_paths(run.model, paths))

    skip = run.config.evaluation.skip_bins
    velocity = r_squared(score_window(test.behaviour[..., 1:], skip), score_window(expected[..., 1:], skip))
    assert metrics["behaviour_r_squared"]["prediction"]["velocity"] == pytest.approx(velocity, rel=1e-4)
