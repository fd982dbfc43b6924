"""Normative models: task generators and rate networks trained on them beat chance."""

from functools import partial

import jax
import numpy as np
import pytest

from neuroude.errors import ConfigError
from neuroude.tasks import TaskModel, delayed_response, evidence_integration, flip_flop, task_accuracy, train_task

TINY_TASKS = {
    "flip_flop": partial(flip_flop, n_bins=40, n_bits=2),
    "delayed_response": partial(delayed_response, n_bins=40, cue_bins=4, min_delay=5, max_delay=15, response_bins=8),
    "evidence_integration": partial(evidence_integration, n_bins=30, stimulus_bins=20, response_bins=6,
                                    coherences=(0.2, 0.4, 0.8)),
}


def ideal_evidence_accuracy(batch):
    """Return the accuracy of the ideal observer, which reports the sign of the summed evidence."""
    evidence = np.sum(batch.inputs[:, :, 0], axis=1)
    answer = batch.targets[:, :, 0].sum(axis=1)
    return float(np.mean(np.sign(evidence) == np.sign(answer)))


@pytest.mark.parametrize("name", sorted(TINY_TASKS))
def test_trained_network_beats_chance(name):
    task = TINY_TASKS[name]
    held_out = task(200, seed=12345)
    model = TaskModel(held_out.inputs.shape[-1], held_out.targets.shape[-1], state_size=16,
                      key=jax.random.PRNGKey(0))
    untrained = task_accuracy(model, held_out, jax.random.PRNGKey(1))

    trained_model, losses = train_task(model, task, steps=150, batch_size=16, learning_rate=1e-2)
    trained = task_accuracy(trained_model, held_out, jax.random.PRNGKey(1))

    assert losses[-10:].mean() < 0.5 * losses[:5].mean()
    assert untrained < 0.7
    if name == "evidence_integration":
        ideal = ideal_evidence_accuracy(held_out)
        assert trained > 0.5 + 0.6 * (ideal - 0.5)
    else:
        assert trained > 0.9


def test_flip_flop_targets_follow_last_pulse():
    batch = flip_flop(5, n_bins=30, n_bits=2, seed=3)
    for trial in range(5):
        for bit in range(2):
            last = 0.0
            for k in range(30):
                if batch.inputs[trial, k, bit] != 0:
                    last = batch.inputs[trial, k, bit]
                assert batch.targets[trial, k, bit] == last


def test_delayed_response_reports_cue():
    batch = delayed_response(8, n_bins=60, seed=1)
    cues = batch.inputs[:, 2, 0]
    responses = batch.targets[:, :, 0].sum(axis=1) / batch.inputs[:, :, 1].sum(axis=1)
    np.testing.assert_array_equal(responses, cues)
    assert np.all(batch.inputs[:, :, 1].sum(axis=1) == 10)


def test_task_arguments_checked():
    with pytest.raises(ConfigError, match="n_bins is 10; this task needs at least 47 bins"):
        delayed_response(4, n_bins=10)
    with pytest.raises(ConfigError, match="pulse_probability is 1.5"):
        flip_flop(4, pulse_probability=1.5)
    with pytest.raises(ConfigError, match="drift is 'lstm'"):
        TaskModel(1, 1, drift="lstm", key=jax.random.PRNGKey(0))
