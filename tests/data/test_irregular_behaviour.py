"""Behaviour sampled at irregular times: its own mask on the grid, respected by the loss and the scores."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from neuroude.behaviour_score import _observed_bins
from neuroude.build import build_model
from neuroude.data import Recording, load_npz, save_npz
from neuroude.decoding import BehaviourPrediction, calibration_scores, fit_masked_ridge
from neuroude.errors import DataError
from neuroude.metrics import fit_ridge

DT = 0.01
NEURAL_TIMES = np.array([[0.0, 0.02, 0.05, 0.07], [0.01, 0.03, 0.04, 0.06]])
BEHAVIOUR_TIMES = np.array([[0.01, 0.04, 0.08], [0.0, 0.05, 0.09]])


def _recording(behaviour_values=None, behaviour_sample_mask=None):
    values = np.arange(16, dtype=float).reshape(2, 4, 2)
    if behaviour_values is None:
        behaviour_values = np.array([[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]]])
    return Recording.from_irregular(
        NEURAL_TIMES, values, bin_width=DT, behaviour_times=BEHAVIOUR_TIMES, behaviour=behaviour_values,
        behaviour_sample_mask=behaviour_sample_mask,
    )


def test_behaviour_goes_onto_own_grid_points():
    recording = _recording()

    # The behaviour's last sample, 0.09 s, is later than the neural one, so the grid runs to 0.09 s.
    assert recording.y.shape == (2, 10, 2)
    assert recording.behaviour.shape == (2, 10, 1)
    np.testing.assert_array_equal(np.flatnonzero(recording.behaviour_mask[0, :, 0]), [1, 4, 8])
    np.testing.assert_array_equal(np.flatnonzero(recording.behaviour_mask[1, :, 0]), [0, 5, 9])
    np.testing.assert_array_equal(recording.behaviour[0, [1, 4, 8], 0], [1.0, 2.0, 3.0])
    assert np.all(recording.behaviour[~recording.behaviour_mask] == 0.0)
    np.testing.assert_array_equal(np.flatnonzero(recording.mask[0, :, 0]), [0, 2, 5, 7])
    np.testing.assert_array_equal(recording.select([1]).behaviour_mask, recording.behaviour_mask[1:])


def test_behaviour_sample_mask_hides_values():
    values = np.array([[[1.0], [np.nan], [3.0]], [[4.0], [5.0], [6.0]]])
    sample_mask = np.ones(values.shape, bool)
    sample_mask[0, 1] = False
    recording = _recording(values, sample_mask)
    np.testing.assert_array_equal(np.flatnonzero(recording.behaviour_mask[0, :, 0]), [1, 8])
    with pytest.raises(DataError, match=r"behaviour: values of trial 0 are NaN"):
        _recording(values)


def test_behaviour_mask_errors():
    with pytest.raises(DataError, match="behaviour_times and behaviour must be given together"):
        Recording.from_irregular(NEURAL_TIMES, np.ones((2, 4, 1)), bin_width=DT, behaviour=np.ones((2, 3, 1)))
    with pytest.raises(DataError, match="behaviour_mask is given but behaviour is None"):
        Recording(y=np.ones((1, 3, 1)), ts=np.arange(3) * DT, behaviour_mask=np.ones((1, 3, 1), bool))
    with pytest.raises(DataError, match=r"behaviour_mask has shape \(1, 3, 2\); expected the shape of behaviour"):
        Recording(y=np.ones((1, 3, 1)), ts=np.arange(3) * DT, behaviour=np.ones((1, 3, 1)),
                  behaviour_mask=np.ones((1, 3, 2), bool))


def test_npz_behaviour_times_round_trip(tmp_path):
    path = tmp_path / "irregular.npz"
    np.savez(path, y=np.ones((2, 4, 2)), sample_times=NEURAL_TIMES, dt=DT, behaviour=np.ones((2, 3, 1)),
             behaviour_times=BEHAVIOUR_TIMES)
    recording = load_npz(path)
    assert recording.behaviour_mask.sum() == 6

    save_npz(recording, tmp_path / "gridded.npz")
    np.testing.assert_array_equal(load_npz(tmp_path / "gridded.npz").behaviour_mask, recording.behaviour_mask)

    np.savez(path, y=np.ones((2, 4, 2)), sample_times=NEURAL_TIMES, dt=DT, behaviour=np.ones((2, 3, 1)))
    with pytest.raises(DataError, match="expected both 'behaviour' and 'behaviour_times'"):
        load_npz(path)


def test_behaviour_score_uses_behaviour_mask():
    recording = _recording()
    np.testing.assert_array_equal(_observed_bins(recording), recording.behaviour_mask)


@eqx.filter_jit
def _behaviour_term(model, recording_arrays):
    y, mask, behaviour, behaviour_mask = recording_arrays
    stimulus = jnp.zeros(y.shape[:2] + (0,))
    terms = model.loss(y, stimulus, mask, 0.0, DT, jax.random.PRNGKey(3), 1.0, 2, behaviour,
                       behaviour_mask=behaviour_mask)[1]
    return terms["behaviour_log_likelihood"]


@pytest.mark.parametrize("checkpoint_bins", [0, 4])
def test_loss_ignores_unobserved_behaviour(checkpoint_bins):
    recording = _recording()
    config = tiny_config(model={"observation": "gaussian", "behaviour": {}}, solver={"checkpoint_bins": checkpoint_bins})
    model = build_model(config, 2, 0, jax.random.PRNGKey(0), 0.0, n_behaviour=1, has_masked_entries=True)
    observed = recording.behaviour_mask

    def term(behaviour):
        arrays = (recording.y, recording.observed, behaviour, observed)
        return float(_behaviour_term(model, tuple(jnp.asarray(array, jnp.float32) for array in arrays)))

    garbage = np.where(observed, recording.behaviour, 1e3)
    assert term(garbage) == term(recording.behaviour)
    changed = recording.behaviour.copy()
    changed[0, 1, 0] += 1.0
    assert term(changed) != term(recording.behaviour)


def test_masked_ridge_ignores_unobserved_entries():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(4, 10, 3))
    targets = features @ np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]]) + 0.1 * rng.normal(size=(4, 10, 2))
    observed = rng.random(targets.shape) > 0.3
    garbage = np.where(observed, targets, 1e3)

    weights, bias = fit_masked_ridge(features, garbage, observed, alpha=0.1)
    for channel in range(2):
        rows = observed[..., channel]
        expected_weights, expected_bias = fit_ridge(features[rows], targets[rows][:, [channel]], 0.1)
        np.testing.assert_allclose(weights[:, channel], expected_weights[:, 0], rtol=1e-10)
        np.testing.assert_allclose(bias[channel], expected_bias[0], rtol=1e-10)
    unmasked_weights, _ = fit_ridge(features, garbage, 0.1)
    assert np.abs(unmasked_weights - weights).max() > 0.1


def test_calibration_skips_unobserved_entries():
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(3, 8, 6, 2))
    prediction = BehaviourPrediction(samples, np.array([0.5, 0.5]))
    behaviour = samples.mean(axis=1) + 0.5 * rng.normal(size=(3, 6, 2))
    observed = np.ones(behaviour.shape, bool)
    observed[:, ::2] = False

    scores = calibration_scores(prediction, np.where(observed, behaviour, 1e3), ["a", "b"], observed)
    subset = BehaviourPrediction(samples[:, :, 1::2], prediction.noise_std)
    expected = calibration_scores(subset, behaviour[:, 1::2], ["a", "b"])
    assert scores["r_squared"] == pytest.approx(expected["r_squared"])
    assert scores["calibration"]["empirical"] == pytest.approx(expected["calibration"]["empirical"])
    assert scores["mean_interval_width"] == pytest.approx(expected["mean_interval_width"])
