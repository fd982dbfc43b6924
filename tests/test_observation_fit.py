"""Each new observation model, channel groups and a behaviour head train end to end without NaN and lower the loss."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from neuroude.build import build_model, load_data
from neuroude.data import Recording
from neuroude.dynamics.parameters import trainable_filter
from neuroude.errors import ConfigError, DataError
from neuroude.evaluate import predict_recording
from neuroude.train import make_train_step

from conftest import tiny_config

N_TRIALS, N_TIME, N_CHANNELS, BIN_WIDTH = 6, 16, 3, 0.1
N_STEPS = 15


def _recording(observation: str, behaviour: bool = False) -> Recording:
    rng = np.random.default_rng(0)
    shape = (N_TRIALS, N_TIME, N_CHANNELS)
    u = np.sin(np.linspace(0, 6, N_TIME))[None, :, None] * np.ones((N_TRIALS, 1, 1))
    # Every kind of data follows the stimulus, so a fit has something to learn beyond each channel's mean.
    if observation == "negative_binomial":
        mean = 2.0 * np.exp(u) * np.ones(shape)
        y = rng.negative_binomial(2, 2 / (2 + mean))
    elif observation == "bernoulli":
        y = rng.random(shape) < 1 / (1 + np.exp(1.0 - 3.0 * u))
    elif observation == "grouped":
        # Fluorescence in channels 0 and 1, spike counts in channel 2.
        y = 1.0 + u + 0.3 * rng.standard_normal(shape)
        y[:, :, 2] = rng.poisson(np.exp(u[:, :, 0]))
    else:
        y = 2.0 * u + 0.3 * rng.standard_normal(shape)
    behaviour_array = np.cumsum(u, axis=1) * 0.1 + 0.05 * rng.standard_normal(u.shape) if behaviour else None
    return Recording(y=y.astype(np.float32), ts=np.arange(N_TIME) * BIN_WIDTH, u=u, behaviour=behaviour_array)


def _config(observation: str, behaviour: bool = False):
    # A drift time constant of several bins keeps the Euler steps of the untrained network drift stable.
    model = {"observation": observation, "diffusion": "none", "drift_time_constant": 0.5}
    if observation == "grouped":
        model["channel_groups"] = [{"observation": "calcium", "channels": [0, 1]},
                                   {"observation": "poisson", "channels": [2]}]
    if behaviour:
        model["behaviour"] = {"weight": 2.0}
    return tiny_config(model=model)


def _build(config, recording):
    n_behaviour = 0 if recording.behaviour is None else recording.behaviour.shape[2]
    return build_model(
        config, recording.n_channels, recording.n_inputs, jax.random.PRNGKey(0), float(recording.y.mean()),
        bin_width=recording.dt, n_behaviour=n_behaviour,
    )


def _train(model, recording, behaviour: bool):
    """Run full-batch steps with one fixed key, so the objective is deterministic and must go down."""
    params, static = eqx.partition(model, trainable_filter(model))
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)
    step = make_train_step(static, optimizer, 0.0, BIN_WIDTH, 1)
    y = jnp.asarray(recording.y)
    batch = (y, jnp.asarray(recording.u), jnp.ones_like(y))
    behaviour_array = jnp.asarray(recording.behaviour) if behaviour else None
    losses, behaviour_terms = [], []
    for _ in range(N_STEPS):
        params, opt_state, terms, finite, _ = step(
            params, opt_state, *batch, jax.random.PRNGKey(1), jnp.float32(1.0), behaviour_array
        )
        assert bool(finite)
        losses.append(float(terms["loss"]))
        if behaviour:
            behaviour_terms.append(float(terms["behaviour_log_likelihood"]))
    return eqx.combine(params, static), np.asarray(losses), np.asarray(behaviour_terms)


CASES = [
    ("negative_binomial", False),
    ("bernoulli", False),
    ("grouped", True),
    ("bold", False),
]


@pytest.fixture(scope="module", params=CASES, ids=[f"{name}{'+behaviour' if b else ''}" for name, b in CASES])
def trained(request):
    observation, behaviour = request.param
    recording = _recording(observation, behaviour)
    model, losses, behaviour_terms = _train(_build(_config(observation, behaviour), recording), recording, behaviour)
    return observation, recording, model, losses, behaviour_terms


def test_fit_lowers_loss(trained):
    observation, _, _, losses, _ = trained
    assert np.all(np.isfinite(losses)), observation
    assert losses[-1] < losses[0] - 0.01 * abs(losses[0]), (observation, losses[0], losses[-1])


def test_fit_improves_behaviour(trained):
    _, _, model, _, behaviour_terms = trained
    # Only the grouped case carries a behaviour head; the others record no behaviour term to compare.
    assert (model.behaviour is not None) == (behaviour_terms.size > 0)
    if behaviour_terms.size:
        assert behaviour_terms[-1] > behaviour_terms[0]


def test_fitted_model_predicts(trained):
    observation, recording, model, _, _ = trained
    prediction = predict_recording(model, recording, jax.random.PRNGKey(2), n_samples=1)
    assert prediction["mean"].shape == recording.y.shape
    assert np.all(np.isfinite(prediction["mean"])), observation
    if observation == "bernoulli":
        assert np.all((prediction["mean"] > 0) & (prediction["mean"] < 1))


def test_behaviour_head_needs_behaviour_array():
    recording = _recording("gaussian", behaviour=True)
    model = _build(_config("gaussian", behaviour=True), recording)
    y = jnp.asarray(recording.y)
    with pytest.raises(ConfigError, match="no behaviour array was passed"):
        model.loss(y, jnp.asarray(recording.u), jnp.ones_like(y), 0.0, BIN_WIDTH, jax.random.PRNGKey(0))


def test_behaviour_head_needs_recorded_behaviour():
    recording = _recording("gaussian", behaviour=False)
    with pytest.raises(DataError, match="model.behaviour is set"):
        _build(_config("gaussian", behaviour=True), recording)


def test_calcium_needs_bin_width():
    recording = _recording("grouped")
    with pytest.raises(ConfigError, match="calcium observation model needs the recording's bin width"):
        build_model(_config("grouped"), recording.n_channels, recording.n_inputs, jax.random.PRNGKey(0))


def test_load_data_rejects_non_binary_for_bernoulli(tmp_path):
    path = tmp_path / "counts.npz"
    recording = _recording("negative_binomial")
    np.savez(path, y=recording.y, ts=recording.ts)
    config = tiny_config(model={"observation": "bernoulli"}, data={"source": "npz", "path": str(path)})
    with pytest.raises(DataError, match="neither 0 nor 1"):
        load_data(config)
