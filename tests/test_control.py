"""Input design on mechanistic models with known constants, whose controlled behaviour is known in advance."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.control import (
    ControlledSystem,
    ControlSettings,
    SelectStates,
    bounded_input,
    design_open_loop,
    prepare_target,
    receding_horizon,
)
from neuroude.dynamics import AdditiveDiffusion
from neuroude.dynamics.mechanistic.fitzhugh_nagumo import FitzHughNagumo
from neuroude.dynamics.mechanistic.stuart_landau import StuartLandau
from neuroude.dynamics.mechanistic.wilson_cowan import WilsonCowan
from neuroude.errors import ConfigError, DataError

# FitzHugh-Nagumo rest state for a = 0.7, b = 0.8 and no current: v - v^3/3 - w = 0 with w = (v + a) / b.
FHN_REST = np.array([-1.19941, -0.62426], np.float32)


def spike_times(v, bin_width, threshold=1.0):
    """Return the times of upward crossings of `threshold`."""
    crossings = np.flatnonzero((v[:-1] < threshold) & (v[1:] >= threshold)) + 1
    return crossings * bin_width


def test_stuart_landau_oscillation_suppressed():
    # mu = 1: without input every path settles on the circle of radius sqrt(mu) = 1 and turns at 10 Hz.
    system = ControlledSystem(StuartLandau(input_size=1), AdditiveDiffusion(2, 0.05), state_size=2, input_size=1,
                              n_substeps=4, method="heun")
    n_bins, bin_width = 100, 0.005
    x0 = np.array([1.0, 0.0], np.float32)
    settings = ControlSettings(u_min=-20.0, u_max=20.0, energy=1e-4, n_samples=8, n_iterations=200,
                               learning_rate=0.5)

    result = design_open_loop(system, x0, np.zeros((n_bins, 2)), settings, 0.0, bin_width, jax.random.PRNGKey(0))
    controlled = np.linalg.norm(result.paths[:, -20:], axis=-1).mean()
    free = np.asarray(system.simulate(jnp.asarray(x0), jnp.zeros((n_bins, 1)), 0.0, bin_width, jax.random.PRNGKey(1)))
    uncontrolled = np.linalg.norm(free[-20:], axis=-1).mean()

    assert uncontrolled == pytest.approx(1.0, abs=0.1)
    assert controlled < 0.2 * np.sqrt(1.0)
    assert result.terms["max_bound_violation"] == 0.0
    assert np.all(np.abs(result.input) <= 20.0)
    assert result.history[-1] < 0.5 * result.history[0]


def test_fitzhugh_nagumo_spikes_at_chosen_times():
    drift = eqx.tree_at(lambda d: d.input_gain, FitzHughNagumo(input_size=1), jnp.ones(1))
    system = ControlledSystem(drift, AdditiveDiffusion(2, 0.02), state_size=2, input_size=1, n_substeps=2,
                              output=SelectStates((0,)))
    n_bins, bin_width = 160, 0.005

    # The target voltage is the neuron's own response to two 10 ms current pulses, so it is reachable.
    pulses = np.zeros((n_bins, 1), np.float32)
    for start in (0.1, 0.45):
        pulses[round(start / bin_width) : round(start / bin_width) + 2] = 1.5
    reference = np.asarray(system.simulate(jnp.asarray(FHN_REST), jnp.asarray(pulses), 0.0, bin_width, None))
    chosen = spike_times(reference[:, 0], bin_width)
    assert len(chosen) == 2

    settings = ControlSettings(u_min=-1.0, u_max=2.0, energy=1e-3, n_samples=8, n_iterations=200, learning_rate=0.3)
    result = design_open_loop(system, FHN_REST, reference[:, :1], settings, 0.0, bin_width, jax.random.PRNGKey(0))

    for sample in result.outputs:
        times = spike_times(sample[:, 0], bin_width)
        assert len(times) == 2
        np.testing.assert_allclose(times, chosen, atol=0.015)
    quiet = np.ones(n_bins, bool)
    for time in chosen:
        quiet[round((time - 0.05) / bin_width) : round((time + 0.2) / bin_width)] = False
    assert np.all(result.outputs[:, quiet, 0] < 0.0)
    assert result.terms["max_bound_violation"] == 0.0


def test_wilson_cowan_held_at_target_rate():
    # The default constants make E oscillate at 20 Hz, so only feedback keeps it at a constant rate.
    system = ControlledSystem(WilsonCowan(input_size=1), AdditiveDiffusion(2, 0.01), state_size=2, input_size=1,
                              n_substeps=2, output=SelectStates((0,)))
    n_bins, bin_width, rate = 100, 0.002, 0.15
    x0 = np.array([0.05, 0.05], np.float32)
    settings = ControlSettings(u_min=-4.0, u_max=4.0, n_samples=4, n_iterations=40, learning_rate=0.3)

    result = receding_horizon(system, x0, np.full((n_bins, 1), rate), settings, 0.0, bin_width,
                              jax.random.PRNGKey(0), horizon=15, control_interval=5)
    free = np.asarray(system.simulate(jnp.asarray(x0), jnp.zeros((n_bins, 1)), 0.0, bin_width, jax.random.PRNGKey(3)))

    steady_error = np.abs(result.outputs[n_bins // 2 :, 0] - rate).mean()
    free_error = np.abs(free[n_bins // 2 :, 0] - rate).mean()
    assert steady_error < 0.025
    assert steady_error < 0.5 * free_error
    assert result.terms["max_bound_violation"] == 0.0
    assert np.all(np.isfinite(result.estimates[::5]))


def test_bounded_input_stays_in_bounds():
    raw = jnp.array([[-1e4], [-3.0], [0.0], [3.0], [1e4]])
    u = np.asarray(bounded_input(raw, jnp.array([-0.5]), jnp.array([2.0])))
    assert np.all(u >= -0.5)
    assert np.all(u <= 2.0)
    assert u[2, 0] == pytest.approx(0.75)


def test_target_nan_is_unweighted():
    target, weights = prepare_target(np.array([[0.1, np.nan], [0.2, 0.3]]), None, 2)
    np.testing.assert_array_equal(weights, [[1, 0], [1, 1]])
    np.testing.assert_array_equal(target, np.array([[0.1, 0.0], [0.2, 0.3]], np.float32))


@pytest.mark.parametrize(
    "target, message",
    [
        (np.zeros((10, 3)), "target has 3 columns; the controlled output has 2"),
        (np.full((10, 2), np.nan), "NaN everywhere"),
        (np.array([[0.0, np.inf], [0.0, 0.0]]), "infinite"),
        (np.zeros((10, 2, 1)), "expected (time, outputs)"),
    ],
)
def test_bad_target_rejected(target, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare_target(target, None, 2)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"u_min": 1.0, "u_max": 1.0}, "expected u_min < u_max"),
        ({"u_min": float("nan")}, "expected finite numbers"),
        ({"smoothness": -1.0}, "smoothness penalty is -1.0"),
        ({"n_samples": 0}, "n_samples is 0"),
        ({"learning_rate": 0.0}, "learning_rate is 0.0"),
    ],
)
def test_bad_settings_rejected(settings, message):
    with pytest.raises(ConfigError, match=message):
        ControlSettings(**settings)


def test_bounds_per_channel_checked():
    with pytest.raises(ConfigError, match="u_min has 3 values; the system has 2 inputs"):
        ControlSettings(u_min=(-1.0, -1.0, -1.0), u_max=1.0).bounds(2)


def test_x0_shape_checked():
    system = ControlledSystem(StuartLandau(input_size=1), None, state_size=2, input_size=1)
    with pytest.raises(DataError, match=r"x0 has shape \(3,\); expected \(2,\)"):
        design_open_loop(system, np.zeros(3), np.zeros((5, 2)), ControlSettings(), 0.0, 0.01, jax.random.PRNGKey(0))


def test_horizon_checked():
    system = ControlledSystem(StuartLandau(input_size=1), None, state_size=2, input_size=1)
    with pytest.raises(ConfigError, match="control_interval is 5; expected an integer from 1 to horizon 3"):
        receding_horizon(system, np.zeros(2), np.zeros((5, 2)), ControlSettings(), 0.0, 0.01,
                         jax.random.PRNGKey(0), horizon=3, control_interval=5)
