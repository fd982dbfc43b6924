"""The recognition model reads the mask: values behind a 0 in the mask do not change what it infers."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from neuroude.build import build_model
from neuroude.errors import DataFileError
from neuroude.runs import save_checkpoint
from neuroude.train import _load_model_checkpoint

N_TRIALS, N_BINS, N_CHANNELS = 2, 13, 3


def _build(reads_mask, checkpoint_bins=0, has_masked_entries=True):
    config = tiny_config(model={"recognition_mask": reads_mask}, solver={"checkpoint_bins": checkpoint_bins})
    return build_model(config, N_CHANNELS, 1, jax.random.PRNGKey(0), 0.5, has_masked_entries=has_masked_entries)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.poisson(0.5, size=(N_TRIALS, N_BINS, N_CHANNELS)).astype(np.float32)
    mask = rng.random(y.shape) > 0.4
    mask[:, 0] = True
    stimulus = rng.normal(size=(N_TRIALS, N_BINS, 1)).astype(np.float32)
    zeros = np.where(mask, y, 0.0).astype(np.float32)
    garbage = np.where(mask, y, rng.uniform(5.0, 50.0, y.shape)).astype(np.float32)
    return jnp.asarray(zeros), jnp.asarray(garbage), jnp.asarray(mask, jnp.float32), jnp.asarray(stimulus)


@eqx.filter_jit
def _recognition_outputs(model, y, stimulus, mask):
    def one_trial(yi, si, mi):
        readable = model.recognition_input(yi, mi)
        drive = model.encode(si)
        mean0, std0 = model.recognition.initial_state(readable, drive)
        return mean0, std0, model.recognition.context(readable, drive)

    return jax.vmap(one_trial)(y, stimulus, mask)


@eqx.filter_jit
def _loss(model, y, stimulus, mask):
    return model.loss(y, stimulus, mask, 0.0, 0.01, jax.random.PRNGKey(3), 1.0, 2)[0]


def test_masked_values_do_not_matter(data):
    zeros, garbage, mask, stimulus = data
    model = _build(True)
    for left, right in zip(_recognition_outputs(model, zeros, stimulus, mask), _recognition_outputs(model, garbage, stimulus, mask)):
        np.testing.assert_array_equal(np.asarray(left), np.asarray(right))


def test_plain_input_reads_masked_values(data):
    # Without the mask input the garbage reaches the GRU, so the check above can fail.
    zeros, garbage, mask, stimulus = data
    model = _build(False)
    mean_zeros = _recognition_outputs(model, zeros, stimulus, mask)[0]
    mean_garbage = _recognition_outputs(model, garbage, stimulus, mask)[0]
    assert np.abs(np.asarray(mean_zeros) - np.asarray(mean_garbage)).max() > 1e-4


def test_streamed_loss_ignores_masked_values(data):
    zeros, garbage, mask, stimulus = data
    plain, streamed = _build(True), _build(True, checkpoint_bins=5)

    loss_plain = float(_loss(plain, garbage, stimulus, mask))
    assert float(_loss(plain, zeros, stimulus, mask)) == loss_plain
    assert float(_loss(streamed, garbage, stimulus, mask)) == pytest.approx(loss_plain, rel=1e-5)
    assert float(_loss(streamed, zeros, stimulus, mask)) == pytest.approx(loss_plain, rel=1e-5)


def test_auto_follows_recording_mask():
    # The GRU reads drive (encoder_size 2) and one column per channel, two with the mask input.
    assert _build("auto", has_masked_entries=True).recognition.cell.input_size == 2 * N_CHANNELS + 2
    assert _build("auto", has_masked_entries=False).recognition.cell.input_size == N_CHANNELS + 2
    assert _build(False, has_masked_entries=True).recognition.cell.input_size == N_CHANNELS + 2
    assert _build(True, has_masked_entries=False).recognition_reads_mask


def test_missing_mask_counts_as_observed(data):
    zeros, _, _, _ = data
    model = _build(True)
    readable = model.recognition_input(zeros[0])
    np.testing.assert_array_equal(np.asarray(readable[:, N_CHANNELS:]), 1.0)
    np.testing.assert_array_equal(np.asarray(readable[:, :N_CHANNELS]), np.asarray(zeros[0]))


def test_old_checkpoint_names_mask_setting(tmp_path):
    old, new = _build(False), _build(True)
    path = tmp_path / "last.eqx"
    save_checkpoint(path, {"step": 0}, eqx.filter(old, eqx.is_inexact_array))
    with pytest.raises(DataFileError, match="model.recognition_mask: false"):
        _load_model_checkpoint(path, eqx.filter(new, eqx.is_inexact_array), new)
