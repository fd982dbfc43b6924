"""Coordinated dropout: the recognition model reads some held-in entries and only the others are scored."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, tiny_recording
from jax.scipy.special import gammaln

from neuroude.build import build_model
from neuroude.errors import ConfigError
from neuroude.evaluate import validation_metric
from neuroude.train import coordinated_dropout_masks, make_optimizer, make_train_step

HELDOUT = [0]
N_CHANNELS = 3
RATE = 0.4


def _config(rate, **model):
    return tiny_config(
        data={"heldout_neurons": HELDOUT}, training={"coordinated_dropout": rate}, model={"recognition_mask": True, **model}
    )


def _silent_readout(model):
    # A readout with zero weights predicts a rate that does not depend on the latent path,
    # so the log likelihood of each entry can be written down by hand.
    weight = model.observation.readout.weight
    return eqx.tree_at(lambda m: m.observation.readout.weight, model, jnp.zeros_like(weight))


@pytest.fixture(scope="module")
def model():
    built = build_model(_config(RATE), N_CHANNELS, 1, jax.random.PRNGKey(0), 0.5)
    return _silent_readout(built)


@pytest.fixture(scope="module")
def batch():
    recording = tiny_recording(n_trials=4, n_time=8, n_channels=N_CHANNELS)
    y = jnp.asarray(recording.y, jnp.float32)
    stimulus = jnp.asarray(recording.u, jnp.float32)
    mask = jnp.ones_like(y).at[1, 2:4, 1].set(0.0)
    return y, stimulus, mask


@pytest.fixture(scope="module")
def steps(model):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = make_optimizer(_config(RATE).training)
    with_dropout = make_train_step(static, optimizer, 0.0, 0.01, 1, coordinated_dropout=RATE)
    without = make_train_step(static, optimizer, 0.0, 0.01, 1)
    return params, optimizer.init(params), with_dropout, without


def test_hidden_fraction_matches_rate():
    mask = jnp.ones((64, 100, 10)).at[:, :, 5:].set(jnp.asarray(np.random.default_rng(0).random((64, 100, 5)) > 0.5))
    heldin = (1, 2, 3, 5, 6, 7, 8, 9)
    reads, scored = coordinated_dropout_masks(jax.random.PRNGKey(4), mask, 0.3, heldin)
    reads, scored, mask = np.asarray(reads), np.asarray(scored), np.asarray(mask)

    heldin = list(heldin)
    hidden = reads[:, :, heldin][mask[:, :, heldin] > 0] == 0
    # 32,000 observed held-in entries: the standard error of the fraction is below 0.003.
    assert hidden.mean() == pytest.approx(0.3, abs=0.01)
    # An observed held-in entry is either read, with weight 1 / 0.7, or scored, with weight 1 / 0.3;
    # an unobserved one is neither. Held-out channels 0 and 4 are scored wherever observed.
    np.testing.assert_allclose(np.unique(reads[:, :, heldin]), [0.0, 1 / 0.7], rtol=1e-6)
    np.testing.assert_allclose(0.7 * reads[:, :, heldin] + 0.3 * scored[:, :, heldin], mask[:, :, heldin], rtol=1e-6)
    np.testing.assert_array_equal(scored[:, :, [0, 4]], mask[:, :, [0, 4]])


def _hand_log_likelihood(model, y, scored):
    # Batch mean of the Poisson log likelihood summed over the scored entries, with the readout's constant rate.
    log_rate = model.observation.readout.bias
    terms = y * log_rate - jnp.exp(log_rate) - gammaln(y + 1.0)
    return float(jnp.mean(jnp.sum(terms * scored, axis=(1, 2))))


def test_step_scores_hidden_and_heldout_entries(model, batch, steps):
    y, stimulus, mask = batch
    params, opt_state, with_dropout, _ = steps
    key = jax.random.PRNGKey(7)
    terms = with_dropout(params, opt_state, y, stimulus, mask, key, jnp.float32(1.0))[2]

    reads, scored = coordinated_dropout_masks(key, mask, RATE, model.heldin_channels)
    expected = jnp.where(reads > 0, 0.0, mask / RATE).at[:, :, 0].set(mask[:, :, 0])
    np.testing.assert_allclose(np.asarray(scored), np.asarray(expected), rtol=1e-6)
    assert float(terms["log_likelihood"]) == pytest.approx(_hand_log_likelihood(model, y, scored), rel=1e-5)
    # Scoring every entry gives another value, so the check above can fail.
    assert abs(_hand_log_likelihood(model, y, mask) - _hand_log_likelihood(model, y, scored)) > 1.0


@eqx.filter_jit
def _loss(model, y, stimulus, scored, reads):
    return model.loss(y, stimulus, scored, 0.0, 0.01, jax.random.PRNGKey(3), 1.0, 1, input_mask=reads)


def _kl(model, y, stimulus, scored, reads):
    terms = _loss(model, y, stimulus, scored, reads)[1]
    return terms["kl_initial"] + terms["kl_path"]


def test_recognition_reads_kept_entries_only(model, batch):
    y, stimulus, mask = batch
    reads, scored = coordinated_dropout_masks(jax.random.PRNGKey(5), mask, RATE, model.heldin_channels)
    kl = float(_kl(model, y, stimulus, scored, reads))

    # Held-out channel 0 and the hidden held-in entries are not read; a kept held-in entry is.
    unread = jnp.where(reads > 0, 0.0, 1.0).at[:, :, 0].set(1.0)
    assert float(_kl(model, y + 5.0 * unread, stimulus, scored, reads)) == kl
    assert float(_kl(model, y + 5.0 * (1 - unread), stimulus, scored, reads)) != pytest.approx(kl, rel=1e-4)


def test_rate_zero_gives_plain_loss(model, batch, steps):
    y, stimulus, mask = batch
    params, opt_state, _, without = steps
    key = jax.random.PRNGKey(7)
    terms = without(params, opt_state, y, stimulus, mask, key, jnp.float32(1.0))[2]

    loss, plain = eqx.filter_jit(lambda m: m.loss(y, stimulus, mask, 0.0, 0.01, key, 1.0, 1))(model)
    assert float(terms["loss"]) == float(loss)
    assert float(terms["log_likelihood"]) == float(plain["log_likelihood"])
    assert float(terms["log_likelihood"]) == pytest.approx(_hand_log_likelihood(model, y, mask), rel=1e-5)


def test_streamed_loss_matches_plain_loss(batch):
    y, stimulus, mask = batch
    plain = build_model(_config(RATE), N_CHANNELS, 1, jax.random.PRNGKey(0), 0.5)
    streamed = build_model(tiny_config(
        data={"heldout_neurons": HELDOUT}, training={"coordinated_dropout": RATE}, solver={"checkpoint_bins": 3},
    ), N_CHANNELS, 1, jax.random.PRNGKey(0), 0.5)
    reads, scored = coordinated_dropout_masks(jax.random.PRNGKey(5), mask, RATE, plain.heldin_channels)

    expected = float(_loss(plain, y, stimulus, scored, reads)[0])
    assert float(_loss(streamed, y, stimulus, scored, reads)[0]) == pytest.approx(expected, rel=1e-5)


def test_evaluation_ignores_dropout():
    model = build_model(_config(RATE), N_CHANNELS, 1, jax.random.PRNGKey(0), 0.5)
    validation = tiny_recording(n_trials=3, n_channels=N_CHANNELS, seed=1)
    key = jax.random.PRNGKey(2)
    with_dropout = validation_metric(model, validation, _config(RATE), key)
    assert validation_metric(model, validation, _config(0.0), key) == with_dropout


def test_auto_turns_mask_input_on():
    auto = tiny_config(data={"heldout_neurons": HELDOUT}, training={"coordinated_dropout": RATE})
    model = build_model(auto, N_CHANNELS, 1, jax.random.PRNGKey(0), 0.5)
    assert model.recognition_reads_mask
    # Two held-in channels, their mask columns and the drive (encoder_size 2).
    assert model.recognition.cell.input_size == 2 * 2 + 2


@pytest.mark.parametrize(("rate", "model", "match"), [
    (0.3, {"recognition_mask": False}, "training.coordinated_dropout is 0.3, but model.recognition_mask is false"),
    (0.3, {"observation": "bernoulli"}, "training.coordinated_dropout is 0.3, but model.observation is 'bernoulli'"),
    (1.0, {}, "training.coordinated_dropout"),
    (-0.1, {}, "training.coordinated_dropout"),
])
def test_bad_settings_name_the_key(rate, model, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(training={"coordinated_dropout": rate}, model=model)
