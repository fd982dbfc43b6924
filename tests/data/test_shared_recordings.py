"""The real population recordings in the repository's ../shared/data, and the configs that fit them."""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SHARED_DATA

from neuroude.build import build_model, load_data
from neuroude.config import load_config
from neuroude.data import load_recording
from neuroude.dynamics.parameters import trainable_filter
from neuroude.observation import behaviour_statistics
from neuroude.train import make_optimizer, make_train_step

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"the real recordings are not at {SHARED_DATA}")

HIPPOCAMPUS = {
    "hippocampus-wmaze": (436, 25),
    "hippocampus-lineartrack": (198, 31),
}
CONFIG_NAMES = ["hippocampus-wmaze", "hippocampus-lineartrack", "v1-v2-residuals"]

# Small networks and few steps, so that each fit only checks that the config runs end to end.
SMALL_MODEL = {
    "latent_size": 2, "drift_width": 8, "drift_depth": 1, "recognition_hidden": 8, "context_size": 4,
    "correction_width": 8,
}
BATCH = 4


@pytest.mark.parametrize("name", sorted(HIPPOCAMPUS))
def test_hippocampus_recording(name):
    n_trials, n_units = HIPPOCAMPUS[name]
    recording = load_recording(SHARED_DATA / name / "recording.npz")

    assert recording.y.shape == (n_trials, 200, n_units)
    assert recording.y.dtype == np.float32
    recording.check_counts()
    assert recording.dt == pytest.approx(0.05)
    assert recording.behaviour.shape == (n_trials, 200, 3)
    assert len(recording.metadata["behaviour_names"]) == 3
    assert np.all(recording.behaviour[..., 2] >= 0), "speed is negative"
    assert set(recording.metadata["trial_info"]["condition"]) <= {0, 1}


def test_v1_v2_residuals_recording():
    recording = load_recording(SHARED_DATA / "v1-v2-residuals" / "recording.npz")

    assert recording.y.shape == (400, 10, 141)
    assert recording.y.dtype == np.float32
    assert recording.dt == pytest.approx(0.1)
    assert recording.behaviour is None
    # Residuals around each bin's trial average: the mean over trials is 0 in every bin and channel,
    # and values are multiples of 1/400.
    assert np.abs(recording.y.mean(axis=0)).max() < 1e-4
    assert np.allclose(recording.y * 400, np.round(recording.y * 400), atol=1e-3)
    area = np.asarray(recording.metadata["arrays"]["channel_area"])
    assert (area == 0).sum() == 110
    assert (area == 1).sum() == 31


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_trains_three_steps(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    assert Path(config.data.path).resolve() == (SHARED_DATA / name / "recording.npz").resolve()
    for key, value in SMALL_MODEL.items():
        setattr(config.model, key, value)

    recording = load_data(config)
    n_behaviour = 0 if recording.behaviour is None else recording.behaviour.shape[2]
    # Statistics over every trial: this check has no split, and `neuroude fit` uses the training trials.
    statistics = None if n_behaviour == 0 else behaviour_statistics(recording.behaviour, recording.behaviour_observed)
    model = build_model(
        config, recording.n_channels, recording.n_inputs, jax.random.PRNGKey(0), float(recording.y.mean()),
        n_behaviour=n_behaviour, behaviour_statistics=statistics,
    )
    assert (config.model.behaviour is not None) == (n_behaviour > 0)
    params, static = eqx.partition(model, trainable_filter(model))
    optimizer = make_optimizer(config.training)
    opt_state = optimizer.init(params)
    train_step = make_train_step(static, optimizer, float(recording.ts[0]), recording.dt, 1, skip_nonfinite=False)

    y = jnp.asarray(recording.y[:BATCH])
    stimulus = jnp.zeros(y.shape[:2] + (0,), y.dtype)
    mask = jnp.ones_like(y)
    behaviour = None
    if n_behaviour:
        behaviour = (jnp.asarray(recording.behaviour[:BATCH]), jnp.asarray(recording.behaviour_observed[:BATCH], y.dtype))
    start = params
    for step in range(3):
        params, opt_state, terms, finite, _ = train_step(
            params, opt_state, y, stimulus, mask, jax.random.PRNGKey(step), jnp.float32(1.0), behaviour
        )
        assert bool(finite), f"step {step}: loss {float(terms['loss'])}"

    moved = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, b: jnp.any(a != b), start, params))
    assert any(bool(m) for m in moved)
