"""Behaviour of the whole-brain network of coupled local models.

The coupling is checked against an explicit double loop over node pairs in
numpy, and the uncoupled network against the local model called node by node.
The gradient is compared with central finite differences in float64, and
diffusive coupling is checked by the synchronisation of two Stuart-Landau
oscillators.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.dynamics.mechanistic.fitzhugh_nagumo import FitzHughNagumo
from neuroude.dynamics.mechanistic.jansen_rit import JansenRit
from neuroude.dynamics.mechanistic.network import BrainNetwork, check_connectivity
from neuroude.dynamics.mechanistic.stuart_landau import StuartLandau
from neuroude.dynamics.mechanistic.wilson_cowan import WilsonCowan
from neuroude.dynamics.parameters import trainable_filter
from neuroude.errors import ConfigError
from neuroude.solve import solve_fixed_step

N_NODES = 5

# Local models with their state scale, so random states sit in the usual range.
LOCAL_MODELS = {
    "stuart_landau": (lambda inputs: StuartLandau(inputs), 1.0),
    "wilson_cowan": (lambda inputs: WilsonCowan(inputs), 0.3),
    "jansen_rit": (lambda inputs: JansenRit(inputs), 10.0),
    "fitzhugh_nagumo": (lambda inputs: FitzHughNagumo(inputs), 1.0),
}


def random_connectome(n_nodes: int, seed: int = 0) -> np.ndarray:
    """Return a random non-negative N x N weight matrix with a zero diagonal and about a third of entries 0."""
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.1, 1.0, size=(n_nodes, n_nodes)) * (rng.uniform(size=(n_nodes, n_nodes)) > 0.3)
    np.fill_diagonal(weights, 0.0)
    return weights


def reference_coupling(weights: np.ndarray, sent: np.ndarray, strength: float, coupling: str) -> np.ndarray:
    """Return `G sum_j C_ij (x_j - x_i)` (diffusive) or `G sum_j C_ij x_j` (additive) by an explicit loop."""
    n_nodes = len(sent)
    result = np.zeros(n_nodes)
    for i in range(n_nodes):
        for j in range(n_nodes):
            if coupling == "diffusive":
                result[i] += weights[i, j] * (sent[j] - sent[i])
            else:
                result[i] += weights[i, j] * sent[j]
    return strength * result


def array_leaves(tree) -> list:
    return [leaf for leaf in jax.tree_util.tree_leaves(tree) if eqx.is_array(leaf)]


def to_float64(tree):
    return jax.tree_util.tree_map(lambda leaf: leaf.astype(jnp.float64) if eqx.is_inexact_array(leaf) else leaf, tree)


def simulate(network, x0, step: float, n_steps: int, method: str = "euler"):
    """Integrate `dx/dt = network(t, x, 0)` without noise for `n_steps` steps and return x0 with every later state."""
    no_input = jnp.zeros((0,), x0.dtype)

    def fields(t, x, k, frac):
        return network(t, x, no_input), jnp.zeros_like(x), jnp.zeros((), x.dtype)

    path, _ = solve_fixed_step(fields, x0, 0.0, step, n_steps + 1, 1, None, method)
    return path


# -- shape and construction ----------------------------------------------------


def test_network_sizes_and_observable():
    network = BrainNetwork(WilsonCowan(2), random_connectome(N_NODES), coupling_variable=0)

    assert network.state_size == 2 * N_NODES
    assert network.n_nodes == N_NODES
    assert network.observable == (0, 2, 4, 6, 8)
    assert network.input_size == 2

    x = jnp.arange(2 * N_NODES, dtype=jnp.float32)
    states = network.node_states(x)
    assert states.shape == (N_NODES, 2)
    np.testing.assert_array_equal(np.asarray(states[:, 0]), np.asarray(x[jnp.array(network.observable)]))


@pytest.mark.parametrize("heterogeneous", [False, True])
def test_network_leaves_are_strong_float32(heterogeneous):
    network = BrainNetwork.from_registry(
        "jansen_rit", random_connectome(N_NODES), 1, jax.random.PRNGKey(0), heterogeneous=heterogeneous
    )
    leaves = array_leaves(network)

    assert leaves
    for leaf in leaves:
        assert leaf.dtype == jnp.float32
        assert not leaf.weak_type
    x = jnp.full((network.state_size,), 0.1, jnp.float32)
    drift = network(0.0, x, jnp.ones((1,), jnp.float32))
    assert drift.dtype == jnp.float32
    assert not drift.weak_type


def test_connectivity_frozen_and_coupling_learnable():
    network = BrainNetwork(StuartLandau(1), random_connectome(N_NODES), frozen=("omega",))
    spec = trainable_filter(network)

    assert spec.connectivity.raw is False
    assert spec.global_coupling.raw is True
    assert spec.local.omega.raw is False
    assert spec.local.mu.raw is True

    frozen_coupling = BrainNetwork(StuartLandau(1), random_connectome(N_NODES), frozen=("global_coupling",))
    assert trainable_filter(frozen_coupling).global_coupling.raw is False


def test_frozen_local_constant_keeps_value():
    local = StuartLandau(0, mu=0.7, omega=30.0)
    network = BrainNetwork(local, random_connectome(3), frozen=("mu", "omega"))

    assert float(network.local.mu.value) == pytest.approx(0.7, rel=1e-6)
    assert float(network.local.omega.value) == pytest.approx(30.0, rel=1e-6)
    assert network.local.mu.learnable is False


def test_heterogeneous_stacks_one_copy_per_node():
    shared = BrainNetwork(StuartLandau(1), random_connectome(N_NODES))
    separate = BrainNetwork(StuartLandau(1), random_connectome(N_NODES), heterogeneous=True)

    assert separate.local.mu.raw.shape == (N_NODES,)
    assert separate.local.input_gain.shape == (N_NODES, 1)
    n_shared = sum(leaf.size for leaf in array_leaves(eqx.filter(shared, trainable_filter(shared))))
    n_separate = sum(leaf.size for leaf in array_leaves(eqx.filter(separate, trainable_filter(separate))))
    # mu, omega and one input weight per node, plus G.
    assert n_shared == 3 + 1
    assert n_separate == 3 * N_NODES + 1


def test_heterogeneous_nodes_use_their_own_constants():
    weights = random_connectome(N_NODES)
    network = BrainNetwork(StuartLandau(0), weights, heterogeneous=True, global_coupling=0.0)
    omegas = np.linspace(10.0, 50.0, N_NODES)
    network = eqx.tree_at(
        lambda net: net.local.omega.raw, network, jnp.asarray(np.log(np.expm1(omegas)), dtype=jnp.float32)
    )
    x = jax.random.normal(jax.random.PRNGKey(1), (2 * N_NODES,), jnp.float32)

    drift = network.node_states(network(0.0, x, jnp.zeros((0,), jnp.float32)))

    states = np.asarray(network.node_states(x))
    for node in range(N_NODES):
        expected = StuartLandau(0, omega=float(omegas[node]))(0.0, jnp.asarray(states[node]), jnp.zeros((0,)))
        np.testing.assert_allclose(np.asarray(drift[node]), np.asarray(expected), rtol=1e-5, atol=1e-4)


# -- drift ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(LOCAL_MODELS))
@pytest.mark.parametrize("heterogeneous", [False, True])
def test_zero_coupling_equals_independent_nodes(name, heterogeneous):
    build, scale = LOCAL_MODELS[name]
    local = build(2)
    network = BrainNetwork(local, random_connectome(N_NODES), global_coupling=0.0, heterogeneous=heterogeneous)
    x = scale * jax.random.normal(jax.random.PRNGKey(2), (network.state_size,), jnp.float32)
    u = jnp.array([0.3, -0.8], jnp.float32)

    drift = network.node_states(network(0.1, x, u))

    assert float(network.global_coupling.value) == 0.0
    for node, state in enumerate(network.node_states(x)):
        expected = local(0.1, state, u)
        np.testing.assert_allclose(np.asarray(drift[node]), np.asarray(expected), rtol=1e-6, atol=1e-6 * scale)


def test_node_inputs_drive_one_node_each():
    local = StuartLandau(1)
    network = BrainNetwork(local, random_connectome(N_NODES), global_coupling=0.0, node_inputs=True)
    x = jax.random.normal(jax.random.PRNGKey(3), (network.state_size,), jnp.float32)
    u = jnp.arange(1.0, N_NODES + 1.0, dtype=jnp.float32)

    drift = network.node_states(network(0.0, x, u))

    assert network.input_size == N_NODES
    for node, state in enumerate(network.node_states(x)):
        expected = local(0.0, state, u[node : node + 1])
        np.testing.assert_allclose(np.asarray(drift[node]), np.asarray(expected), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("coupling", ["diffusive", "additive"])
@pytest.mark.parametrize(
    ("name", "coupling_variable", "target_variable"),
    [("stuart_landau", 0, None), ("wilson_cowan", 0, 1), ("jansen_rit", 0, 4), ("fitzhugh_nagumo", 0, None)],
)
def test_drift_matches_coupling_formula(coupling, name, coupling_variable, target_variable):
    build, scale = LOCAL_MODELS[name]
    local = build(1)
    weights = random_connectome(N_NODES, seed=4)
    strength = 0.8
    network = BrainNetwork(
        local, weights, coupling_variable, coupling, strength, target_variable=target_variable
    )
    x = scale * jax.random.normal(jax.random.PRNGKey(5), (network.state_size,), jnp.float32)
    u = jnp.array([0.4], jnp.float32)

    drift = np.asarray(network.node_states(network(0.0, x, u)))

    states = np.asarray(network.node_states(x), dtype=np.float64)
    local_drifts = [np.asarray(local(0.0, jnp.asarray(state, jnp.float32), u)) for state in states]
    expected = np.stack(local_drifts).astype(np.float64)
    target = coupling_variable if target_variable is None else target_variable
    expected[:, target] += reference_coupling(weights, states[:, coupling_variable], strength, coupling)
    # float32 rounding of the drift, relative to the largest term in each column.
    column_scale = np.max(np.abs(expected), axis=0, keepdims=True) + 1.0
    np.testing.assert_allclose(drift / column_scale, expected / column_scale, rtol=0, atol=1e-5)


def test_diffusive_coupling_vanishes_on_equal_states():
    network = BrainNetwork(StuartLandau(0), random_connectome(N_NODES), global_coupling=3.0)
    x = jnp.tile(jnp.array([0.6, -0.2], jnp.float32), N_NODES)

    np.testing.assert_allclose(np.asarray(network.coupling_input(x)), 0.0, atol=1e-6)


def test_network_drift_runs_under_jit():
    network = BrainNetwork(StuartLandau(1), random_connectome(N_NODES), global_coupling=0.5)
    x = jax.random.normal(jax.random.PRNGKey(6), (network.state_size,), jnp.float32)
    u = jnp.ones((1,), jnp.float32)

    jitted = eqx.filter_jit(lambda net, x, u: net(0.0, x, u))(network, x, u)

    np.testing.assert_allclose(np.asarray(jitted), np.asarray(network(0.0, x, u)), rtol=1e-5, atol=1e-5)


# -- dynamics and gradients ----------------------------------------------------


def test_gradient_of_coupling_matches_finite_differences():
    with jax.enable_x64(True):
        network = BrainNetwork(StuartLandau(0), random_connectome(N_NODES, seed=7), global_coupling=0.5)
        network = to_float64(network)
        phases = np.linspace(0.0, math.pi, N_NODES)
        x0 = jnp.asarray(np.stack([np.cos(phases), np.sin(phases)], axis=1).reshape(-1), dtype=jnp.float64)

        def loss(raw_coupling):
            net = eqx.tree_at(lambda n: n.global_coupling.raw, network, raw_coupling)
            path = simulate(net, x0, 1e-3, 200)
            # Power of the summed signal: it grows as the nodes synchronise, so it depends on G.
            summed = jnp.sum(path[:, jnp.array(net.observable)], axis=1)
            return jnp.mean(summed**2)

        raw = network.global_coupling.raw
        gradient = float(jax.grad(loss)(raw))
        epsilon = 1e-5
        finite_difference = float((loss(raw + epsilon) - loss(raw - epsilon)) / (2.0 * epsilon))

    # The measured gradient is 0.077, so the coupling does move the loss.
    assert abs(gradient) > 1e-2
    # Central differences in float64 with epsilon 1e-5 agree to about 1e-10 relative here, so 1e-6 leaves margin.
    assert gradient == pytest.approx(finite_difference, rel=1e-6)


def phase_difference(path: np.ndarray) -> np.ndarray:
    """Return the wrapped phase difference between the two Stuart-Landau nodes of each state in `path`."""
    z1 = path[:, 0] + 1j * path[:, 1]
    z2 = path[:, 2] + 1j * path[:, 3]
    return np.angle(z1 * np.conj(z2))


@pytest.mark.parametrize(("strength", "synchronises"), [(5.0, True), (0.0, False)])
def test_diffusive_coupling_synchronises_two_oscillators(strength, synchronises):
    network = BrainNetwork(StuartLandau(0), np.array([[0.0, 1.0], [1.0, 0.0]]), global_coupling=strength)
    start = math.pi / 2
    x0 = jnp.array([1.0, 0.0, math.cos(start), -math.sin(start)], jnp.float32)

    path = np.asarray(simulate(network, x0, 1e-3, 2000, method="heun"))
    difference = phase_difference(path)

    assert difference[0] == pytest.approx(start, abs=1e-6)
    if synchronises:
        # The phase difference decays about as exp(-G t), because only x is coupled. It is 9e-5 rad after 2 s at G = 5.
        assert abs(difference[-1]) < 1e-3
    else:
        # Identical uncoupled nodes turn at the same rate, so only float32 rounding moves the difference.
        assert abs(difference[-1] - start) < 1e-3
    # The oscillation survives the coupling: the radius dips during synchronisation and relaxes back towards 1.
    radius = np.hypot(path[-1, 0::2], path[-1, 1::2])
    assert np.all(radius > 0.95)
    assert np.all(radius < 1.01)


# -- registry helper -----------------------------------------------------------


@pytest.mark.parametrize("name", ["stuart_landau", "wilson_cowan", "jansen_rit", "fitzhugh_nagumo", "hodgkin_huxley"])
def test_from_registry_builds_every_fixed_size_model(name):
    network = BrainNetwork.from_registry(name, random_connectome(3), 2, jax.random.PRNGKey(0))
    x = jnp.zeros((network.state_size,), jnp.float32)

    drift = network(0.0, x, jnp.ones((2,), jnp.float32))

    assert drift.shape == (network.state_size,)
    assert network.node_inputs is False
    assert network.input_size == 2


def test_from_registry_passes_constants_and_node_inputs():
    network = BrainNetwork.from_registry(
        "stuart_landau", random_connectome(3), 3, None, frozen=("omega", "global_coupling"), mu=0.4, omega=20.0
    )

    assert network.node_inputs is True
    assert network.local.input_gain.shape == (1,)
    assert float(network.local.mu.value) == pytest.approx(0.4, rel=1e-6)
    assert network.local.omega.learnable is False
    assert network.global_coupling.learnable is False


def test_from_registry_rejects_models_without_fixed_size():
    with pytest.raises(ConfigError, match="rate_network.*fixed state size"):
        BrainNetwork.from_registry("rate_network", random_connectome(3), 1, jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match="unknown mechanistic model"):
        BrainNetwork.from_registry("stuart_landou", random_connectome(3), 1, None)


# -- validation ----------------------------------------------------------------


def test_connectivity_rejects_non_square():
    with pytest.raises(ConfigError, match=r"connectivity has shape \(3, 4\); expected a square"):
        check_connectivity(np.zeros((3, 4)))
    with pytest.raises(ConfigError, match=r"connectivity has shape \(3,\)"):
        check_connectivity(np.zeros(3))


def test_connectivity_rejects_negative_entries():
    weights = random_connectome(4)
    weights[2, 1] = -0.5

    with pytest.raises(ConfigError, match=r"1 negative entries, the first at \[2, 1\] = -0.5"):
        BrainNetwork(StuartLandau(0), weights)


def test_connectivity_rejects_nan_and_inf():
    weights = random_connectome(4)
    weights[0, 3] = np.nan
    weights[1, 2] = np.inf

    with pytest.raises(ConfigError, match=r"2 non-finite entries .*\[0, 3\] = nan"):
        BrainNetwork(StuartLandau(0), weights)


def test_connectivity_rejects_self_connections():
    weights = random_connectome(4)
    weights[1, 1] = 0.2

    with pytest.raises(ConfigError, match=r"non-zero diagonal entries, the first at \[1, 1\] = 0.2"):
        BrainNetwork(StuartLandau(0), weights)


def test_connectivity_rejects_non_numeric():
    with pytest.raises(ConfigError, match="connectivity could not be read as a numeric matrix"):
        check_connectivity([["a", "b"], ["c", "d"]])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"coupling_variable": 2}, "coupling_variable is 2; expected an integer in \\[0, 1\\]"),
        ({"target_variable": -1}, "target_variable is -1"),
        ({"coupling": "linear"}, "coupling is 'linear'; expected one of"),
        ({"global_coupling": -1.0}, "global_coupling is -1.0; expected a finite number >= 0"),
        ({"frozen": ("tau",)}, r"frozen names \['tau'\] are neither network constants \['conduction_speed', 'glo"),
        ({"node_inputs": True}, "node_inputs is True but the local model takes 2 inputs"),
    ],
)
def test_network_rejects_invalid_arguments(arguments, message):
    with pytest.raises(ConfigError, match=message):
        BrainNetwork(StuartLandau(2), random_connectome(3), **arguments)
