"""Neural closures: a mechanistic term replaced by a callable or a network.

The reference drifts below restate the mechanistic equations as they were
before `drift_with` existed, so the default path can be checked bit for bit.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from neuroude.dynamics.hybrid import NeuralClosure
from neuroude.dynamics.mechanistic import FitzHughNagumo, Kuramoto, Lorenz, WilsonCowan
from neuroude.dynamics.mechanistic.wilson_cowan import wilson_cowan_sigmoid
from neuroude.errors import ConfigError

KEY = jax.random.PRNGKey(0)
NO_INPUT = jnp.zeros((0,), jnp.float32)


def random_states(size: int, n: int, scale: float, seed: int = 1) -> jax.Array:
    return scale * jax.random.normal(jax.random.PRNGKey(seed), (n, size), jnp.float32)


def reference_fitzhugh_nagumo(model, x, u):
    v, w = x[0], x[1]
    current = model.i_ext.value + jnp.dot(model.input_gain, u)
    dv = v - v**3 / 3.0 - w + current
    dw = (v + model.a.value - model.b.value * w) / model.tau.value
    return model.time_scale.value * jnp.stack([dv, dw])


def reference_kuramoto(model, x, u):
    mean_cos = jnp.mean(jnp.cos(x))
    mean_sin = jnp.mean(jnp.sin(x))
    coupling_term = mean_sin * jnp.cos(x) - mean_cos * jnp.sin(x)
    return model.omega + model.coupling.value * coupling_term + model.B @ u


def reference_wilson_cowan(model, x, u):
    rate_e, rate_i = x[0], x[1]
    external = model.input_gain @ u
    input_e = model.w_ee.value * rate_e - model.w_ei.value * rate_i + model.drive_e.value + external[0]
    input_i = model.w_ie.value * rate_e - model.w_ii.value * rate_i + model.drive_i.value + external[1]
    gain_e, threshold_e = model.gain_e.value, model.threshold_e.value
    gain_i, threshold_i = model.gain_i.value, model.threshold_i.value
    max_e = 1.0 - jax.nn.sigmoid(-gain_e * threshold_e)
    max_i = 1.0 - jax.nn.sigmoid(-gain_i * threshold_i)
    response_e = wilson_cowan_sigmoid(input_e, gain_e, threshold_e)
    response_i = wilson_cowan_sigmoid(input_i, gain_i, threshold_i)
    d_rate_e = (-rate_e + (max_e - model.refractory_e.value * rate_e) * response_e) / model.tau_e.value
    d_rate_i = (-rate_i + (max_i - model.refractory_i.value * rate_i) * response_i) / model.tau_i.value
    return jnp.stack([d_rate_e, d_rate_i])


# (model, reference drift, state scale). Non-default constants make a swapped constant visible.
MODELS = {
    "fitzhugh_nagumo": (FitzHughNagumo(2, a=0.6, b=0.9, i_ext=0.3), reference_fitzhugh_nagumo, 1.5),
    "kuramoto": (Kuramoto(2, size=6, key=KEY, coupling=7.0), reference_kuramoto, 3.0),
    "wilson_cowan": (WilsonCowan(2, drive_i=0.4), reference_wilson_cowan, 0.3),
}


# -- drift_with on the mechanistic models ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_drift_is_bit_identical(name):
    model, reference, scale = MODELS[name]
    u = jnp.array([0.7, -1.2], jnp.float32)
    for x in random_states(model.state_size, 20, scale):
        expected = np.asarray(reference(model, x, u))
        np.testing.assert_array_equal(np.asarray(model(0.0, x, u)), expected)
        np.testing.assert_array_equal(np.asarray(model.drift_with(0.0, x, u, {})), expected)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_drift_with_rejects_unknown_term(name):
    model, _, _ = MODELS[name]
    x = jnp.zeros(model.state_size, jnp.float32)
    with pytest.raises(ConfigError, match="unknown .* closure terms \\['bogus'\\]"):
        model.drift_with(0.0, x, jnp.zeros(2), {"bogus": jnp.sin})


def test_fitzhugh_nagumo_true_closures_reproduce_drift():
    model, _, _ = MODELS["fitzhugh_nagumo"]
    a, b, tau = model.a.value, model.b.value, model.tau.value
    closures = {
        "recovery": lambda x: (x[0] + a - b * x[1]) / tau,
        "cubic": lambda v: v - v**3 / 3.0,
    }
    u = jnp.array([0.7, -1.2], jnp.float32)
    for x in random_states(2, 20, 1.5):
        expected = np.asarray(model(0.0, x, u))
        for name, closure in closures.items():
            np.testing.assert_array_equal(np.asarray(model.drift_with(0.0, x, u, {name: closure})), expected)
        np.testing.assert_array_equal(np.asarray(model.drift_with(0.0, x, u, closures)), expected)


def test_fitzhugh_nagumo_recovery_closure_sets_dw():
    model, _, _ = MODELS["fitzhugh_nagumo"]
    x = jnp.array([0.4, -0.2], jnp.float32)
    drift = model.drift_with(0.0, x, jnp.zeros(2), {"recovery": lambda state: 3.0 * state[0] * state[1]})
    # dw/dt = k * 3 v w with k = 100 1/s, and dv/dt is untouched.
    np.testing.assert_allclose(float(drift[1]), 100.0 * 3.0 * 0.4 * -0.2, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(drift[0]), np.asarray(model(0.0, x, jnp.zeros(2))[0]))


def test_kuramoto_sine_closure_matches_mean_field():
    model, _, _ = MODELS["kuramoto"]
    u = jnp.array([0.7, -1.2], jnp.float32)
    for x in random_states(6, 20, 3.0):
        # Pairwise and mean-field sums of sin round differently, and the velocities are about 60 rad/s.
        np.testing.assert_allclose(
            np.asarray(model.drift_with(0.0, x, u, {"coupling": jnp.sin})), np.asarray(model(0.0, x, u)), rtol=1e-5, atol=1e-4
        )


def test_kuramoto_coupling_closure_is_pairwise():
    model, _, _ = MODELS["kuramoto"]
    x = jnp.array([0.0, 0.5, 2.0, -1.0, 0.3, 1.1], jnp.float32)
    drift = model.drift_with(0.0, x, jnp.zeros(2), {"coupling": lambda d: d**2})
    theta = np.asarray(x, np.float64)
    expected_coupling = np.mean((theta[None, :] - theta[:, None]) ** 2, axis=1)
    expected = np.asarray(model.omega) + 7.0 * expected_coupling
    np.testing.assert_allclose(np.asarray(drift), expected, rtol=1e-5)


def test_wilson_cowan_true_sigmoid_closure_reproduces_drift():
    model, _, _ = MODELS["wilson_cowan"]
    gains = (model.gain_e.value, model.gain_i.value)
    thresholds = (model.threshold_e.value, model.threshold_i.value)

    def sigmoid_pair(z):
        return jnp.stack([wilson_cowan_sigmoid(z, gains[0], thresholds[0]), wilson_cowan_sigmoid(z, gains[1], thresholds[1])])

    u = jnp.array([0.7, -1.2], jnp.float32)
    for x in random_states(2, 20, 0.3):
        np.testing.assert_array_equal(
            np.asarray(model.drift_with(0.0, x, u, {"sigmoid": sigmoid_pair})), np.asarray(model(0.0, x, u))
        )


# -- NeuralClosure ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "available"),
    [("fitzhugh_nagumo", "['cubic', 'recovery']"), ("kuramoto", "['coupling']"), ("wilson_cowan", "['sigmoid']")],
)
def test_closure_rejects_unknown_term(name, available):
    model, _, _ = MODELS[name]
    with pytest.raises(ConfigError) as error:
        NeuralClosure(model, "bogus", key=KEY)
    message = str(error.value)
    assert "'bogus'" in message
    assert type(model).__name__ in message
    assert available in message


def test_closure_rejects_model_without_terms():
    with pytest.raises(ConfigError, match="Lorenz drift has no terms"):
        NeuralClosure(Lorenz(), "x", key=KEY)


@pytest.mark.parametrize(("width", "depth"), [(0, 2), (8, -1), (8.0, 2)])
def test_closure_rejects_bad_network_size(width, depth):
    with pytest.raises(ConfigError, match="closure (width|depth)"):
        NeuralClosure(FitzHughNagumo(), "recovery", width, depth, key=KEY)


@pytest.mark.parametrize(
    ("name", "term", "term_input_shape", "term_output_shape"),
    [
        ("fitzhugh_nagumo", "recovery", (5, 2), (5,)),
        ("fitzhugh_nagumo", "cubic", (5,), (5,)),
        ("kuramoto", "coupling", (3, 4), (3, 4)),
        ("wilson_cowan", "sigmoid", (7,), (7, 2)),
    ],
)
def test_closure_shapes(name, term, term_input_shape, term_output_shape):
    model, _, scale = MODELS[name]
    closure = NeuralClosure(model, term, 8, 2, key=KEY)
    assert closure.state_size == model.state_size

    u = jnp.array([0.7, -1.2], jnp.float32)
    states = random_states(model.state_size, 4, scale)
    drifts = jax.jit(jax.vmap(lambda x: closure(0.0, x, u)))(states)
    assert drifts.shape == (4, model.state_size)
    assert drifts.dtype == jnp.float32
    assert closure.closure_term(jnp.zeros(term_input_shape)).shape == term_output_shape


def test_closure_term_rejects_wrong_shape():
    closure = NeuralClosure(FitzHughNagumo(), "recovery", 8, 1, key=KEY)
    with pytest.raises(ConfigError, match="shape \\(5, 3\\)"):
        closure.closure_term(jnp.zeros((5, 3)))


def test_closure_starts_without_the_term():
    model = FitzHughNagumo(0)
    closure = NeuralClosure(model, "recovery", 8, 2, key=KEY)
    x = jnp.array([0.4, -0.2], jnp.float32)
    drift = closure(0.0, x, NO_INPUT)
    assert float(drift[1]) == 0.0
    np.testing.assert_array_equal(np.asarray(drift[0]), np.asarray(model(0.0, x, NO_INPUT)[0]))


def perturbed(closure: NeuralClosure, seed: int = 3) -> NeuralClosure:
    """Give the zero-initialised last layer random weights, so every layer gets a gradient."""
    last = closure.network.layers[-1]
    k_weight, k_bias = jax.random.split(jax.random.PRNGKey(seed))
    weight = 0.3 * jax.random.normal(k_weight, last.weight.shape, jnp.float32)
    bias = 0.3 * jax.random.normal(k_bias, last.bias.shape, jnp.float32)
    return eqx.tree_at(lambda c: (c.network.layers[-1].weight, c.network.layers[-1].bias), closure, (weight, bias))


def test_recovery_closure_drives_dw():
    closure = perturbed(NeuralClosure(FitzHughNagumo(0), "recovery", 8, 2, key=KEY))
    states = random_states(2, 10, 1.5)
    drifts = jax.vmap(lambda x: closure(0.0, x, NO_INPUT))(states)
    np.testing.assert_allclose(np.asarray(drifts[:, 1]), 100.0 * np.asarray(closure.closure_term(states)), rtol=1e-5)


def test_coupling_closure_is_periodic():
    closure = perturbed(NeuralClosure(MODELS["kuramoto"][0], "coupling", 8, 2, key=KEY))
    differences = jnp.linspace(-3.0, 3.0, 13, dtype=jnp.float32)
    values = closure.closure_term(differences)
    assert float(jnp.std(values)) > 1e-3
    np.testing.assert_allclose(np.asarray(closure.closure_term(differences + 2 * jnp.pi)), np.asarray(values), atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_reach_closure_network(name):
    model, _, scale = MODELS[name]
    term = {"fitzhugh_nagumo": "recovery", "kuramoto": "coupling", "wilson_cowan": "sigmoid"}[name]
    closure = perturbed(NeuralClosure(model, term, 8, 2, key=KEY))
    u = jnp.array([0.7, -1.2], jnp.float32)
    x = random_states(model.state_size, 1, scale)[0]

    gradient = eqx.filter_grad(lambda c: jnp.sum(c(0.0, x, u)))(closure)
    bias_gradient = np.asarray(gradient.network.layers[-1].bias)
    # The drift is linear in the last bias b of the network: d(sum of drift)/db follows from the equations.
    if name == "fitzhugh_nagumo":
        expected = [100.0]  # dw/dt = k * (W h + b) with k = 100 1/s
    elif name == "kuramoto":
        expected = [6 * 7.0]  # each of 6 phase velocities has K * mean_j(W h_ij + b), K = 7 rad/s
    else:
        rate_e, rate_i = float(x[0]), float(x[1])
        max_e = 1.0 - float(jax.nn.sigmoid(-1.3 * 4.0))
        max_i = 1.0 - float(jax.nn.sigmoid(-2.0 * 3.7))
        expected = [(max_e - rate_e) / 0.01, (max_i - rate_i) / 0.01]
    np.testing.assert_allclose(bias_gradient, expected, rtol=1e-4)

    for layer in gradient.network.layers:
        assert float(jnp.max(jnp.abs(layer.weight))) > 0.0


# -- fitting the recovery term ---------------------------------------------------------------------------

# Relative L2 error of the fitted recovery term on held-out limit-cycle states.
# Measured 0.0039, 0.0042 and 0.0057 with network seeds 2, 1 and 0 (float32, CPU), so 0.02 leaves a margin of 3x.
RECOVERY_TOLERANCE = 0.02


def limit_cycle_states(model: FitzHughNagumo) -> jax.Array:
    """Integrate with RK4 (1 ms steps) for 2 s and keep the last second: about 2.5 cycles of the 0.395 s period."""
    step = 1e-3

    def drift(x):
        return model(0.0, x, NO_INPUT)

    def rk4_step(x, _):
        k1 = drift(x)
        k2 = drift(x + 0.5 * step * k1)
        k3 = drift(x + 0.5 * step * k2)
        k4 = drift(x + step * k3)
        x = x + step / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return x, x

    _, path = jax.lax.scan(rk4_step, jnp.zeros(2, jnp.float32), None, length=2000)
    return path[1000:]


def test_fitted_recovery_closure_matches_true_term():
    # i_ext = 0.5 puts FitzHugh-Nagumo on a limit cycle; at the default 0 it rests at a fixed point.
    model = FitzHughNagumo(0, i_ext=0.5)
    states = limit_cycle_states(model)
    v = np.asarray(states[:, 0])
    assert v.max() - v.min() > 3.0, "the states should span the relaxation oscillation of v"

    train, held_out = states[::4], states[2::4]
    target = jax.vmap(lambda x: model(0.0, x, NO_INPUT))(train)
    closure = NeuralClosure(model, "recovery", 32, 2, key=jax.random.PRNGKey(0))
    network_params, network_static = eqx.partition(closure.network, eqx.is_inexact_array)

    def loss(params):
        fitted = eqx.tree_at(lambda c: c.network, closure, eqx.combine(params, network_static))
        drifts = jax.vmap(lambda x: fitted(0.0, x, NO_INPUT))(train)
        # Divide by the time scale k = 100 1/s so the loss is in dimensionless units.
        return jnp.mean(((drifts - target) / 100.0) ** 2)

    optimiser = optax.adam(1e-2)

    @jax.jit
    def update(params, state):
        gradient = jax.grad(loss)(params)
        updates, state = optimiser.update(gradient, state)
        return optax.apply_updates(params, updates), state

    params, state = network_params, optimiser.init(network_params)
    for _ in range(500):
        params, state = update(params, state)

    fitted = eqx.tree_at(lambda c: c.network, closure, eqx.combine(params, network_static))
    held_v, held_w = held_out[:, 0], held_out[:, 1]
    true_term = (held_v + 0.7 - 0.8 * held_w) / 12.5
    learned_term = fitted.closure_term(held_out)
    relative_error = float(jnp.linalg.norm(learned_term - true_term) / jnp.linalg.norm(true_term))
    assert relative_error < RECOVERY_TOLERANCE
