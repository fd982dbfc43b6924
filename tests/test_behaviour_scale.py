"""Warnings for behaviour variables on a scale far from one, which a head with standardize false fits raw."""

import logging

import numpy as np
import pytest

from conftest import tiny_config
from neuroude.data import Recording, save_npz
from neuroude.observation.checks import warn_behaviour_scale

N_TRIALS, N_TIME = 8, 12


def behaviour_values(scale, seed=0):
    return scale * np.random.default_rng(seed).normal(size=(N_TRIALS, N_TIME, 2))


def test_unit_scale_not_warned():
    values = behaviour_values(1.0)
    assert warn_behaviour_scale(values, np.ones(values.shape, bool)) == []


def test_pixel_scale_warned_by_name(caplog):
    values = behaviour_values(1.0)
    values[..., 1] *= 1000.0
    with caplog.at_level(logging.WARNING, logger="neuroude"):
        warnings = warn_behaviour_scale(values, np.ones(values.shape, bool), ["lick", "speed"])

    assert len(warnings) == 1
    assert "behaviour speed has standard deviation" in warnings[0]
    assert "expected a standard deviation in [0.01, 100]" in warnings[0]
    assert "Set model.behaviour.standardize: true" in caplog.text


def test_tiny_scale_warned():
    values = behaviour_values(1e-4)
    warnings = warn_behaviour_scale(values, np.ones(values.shape, bool))
    assert [warning.split(" has")[0] for warning in warnings] == ["behaviour variable 0", "behaviour variable 1"]


def test_rare_huge_value_warned():
    # One tracking glitch leaves the standard deviation near 1 but gives a residual of about 5000.
    values = behaviour_values(1.0)
    values[3, 4, 0] = 4737.0
    warnings = warn_behaviour_scale(values, np.ones(values.shape, bool), ["speed", "x"])
    assert len(warnings) == 1
    assert "behaviour speed has standard deviation" in warnings[0]
    assert "largest absolute value 4737" in warnings[0]


def test_unobserved_entries_ignored():
    # Huge values where behaviour is not observed do not count towards the standard deviation.
    values = behaviour_values(1.0)
    observed = np.ones(values.shape, bool)
    values[:, ::2] = 1e6
    observed[:, ::2] = False
    assert warn_behaviour_scale(values, observed) == []


class StopBeforeTraining(Exception):
    """Raised in place of building the training step, once the fit's checks of its data have run."""


def stop_before_training(*args, **kwargs):
    raise StopBeforeTraining


def test_fit_warns_on_raw_behaviour(tmp_path, caplog, monkeypatch):
    # The warning is issued before the first training step, so the fit stops there rather than compiling one.
    import neuroude.train as train_module
    from neuroude.workflow import fit_run

    rng = np.random.default_rng(1)
    u = rng.normal(size=(N_TRIALS, N_TIME, 1))
    recording = Recording(
        y=rng.poisson(0.5, size=(N_TRIALS, N_TIME, 3)), ts=np.arange(N_TIME) * 0.01, u=u,
        behaviour=behaviour_values(1000.0), metadata={"behaviour_names": ["x", "y"]},
    )
    save_npz(recording, tmp_path / "raw.npz")
    config = tiny_config(
        data={"source": "npz", "path": str(tmp_path / "raw.npz")},
        model={"behaviour": {"weight": 1.0, "standardize": False}},
        training={"steps": 1, "batch_size": 4, "eval_every": 1},
    )
    monkeypatch.setattr(train_module, "make_train_step", stop_before_training)
    with caplog.at_level(logging.WARNING, logger="neuroude"), pytest.raises(StopBeforeTraining):
        fit_run(config, tmp_path / "run", quiet=True)

    assert "behaviour x has standard deviation" in caplog.text
    assert "behaviour y has standard deviation" in caplog.text
