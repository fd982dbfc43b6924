"""Constrained mechanistic constants."""

import jax
import jax.numpy as jnp
import pytest

from neuroude.dynamics import Constant, FitzHughNagumo, trainable_filter
from neuroude.errors import ConfigError


@pytest.mark.parametrize("value", [1e-3, 0.7, 12.5, 300.0])
def test_positive_constant_round_trip(value):
    assert float(Constant(value).value) == pytest.approx(value, rel=1e-5)


def test_positive_constant_stays_positive():
    constant = Constant(0.5)
    moved = jax.tree_util.tree_map(lambda raw: raw - 100.0, constant)
    assert float(moved.value) > 0.0


def test_bounded_constant_stays_inside():
    constant = Constant(0.2, "bounded", bounds=(0.0, 1.0))
    assert float(constant.value) == pytest.approx(0.2, rel=1e-5)
    for shift in (-50.0, 50.0):
        moved = jax.tree_util.tree_map(lambda raw: raw + shift, constant)
        assert 0.0 <= float(moved.value) <= 1.0


def test_frozen_constant_has_zero_gradient():
    gradient = jax.grad(lambda c: c.value * 3.0)(Constant(2.0, learnable=False))
    assert float(gradient.raw) == 0.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"value": -1.0}, "expected a value > 0"),
        ({"value": 2.0, "transform": "bounded", "bounds": (0.0, 1.0)}, "strictly inside"),
        ({"value": 1.0, "transform": "log"}, "transform is 'log'"),
        ({"value": float("nan")}, "finite"),
    ],
)
def test_invalid_constant(arguments, message):
    with pytest.raises(ConfigError, match=message):
        Constant(**arguments)


def test_trainable_filter_marks_frozen():
    model = FitzHughNagumo(1, frozen=("a",))
    mask = trainable_filter(model)
    assert mask.a.raw is False
    assert mask.b.raw is True
    assert mask.input_gain is True


def test_fitzhugh_nagumo_published_defaults():
    model = FitzHughNagumo()
    assert float(model.a.value) == pytest.approx(0.7, rel=1e-6)
    assert float(model.b.value) == pytest.approx(0.8, rel=1e-6)
    assert float(model.tau.value) == pytest.approx(12.5, rel=1e-6)


def test_fitzhugh_nagumo_drift_value():
    model = FitzHughNagumo(1, time_scale=2.0)
    v, w, u = 0.5, -0.2, 1.0
    drift = model(0.0, jnp.array([v, w]), jnp.array([u]))
    expected_v = 2.0 * (v - v**3 / 3 - w + 0.5 * u)
    expected_w = 2.0 * (v + 0.7 - 0.8 * w) / 12.5
    assert float(drift[0]) == pytest.approx(expected_v, rel=1e-5)
    assert float(drift[1]) == pytest.approx(expected_w, rel=1e-5)


def test_fitzhugh_nagumo_unknown_constant():
    with pytest.raises(ConfigError, match="unknown FitzHugh-Nagumo constants"):
        FitzHughNagumo(c=1.0)
