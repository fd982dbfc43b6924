"""Fractional conduction delays and a learnable conduction speed.

The delay line interpolates linearly between the two stored solver steps
around each delay, so the path is continuous in the speed. The delayed
two-node chain at a fractional number of steps is checked against its
method-of-steps solution. The path gradient in the speed is checked against
central finite differences, and the speed is recovered from a simulated
chain. The remaining tests cover the configuration of the speed and the
control rollout of a delayed network.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from conftest import tiny_config
from neuroude.build import build_model
from neuroude.config import parse_config
from neuroude.control import ControlledSystem
from neuroude.dynamics.mechanistic import describe_models
from neuroude.dynamics.mechanistic.delays import DelayLine
from neuroude.dynamics.mechanistic.linear import LinearDynamics
from neuroude.dynamics.mechanistic.network import BrainNetwork
from neuroude.errors import ConfigError
from neuroude.solve import solve_fixed_step
from neuroude.uncertainty import constant_prior

DECAY, GAIN = 2.0, 3.0  # 1/s
# 253.5 mm at 1 m/s is 0.2535 s, which is 253.5 solver steps of 1 ms.
CHAIN_LENGTH = 253.5  # mm
BIN_WIDTH, N_SUBSTEPS = 0.01, 10


def decaying_chain(speed: float = 1.0, **delay_settings) -> BrainNetwork:
    """Node 1 decays alone and drives node 2 through a fibre of CHAIN_LENGTH mm (additive coupling)."""
    local = LinearDynamics(0, size=1, key=jax.random.key(0))
    local = eqx.tree_at(lambda m: m.A, local, jnp.array([[-DECAY]], jnp.float32))
    lengths = np.array([[0.0, CHAIN_LENGTH], [CHAIN_LENGTH, 0.0]])
    return BrainNetwork(local, np.array([[0.0, 0.0], [1.0, 0.0]]), coupling="additive", global_coupling=GAIN,
                        fibre_lengths=lengths, conduction_speed=speed, **delay_settings)


def chain_solution(t, delay):
    """Node 2 of the chain from x = (1, 0), with node 1 held at 1 before the start (method of steps)."""
    at_delay = GAIN / DECAY * (1 - np.exp(-DECAY * delay))
    after = (at_delay + GAIN * (t - delay)) * np.exp(-DECAY * (t - delay))
    return np.where(t < delay, GAIN / DECAY * (1 - np.exp(-DECAY * t)), after)


def solve_chain(network, n_bins, history=None, method="heun"):
    """Integrate the chain without noise from x = (1, 0) with the fitting solver; return the bin states."""

    def fields(t, x, k, frac, past):
        return network.delayed(t, x, jnp.zeros(0), past), jnp.zeros_like(x), jnp.zeros((), x.dtype)

    history = network.delay_line(BIN_WIDTH / N_SUBSTEPS) if history is None else history
    x0 = jnp.array([1.0, 0.0], network.connectivity.raw.dtype)
    path, _ = solve_fixed_step(fields, x0, 0.0, BIN_WIDTH, n_bins, N_SUBSTEPS, None, method, history=history)
    return path


def to_float64(tree):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, tree)


# -- fractional delays against the closed form ----------------------------------------------------


def test_fractional_delay_follows_chain():
    network = decaying_chain(frozen=("conduction_speed",))
    n_bins = 61
    t = np.arange(n_bins) * BIN_WIDTH
    exact = chain_solution(t, CHAIN_LENGTH * 1e-3)

    history = network.delay_line(BIN_WIDTH / N_SUBSTEPS)
    assert history.length == 255  # ceil(253.5) + 1 slots
    interpolated = solve_chain(network, n_bins, history)

    # Heun's error on this chain at 1 ms steps is below 2e-4 (see test_delays_fitting), and linear
    # interpolation of the smooth history adds at most dt^2 / 8 * max|x1''| = 5e-7.
    np.testing.assert_allclose(interpolated[:, 1], exact, atol=2e-4)

    # Rounding the delay to 253 or 254 steps shifts node 2 by half a step, which the tolerance above detects.
    rounded_line = DelayLine(jnp.rint(history.lags), history.length, 2, 1, 0)
    rounded = solve_chain(network, n_bins, rounded_line)
    assert float(np.max(np.abs(rounded[:, 1] - exact))) > 5e-4


def test_whole_step_delay_reads_stored_value():
    line = DelayLine(jnp.array([[0.0, 2.0], [1.0, 0.0]]), 4, 2, 1, 0)
    state = line.initial(jnp.array([0.0, 0.0]))
    for value in (1.0, 2.0, 3.0):
        state = line.push(state, jnp.array([value, 10 * value]))

    past = line.read(state)
    assert float(past[0, 1]) == 10.0  # node 2 two steps ago, with no interpolation
    assert float(past[1, 0]) == 2.0

    half = DelayLine(jnp.array([[0.0, 1.5], [0.5, 0.0]]), 4, 2, 1, 0)
    past = half.read(state)
    assert float(past[0, 1]) == pytest.approx(15.0)
    assert float(past[1, 0]) == pytest.approx(2.5)


def test_path_is_continuous_in_speed():
    # Speeds across the 253/254-step boundary: the rounded solver jumped there, the interpolated one does not.
    network = decaying_chain(1.0, min_conduction_speed=0.99)

    @jax.jit
    def end_value(speed):
        moved = eqx.tree_at(lambda n: n.conduction_speed.raw, network, jnp.log(jnp.expm1(speed)))
        return solve_chain(moved, 41)[-1, 1]

    speeds = 253.5 / np.array([253.4, 253.49, 253.51, 253.6])
    ends = [float(end_value(speed)) for speed in speeds]
    steps = np.abs(np.diff(ends))
    assert steps.max() < 2e-4
    assert steps[1] < 2 * max(steps[0], steps[2])


# -- gradients and recovery of the speed ----------------------------------------------------------


CONNECTIVITY = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.2], [0.5, 0.2, 0.0]])
FIBRE_LENGTHS = np.array([[0.0, 10.0, 30.0], [10.0, 0.0, 20.0], [30.0, 20.0, 0.0]])  # mm


def network_config(folder, **settings):
    """Three Stuart-Landau nodes with fibres of 10 to 30 mm, solver steps of 5 ms."""
    np.save(folder / "connectome.npy", CONNECTIVITY)
    np.save(folder / "lengths.npy", FIBRE_LENGTHS)
    network = {
        "local": "stuart_landau", "connectivity": str(folder / "connectome.npy"),
        "fibre_lengths": str(folder / "lengths.npy"), "conduction_speed": 1.3, "global_coupling": 20.0,
        **settings,
    }
    return tiny_config(model={"drift": "network", "latent_size": 6, "network": network}, solver={"n_substeps": 2})


def build(config, n_inputs=1):
    return build_model(config, 3, n_inputs, jax.random.PRNGKey(0), 0.5)


def test_path_gradient_in_speed_matches_finite_differences():
    # At 1.3 m/s the delays are 1.54, 3.08 and 4.62 steps of 5 ms, away from whole steps where the slope changes.
    network = BrainNetwork.from_registry("stuart_landau", CONNECTIVITY, 0, global_coupling=20.0,
                                         fibre_lengths=FIBRE_LENGTHS, conduction_speed=1.3)
    x0 = jnp.array([0.8, 0.0, -0.3, 0.5, 0.1, -0.6])

    with jax.enable_x64(True):
        network = to_float64(network)

        @jax.jit
        def path_norm(raw):
            moved = eqx.tree_at(lambda n: n.conduction_speed.raw, network, raw)

            def fields(t, x, k, frac, past):
                return moved.delayed(t, x, jnp.zeros(0), past), jnp.zeros_like(x), jnp.zeros((), x.dtype)

            path, _ = solve_fixed_step(fields, x0.astype(jnp.float64), 0.0, 0.01, 30, 2, None, "heun",
                                       history=moved.delay_line(0.005))
            return jnp.sum(path**2)

        raw = network.conduction_speed.raw
        gradient = float(jax.grad(path_norm)(raw))
        h = 1e-5
        numeric = float((path_norm(raw + h) - path_norm(raw - h)) / (2 * h))

    assert math.isfinite(gradient)
    assert abs(gradient) > 1e-3
    assert gradient == pytest.approx(numeric, rel=1e-5)


def test_speed_recovered_from_simulated_chain():
    true_speed = 1.0
    n_bins = 61
    with jax.enable_x64(True):
        target = solve_chain(to_float64(decaying_chain(true_speed, frozen=("conduction_speed",))), n_bins)
        start = to_float64(decaying_chain(1.3 * true_speed))  # 30 % off, buffer sized for speeds >= 0.65 m/s

        def loss(raw):
            network = eqx.tree_at(lambda n: n.conduction_speed.raw, start, raw)
            return jnp.sum((solve_chain(network, n_bins) - target) ** 2)

        value_and_grad = jax.jit(jax.value_and_grad(loss))

        def objective(raw):
            value, gradient = value_and_grad(jnp.asarray(raw[0]))
            return float(value), np.array([float(gradient)])

        raw0 = np.array([float(start.conduction_speed.raw)])
        result = scipy.optimize.minimize(objective, raw0, jac=True, method="L-BFGS-B")
        fitted = eqx.tree_at(lambda n: n.conduction_speed.raw, start, jnp.asarray(result.x[0]))
        speed = float(fitted.conduction_speed.value)
        initial_loss = objective(raw0)[0]

    assert initial_loss > 1e-2
    # Noise-free data leave only the optimiser's tolerance: the fit reached 1.0000035 m/s.
    assert speed == pytest.approx(true_speed, rel=1e-3)


# -- configuration --------------------------------------------------------------------------------


def test_speed_learnable_unless_frozen(tmp_path):
    learnable = build(network_config(tmp_path)).sde.drift
    assert learnable.conduction_speed.learnable
    assert float(learnable.conduction_speed.value) == pytest.approx(1.3)

    config = network_config(tmp_path)
    config.model.frozen_constants = ["conduction_speed"]
    frozen = build(config).sde.drift
    assert not frozen.conduction_speed.learnable


def test_buffer_sized_from_min_speed(tmp_path):
    # Default minimum 0.65 m/s: 30 mm take 46.2 ms, 9.23 steps of 5 ms, so ceil + 1 = 11 slots.
    assert build(network_config(tmp_path)).sde.drift.delay_line(0.005).length == 11
    # 0.5 m/s: 60 ms, exactly 12 steps, so 13 slots.
    explicit = build(network_config(tmp_path, min_conduction_speed=0.5)).sde.drift
    assert explicit.delay_line(0.005).length == 13

    # Frozen without a minimum: the buffer fits the speed itself, 23.1 ms or 4.62 steps, so 6 slots.
    config = network_config(tmp_path)
    config.model.frozen_constants = ["conduction_speed"]
    assert build(config).sde.drift.delay_line(0.005).length == 6


def test_speed_clipped_at_minimum(tmp_path):
    network = build(network_config(tmp_path, min_conduction_speed=1.0)).sde.drift
    slow = eqx.tree_at(lambda n: n.conduction_speed.raw, network, jnp.asarray(-3.0))  # softplus(-3) = 0.049 m/s
    np.testing.assert_allclose(slow.delays, FIBRE_LENGTHS * 1e-3 / 1.0, rtol=1e-6)
    line = slow.delay_line(0.005)
    assert float(jnp.max(line.lags)) <= line.length - 1


def test_min_speed_above_speed_rejected(tmp_path):
    raw = network_config(tmp_path).model_dump(mode="json")
    raw["model"]["network"]["min_conduction_speed"] = 2.0
    with pytest.raises(ConfigError, match="model.network.conduction_speed is 1.3 and model.network.min_conduction"):
        parse_config(raw)


def test_frozen_speed_without_delays_rejected():
    local = LinearDynamics(0, size=1, key=jax.random.key(0))
    with pytest.raises(ConfigError, match="frozen names 'conduction_speed', but the network has no conduction"):
        BrainNetwork(local, np.zeros((2, 2)), frozen=("conduction_speed",))


def test_speed_prior_and_models_listing(tmp_path):
    prior = constant_prior(build(network_config(tmp_path)), {"conduction_speed": (0.5, 5.0)})
    assert prior.names == ("conduction_speed",)
    assert "conduction_speed default 20 m/s, positive" in describe_models()


# -- control ---------------------------------------------------------------------------------------


def test_control_rollout_keeps_delays(tmp_path):
    model = build(network_config(tmp_path))
    system = ControlledSystem.from_model(model)
    n_bins = 30
    stimulus = jnp.sin(jnp.linspace(0.0, 6.0, n_bins))[:, None]
    x0 = jnp.array([0.8, 0.0, -0.3, 0.5, 0.1, -0.6])

    controlled = system.simulate(x0, stimulus, 0.0, 0.01, None)
    fields = model._fields(model.encode(stimulus), None)
    delayed, _ = model._integrate(fields, x0, 0.0, 0.01, n_bins, None)
    np.testing.assert_allclose(controlled, delayed, rtol=1e-6, atol=1e-6)

    instantaneous, _ = solve_fixed_step(fields, x0, 0.0, 0.01, n_bins, model.n_substeps, None, model.method)
    assert float(jnp.max(jnp.abs(controlled - instantaneous))) > 1e-2
