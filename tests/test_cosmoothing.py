"""Co-smoothing in the model: the recognition model reads held-in neurons only."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.baselines import SpikeSmoothing
from neuroude.build import build_model
from neuroude.config import parse_config
from neuroude.data import Recording, load_npz
from neuroude.errors import ConfigError
from neuroude.evaluate import evaluate
from neuroude.metrics import co_smoothing_bits_per_spike, heldout_channel_split

from conftest import SHARED_DATA, tiny_config, tiny_recording

HELDOUT = [0]


@eqx.filter_jit
def posterior_paths(model, y, stimulus, key):
    return model.posterior_paths(y, stimulus, 0.0, 0.01, key, 2)


@eqx.filter_jit
def loss(model, y, stimulus, mask, key):
    return model.loss(y, stimulus, mask, 0.0, 0.01, key)[0]


@pytest.fixture(scope="module")
def config():
    return tiny_config(data={"heldout_neurons": HELDOUT})


@pytest.fixture(scope="module")
def model(config):
    return build_model(config, 3, 1, jax.random.PRNGKey(0), 0.5)


def test_model_reads_heldin_channels(model):
    assert model.heldin_channels == (1, 2)
    # The GRU reads 2 held-in channels and the encoded stimulus, of size encoder_size 2.
    assert model.recognition.cell.input_size == 2 + 2
    assert model.observation.mean(jnp.zeros((5, 2))).shape == (5, 3)


def test_recognition_ignores_heldout_channel(model):
    recording = tiny_recording()
    y, stimulus = jnp.asarray(recording.y[0], jnp.float32), jnp.asarray(recording.u[0], jnp.float32)
    key = jax.random.PRNGKey(1)
    changed_heldout = y.at[:, 0].add(5.0)
    changed_heldin = y.at[:, 1].add(5.0)

    paths = posterior_paths(model, y, stimulus, key)
    np.testing.assert_array_equal(paths, posterior_paths(model, changed_heldout, stimulus, key))
    assert not np.allclose(paths, posterior_paths(model, changed_heldin, stimulus, key))


def test_likelihood_scores_heldout_channel(model):
    # Training still fits every neuron: the held-out channel's counts change the ELBO.
    recording = tiny_recording()
    y = jnp.asarray(recording.y[:2], jnp.float32)
    stimulus, mask = jnp.asarray(recording.u[:2], jnp.float32), jnp.ones_like(y)
    original = loss(model, y, stimulus, mask, jax.random.PRNGKey(2))
    changed = loss(model, y.at[:, :, 0].add(3.0), stimulus, mask, jax.random.PRNGKey(2))
    assert float(original) != float(changed)


def test_out_of_range_heldout_raises_before_build():
    config = tiny_config(data={"heldout_neurons": [0, 5]})
    with pytest.raises(ConfigError, match=r"data.heldout_neurons \[5\] are out of range; the recording has 3 channels"):
        build_model(config, 3, 1, jax.random.PRNGKey(0), 0.5)


@pytest.mark.parametrize(
    ("value", "message"),
    [(1.5, "expected a fraction in"), ([], "non-empty list"), ([1, 1], "distinct indices"), ([-2], "indices >= 0")],
)
def test_config_rejects_bad_heldout(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"data": {"heldout_neurons": value}})


def test_config_reads_fraction():
    assert parse_config({"data": {"heldout_neurons": 0.2}}).data.heldout_neurons == 0.2


def test_evaluate_reports_co_smoothing(config, model):
    base = tiny_recording(n_trials=12, n_time=16)
    behaviour = np.cumsum(np.random.default_rng(3).normal(size=(12, 16, 2)), axis=1)
    recording = Recording(y=base.y, ts=base.ts, u=base.u, behaviour=behaviour, metadata={"behaviour_names": ["x", "y"]})
    split = {"train": list(range(8)), "validation": [8, 9], "test": [10, 11]}

    metrics, _ = evaluate(model, recording, split, config, jax.random.PRNGKey(4))
    scores = metrics["test"]["co_smoothing"]
    assert scores["heldout_channels"] == HELDOUT
    for name in ("model", "spike_smoothing", "gpfa"):
        assert np.isfinite(scores[name]), name
    decoding = scores["behaviour_decoding_r_squared"]
    assert set(decoding) == {"model_latents", "smoothed_spikes", "gpfa_latents"}
    assert set(decoding["model_latents"]) == {"x", "y", "mean", "alpha"}


@pytest.mark.skipif(not (SHARED_DATA / "hippocampus-wmaze").is_dir(), reason="shared hippocampus recordings not present")
def test_smoothing_predicts_hippocampus_heldout():
    # Interleaved 10 s windows, so training and test trials cover the same run and rest periods.
    recording = load_npz(SHARED_DATA / "hippocampus-wmaze" / "recording.npz").select(range(80))
    train, test = recording.select(range(0, 80, 2)), recording.select(range(1, 80, 2))
    baseline = SpikeSmoothing(0.2, kernel_sd=0.05, ridge=10.0).fit(train)
    _, heldout = heldout_channel_split(0.2, recording.n_channels)
    assert co_smoothing_bits_per_spike(test.y, baseline.predict(test), heldout) > 0.1
