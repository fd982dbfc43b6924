"""Conduction delays in the whole-brain network.

A two-node chain, where node 1 decays on its own and drives node 2 through a
delayed additive coupling, has a closed-form solution by the method of steps.
Without delays the simulator must reproduce the instantaneous network solved
by the generic fixed-step solver, and its gradient in the global coupling must
match central finite differences.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.dynamics.mechanistic.delays import conduction_delays, delay_steps, simulate_network
from neuroude.dynamics.mechanistic.linear import LinearDynamics
from neuroude.dynamics.mechanistic.network import BrainNetwork
from neuroude.dynamics.mechanistic.stuart_landau import StuartLandau
from neuroude.errors import ConfigError
from neuroude.solve import solve_fixed_step

DECAY = 2.0  # 1/s, decay rate of both nodes
GAIN = 3.0  # 1/s, coupling from node 1 to node 2
DELAY = 0.25  # seconds


def decaying_chain(gain: float = GAIN) -> BrainNetwork:
    """Node 1 decays alone and drives node 2 (additive coupling, weight 1 from node 1 to node 2)."""
    local = LinearDynamics(0, size=1, key=jax.random.key(0))
    local = eqx.tree_at(lambda m: m.A, local, jnp.array([[-DECAY]], jnp.float32))
    connectivity = np.array([[0.0, 0.0], [1.0, 0.0]])
    return BrainNetwork(local, connectivity, coupling="additive", global_coupling=gain)


def chain_solution(t: np.ndarray) -> np.ndarray:
    """Node 2 of the chain from x = (1, 0), with node 1 held at 1 before the start."""
    before = GAIN / DECAY * (1 - np.exp(-DECAY * t))
    at_delay = GAIN / DECAY * (1 - np.exp(-DECAY * DELAY))
    after = (at_delay + GAIN * (t - DELAY)) * np.exp(-DECAY * (t - DELAY))
    return np.where(t < DELAY, before, after)


def test_delayed_chain_matches_method_of_steps():
    dt = 1e-4
    delays = np.array([[0.0, DELAY], [DELAY, 0.0]])
    path = simulate_network(decaying_chain(), jnp.array([1.0, 0.0]), dt, 10_000, delays=delays, save_every=100)

    t = np.arange(path.shape[0]) * 100 * dt
    np.testing.assert_allclose(path[:, 0], np.exp(-DECAY * t), atol=2e-3)
    np.testing.assert_allclose(path[:, 1], chain_solution(t), atol=2e-3)


def test_delay_changes_the_response():
    dt = 1e-3
    delays = np.array([[0.0, DELAY], [DELAY, 0.0]])
    instantaneous = simulate_network(decaying_chain(), jnp.array([1.0, 0.0]), dt, 1000)
    delayed = simulate_network(decaying_chain(), jnp.array([1.0, 0.0]), dt, 1000, delays=delays)

    # Without delay node 2 follows GAIN t exp(-DECAY t), which peaks at 1 / DECAY. With the delay the
    # closed form peaks at DELAY + 1 / DECAY - x2(DELAY) / GAIN.
    at_delay = (1 - math.exp(-DECAY * DELAY)) / DECAY
    assert int(jnp.argmax(instantaneous[:, 1])) * dt == pytest.approx(1 / DECAY, abs=2 * dt)
    assert int(jnp.argmax(delayed[:, 1])) * dt == pytest.approx(DELAY + 1 / DECAY - at_delay, abs=2 * dt)


def test_zero_delays_match_fixed_step_solver():
    rng = np.random.default_rng(1)
    connectivity = rng.uniform(0, 1, (4, 4))
    np.fill_diagonal(connectivity, 0.0)
    network = BrainNetwork(StuartLandau(0), connectivity, global_coupling=0.5)
    x0 = jnp.asarray(rng.normal(size=network.state_size), jnp.float32)
    dt, n_steps = 1e-3, 200

    simulated = simulate_network(network, x0, dt, n_steps, delays=np.zeros((4, 4)), save_every=10)

    def fields(t, x, k, frac):
        return network(t, x, jnp.zeros(0)), jnp.zeros_like(x), jnp.zeros(())

    reference, _ = solve_fixed_step(fields, x0, 0.0, 10 * dt, n_steps // 10 + 1, 10, key=None)
    np.testing.assert_allclose(simulated, reference, rtol=1e-5, atol=1e-5)


def test_gradient_in_coupling_matches_finite_differences():
    delays = np.array([[0.0, 0.01], [0.02, 0.0]])
    dt = 1e-3

    def end_state(gain):
        with jax.enable_x64(True):
            network = decaying_chain(1.0)
            network = eqx.tree_at(lambda n: n.global_coupling.raw, network, gain)
            path = simulate_network(network, jnp.array([1.0, 0.5], jnp.float64), dt, 100, delays=delays)
            return path[-1, 1]

    with jax.enable_x64(True):
        raw = jnp.asarray(0.3, jnp.float64)
        gradient = jax.grad(end_state)(raw)
        h = 1e-6
        numeric = (end_state(raw + h) - end_state(raw - h)) / (2 * h)
    assert math.isfinite(float(gradient))
    assert float(gradient) == pytest.approx(float(numeric), rel=1e-6)


def test_noise_is_reproducible_and_needs_key():
    network = decaying_chain()
    first = simulate_network(network, jnp.zeros(2), 1e-3, 100, noise_scale=0.1, key=jax.random.key(3), save_every=10)
    second = simulate_network(network, jnp.zeros(2), 1e-3, 100, noise_scale=0.1, key=jax.random.key(3), save_every=10)
    np.testing.assert_array_equal(first, second)
    assert float(jnp.std(first)) > 0

    with pytest.raises(ConfigError, match="key is None"):
        simulate_network(network, jnp.zeros(2), 1e-3, 100, noise_scale=0.1)


def test_conduction_delays_units():
    lengths = np.array([[0.0, 100.0], [50.0, 0.0]])  # mm
    delays = conduction_delays(lengths, conduction_speed=10.0)  # m/s
    np.testing.assert_allclose(delays, [[0.0, 0.01], [0.005, 0.0]])
    np.testing.assert_array_equal(delay_steps(delays, 1e-3, 2), [[0, 10], [5, 0]])


@pytest.mark.parametrize(
    ("lengths", "speed", "message"),
    [
        (np.array([[0.0, -1.0], [1.0, 0.0]]), 5.0, "negative or non-finite"),
        (np.array([[0.0, np.nan], [1.0, 0.0]]), 5.0, "negative or non-finite"),
        (np.zeros((2, 3)), 5.0, "square"),
        (np.zeros((2, 2)), 0.0, "conduction_speed is 0.0"),
    ],
)
def test_conduction_delays_reject_bad_input(lengths, speed, message):
    with pytest.raises(ConfigError, match=message):
        conduction_delays(lengths, speed)


def test_simulate_network_rejects_bad_shapes():
    network = decaying_chain()
    with pytest.raises(ConfigError, match="x0 has shape"):
        simulate_network(network, jnp.zeros(3), 1e-3, 10)
    with pytest.raises(ConfigError, match="multiple of save_every"):
        simulate_network(network, jnp.zeros(2), 1e-3, 10, save_every=3)
    with pytest.raises(ConfigError, match="block_steps is 0"):
        simulate_network(network, jnp.zeros(2), 1e-3, 10, block_steps=0)
    with pytest.raises(ConfigError, match=r"delays have shape \(3, 3\)"):
        simulate_network(network, jnp.zeros(2), 1e-3, 10, delays=np.zeros((3, 3)))


def reference_simulation(network, x0, dt, n_steps, delays, noise_scale, key, save_every):
    """The earlier simulator: one step at a time, a modulo ring buffer and one key per saved block."""
    lags = jnp.asarray(delay_steps(delays, dt, network.n_nodes))
    length = int(lags.max()) + 1
    variable = network.coupling_variable
    weights = network.connectivity.value
    senders = jnp.arange(network.n_nodes)[None, :]

    def step(carry, inputs):
        x, history, pointer = carry
        n, noise = inputs
        current = network.node_states(x)[:, variable]
        incoming = jnp.sum(weights * history[(pointer - lags) % length, senders], axis=1)
        incoming = incoming - jnp.sum(weights, axis=1) * current
        drifts = network.local_drifts(n * dt, x, jnp.zeros(0)).at[:, variable].add(
            network.global_coupling.value * incoming
        )
        x = x + drifts.reshape(-1) * dt + noise_scale * noise
        pointer = (pointer + 1) % length
        return (x, history.at[pointer].set(network.node_states(x)[:, variable]), pointer), None

    def block(carry, index):
        noise = jax.random.normal(jax.random.fold_in(key, index), (save_every, network.state_size)) * jnp.sqrt(dt)
        carry, _ = jax.lax.scan(step, carry, (index * save_every + jnp.arange(save_every), noise))
        return carry, carry[0]

    history0 = jnp.broadcast_to(network.node_states(x0)[:, variable], (length, network.n_nodes))
    _, saved = jax.lax.scan(block, (x0, history0, jnp.zeros((), jnp.int32)), jnp.arange(n_steps // save_every))
    return jnp.concatenate([x0[None], saved])


@pytest.mark.parametrize("save_every", [1, 10])
@pytest.mark.parametrize("delayed", [False, True])
def test_chunked_simulation_matches_reference(save_every, delayed):
    rng = np.random.default_rng(5)
    connectivity = rng.uniform(0, 1, (4, 4))
    np.fill_diagonal(connectivity, 0.0)
    network = BrainNetwork(StuartLandau(0, mu=1.0, omega=40.0), connectivity, global_coupling=2.0)
    x0 = jnp.asarray(rng.normal(size=network.state_size), jnp.float32)
    # Lags of 0 to 7 steps. The reference reads its buffer even without delays (all lags 0).
    delays = rng.integers(0, 8, (4, 4)) * 1e-3 if delayed else np.zeros((4, 4))
    # 2400 steps are cut into 12 chunks of 200 steps, so the increments of several chunks are compared.
    n_steps, key = 2400, jax.random.key(6)

    fast = simulate_network(network, x0, 1e-3, n_steps, delays=delays if delayed else None, noise_scale=0.3,
                            key=key, save_every=save_every)
    reference = reference_simulation(network, x0, 1e-3, n_steps, delays, 0.3, key, save_every)
    assert fast.shape == reference.shape == (n_steps // save_every + 1, 8)
    np.testing.assert_allclose(fast, reference, rtol=1e-4, atol=1e-4)
    assert float(jnp.std(fast[1:] - fast[:-1])) > 0.01


def random_delayed_network(coupling: str, seed: int = 7):
    """Five Stuart-Landau nodes with some zero weights and lags of 0 to 12 steps of 1 ms."""
    rng = np.random.default_rng(seed)
    connectivity = rng.uniform(0, 1, (5, 5))
    connectivity[rng.uniform(size=(5, 5)) < 0.3] = 0.0
    np.fill_diagonal(connectivity, 0.0)
    network = BrainNetwork(StuartLandau(0, mu=1.0, omega=40.0), connectivity, coupling=coupling, global_coupling=2.0)
    delays = rng.integers(0, 13, (5, 5)) * 1e-3
    x0 = jnp.asarray(rng.normal(size=network.state_size), jnp.float32)
    return network, delays, x0


@pytest.mark.parametrize("coupling", ["diffusive", "additive"])
def test_blocked_delays_match_single_steps(coupling):
    network, delays, x0 = random_delayed_network(coupling)
    key = jax.random.key(8)

    def run(block_steps):
        return simulate_network(network, x0, 1e-3, 240, delays=delays, noise_scale=0.3, key=key, save_every=2,
                                block_steps=block_steps)

    single = run(1)
    # With lags of 0 to 12 steps, blocks of 3 read most values from before the block and blocks of 12 most inside it.
    for block_steps in (3, 12):
        np.testing.assert_allclose(run(block_steps), single, rtol=1e-5, atol=1e-5, err_msg=f"block of {block_steps}")
    assert float(jnp.std(single[1:] - single[:-1])) > 0.01


def test_blocked_delays_with_traced_connectivity():
    # Under jit with the network as an argument the zero weights are unknown, so every pair is read.
    network, delays, x0 = random_delayed_network("diffusive", seed=9)

    @jax.jit
    def run(network):
        return simulate_network(network, x0, 1e-3, 300, delays=delays, block_steps=10)

    single = simulate_network(network, x0, 1e-3, 300, delays=delays, block_steps=1)
    np.testing.assert_allclose(run(network), single, rtol=1e-5, atol=1e-5)


def test_blocked_gradient_matches_finite_differences():
    network, delays, x0 = random_delayed_network("diffusive", seed=10)

    def mean_square(raw):
        coupled = eqx.tree_at(lambda n: n.global_coupling.raw, network, raw)
        path = simulate_network(coupled, x0.astype(jnp.float64), 1e-3, 120, delays=delays, block_steps=6)
        return jnp.mean(path**2)

    with jax.enable_x64(True):
        raw = jnp.asarray(0.7, jnp.float64)
        gradient = jax.grad(mean_square)(raw)
        h = 1e-6
        numeric = (mean_square(raw + h) - mean_square(raw - h)) / (2 * h)
    assert abs(float(numeric)) > 1e-3
    assert float(gradient) == pytest.approx(float(numeric), rel=1e-6)


def test_network_options_match_drift_euler():
    # Heterogeneous nodes, one input per node and a noise scale per state, against Euler-Maruyama on the
    # network's own drift with the same increments. 8 nodes need no padding of the coupling matrix.
    rng = np.random.default_rng(11)
    n_nodes, n_steps, save_every, dt = 8, 40, 5, 1e-3
    connectivity = rng.uniform(0, 1, (n_nodes, n_nodes))
    np.fill_diagonal(connectivity, 0.0)
    network = BrainNetwork.from_registry(
        "stuart_landau", connectivity, n_nodes, global_coupling=2.0, heterogeneous=True, mu=1.0, omega=40.0
    )
    network = eqx.tree_at(lambda net: net.local.mu.raw, network, jnp.linspace(-1.0, 1.0, n_nodes))
    x0 = jnp.asarray(rng.normal(size=network.state_size), jnp.float32)
    u = jnp.asarray(rng.normal(size=(n_steps, n_nodes)), jnp.float32)
    noise_scale = jnp.linspace(0.1, 0.3, network.state_size)
    key = jax.random.key(12)

    path = simulate_network(network, x0, dt, n_steps, u=u, noise_scale=noise_scale, key=key, save_every=save_every)

    x, expected = x0, [x0]
    for block in range(n_steps // save_every):
        increments = jax.random.normal(jax.random.fold_in(key, block), (save_every, network.state_size)) * np.sqrt(dt)
        for offset in range(save_every):
            step = block * save_every + offset
            x = x + network(step * dt, x, u[step]) * dt + noise_scale * increments[offset]
        expected.append(x)
    assert network.node_inputs
    np.testing.assert_allclose(path, jnp.stack(expected), rtol=1e-5, atol=1e-5)
