"""Sparse regression (STLSQ) over candidate libraries, and sampling the learned term of a grey-box model."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from conftest import tiny_config, tiny_recording
from neuroude.analysis.symbolic import (
    CandidateLibrary,
    evaluate_learned_term,
    fit_symbolic,
    recover_learned_term,
    stlsq,
)
from neuroude.build import build_model
from neuroude.dynamics.hybrid import NeuralClosure, ResidualDrift
from neuroude.dynamics.mechanistic.fitzhugh_nagumo import FitzHughNagumo
from neuroude.dynamics.mechanistic.kuramoto import Kuramoto
from neuroude.dynamics.mechanistic.wilson_cowan import WilsonCowan
from neuroude.dynamics.neural import NeuralDrift
from neuroude.errors import ConfigError, DataError

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0

# Nonzero coefficients of the Lorenz right-hand side over the monomials of (x, y, z).
LORENZ_TERMS = [
    {"x": -SIGMA, "y": SIGMA},
    {"x": RHO, "y": -1.0, "x*z": -1.0},
    {"z": -BETA, "x*y": 1.0},
]


def lorenz_rhs(state):
    x, y, z = state.T
    return np.stack([SIGMA * (y - x), x * (RHO - z) - y, x * y - BETA * z], axis=1)


@pytest.fixture(scope="module")
def lorenz_samples():
    solution = solve_ivp(lambda t, s: lorenz_rhs(s[None])[0], (0.0, 20.0), [1.0, 1.0, 1.0],
                         t_eval=np.linspace(0.0, 20.0, 4000), rtol=1e-9, atol=1e-9)
    states = solution.y.T[200:]
    return states, lorenz_rhs(states)


def test_polynomial_library_names():
    library = CandidateLibrary.polynomial(["v", "w"], 2, input_names=["u"])
    # Monomials of (v, w, u) up to degree 2 without u^2.
    assert library.term_names == ("1", "v", "w", "u", "v^2", "v*w", "v*u", "w^2", "w*u")


def test_library_evaluates_named_functions():
    library = CandidateLibrary.polynomial(["v", "w"], 1).with_functions({"tanh": None, "cube": lambda z: z**3}, ["v"])
    samples = np.array([[0.5, 2.0], [-1.0, 3.0]])
    theta = library.evaluate(samples)
    assert library.term_names == ("1", "v", "w", "tanh(v)", "cube(v)")
    np.testing.assert_allclose(theta[:, 3], np.tanh(samples[:, 0]))
    np.testing.assert_allclose(theta[:, 4], samples[:, 0] ** 3)


def test_lorenz_recovered_from_clean_samples(lorenz_samples):
    states, rates = lorenz_samples
    library = CandidateLibrary.polynomial(["x", "y", "z"], 2)
    fit = fit_symbolic(states, rates, library, ["dx/dt", "dy/dt", "dz/dt"], threshold=0.01)

    for target, expected in enumerate(LORENZ_TERMS):
        active = fit.active_terms(target)
        assert set(active) == set(expected), fit.equation(target)
        for name, value in expected.items():
            assert active[name] == pytest.approx(value, rel=0.01), fit.equation(target)
    np.testing.assert_array_less(0.999999, fit.r_squared)


def test_lorenz_recovered_from_noisy_samples(lorenz_samples):
    states, rates = lorenz_samples
    rng = np.random.default_rng(1)
    # Noise of 1 % of each state's and 2 % of each target's standard deviation. Noise on the states biases
    # least squares (errors in variables): at 2 % it brings in spurious terms, because the monomials of (x, y, z)
    # are nearly collinear on the attractor.
    noisy_states = states + 0.01 * states.std(axis=0) * rng.normal(size=states.shape)
    noisy_rates = rates + 0.02 * rates.std(axis=0) * rng.normal(size=rates.shape)
    library = CandidateLibrary.polynomial(["x", "y", "z"], 2)
    fit = fit_symbolic(noisy_states, noisy_rates, library, threshold=0.05)

    for target, expected in enumerate(LORENZ_TERMS):
        active = fit.active_terms(target)
        assert set(active) == set(expected), fit.equation(target)
        for name, value in expected.items():
            assert active[name] == pytest.approx(value, rel=0.03), fit.equation(target)
    assert np.all(fit.r_squared > 0.99)


def test_threshold_removes_small_term():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 1))
    target = 2.0 * z[:, 0] + 0.01 * z[:, 0] ** 2
    library = CandidateLibrary.polynomial(["z"], 2)
    # The z^2 term contributes about 1 % of the target's root mean square.
    assert set(fit_symbolic(z, target, library, threshold=0.05).active_terms()) == {"z"}
    assert set(fit_symbolic(z, target, library, threshold=0.001).active_terms()) == {"z", "z^2"}


def test_stlsq_is_scale_free():
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(300, 3)) * np.array([1.0, 1e3, 1e-3])
    coefficients = np.array([[2.0], [0.0], [5e2]])
    targets = theta @ coefficients
    np.testing.assert_allclose(stlsq(theta, targets, threshold=0.05), coefficients, rtol=1e-5, atol=1e-9)


def test_equation_text():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(200, 2))
    target = 0.5 + 2.0 * samples[:, 0] - 0.25 * samples[:, 1]
    fit = fit_symbolic(samples, target, CandidateLibrary.polynomial(["v", "w"], 2), ["g"])
    assert fit.equation(precision=3) == "g = 0.5 + 2 v - 0.25 w"
    assert "held-out R^2 1.0000" in str(fit)


def test_empty_library_rejected():
    library = CandidateLibrary(("z",), (), ())
    with pytest.raises(ConfigError, match="library is empty"):
        fit_symbolic(np.ones((50, 1)), np.ones(50), library)


def test_nan_samples_rejected():
    samples = np.random.default_rng(0).normal(size=(50, 2))
    samples[3, 1] = np.nan
    with pytest.raises(DataError, match="samples contain 1 NaN"):
        fit_symbolic(samples, np.ones(50), CandidateLibrary.polynomial(["v", "w"], 1))


def test_nan_targets_rejected():
    targets = np.ones(50)
    targets[0] = np.inf
    with pytest.raises(DataError, match="targets contain 1 NaN or infinite"):
        fit_symbolic(np.ones((50, 2)), targets, CandidateLibrary.polynomial(["v", "w"], 1))


@pytest.mark.parametrize(
    "samples, targets, pattern",
    [
        (np.ones((50, 3)), np.ones(50), r"samples have shape \(50, 3\); expected \(samples, 2\)"),
        (np.ones(50), np.ones(50), r"samples have shape \(50,\)"),
        (np.ones((50, 2)), np.ones(40), r"targets have shape \(40, 1\); expected \(50,\)"),
    ],
)
def test_mismatched_shapes_rejected(samples, targets, pattern):
    with pytest.raises(DataError, match=pattern):
        fit_symbolic(samples, targets, CandidateLibrary.polynomial(["v", "w"], 1))


def test_too_few_samples_rejected():
    library = CandidateLibrary.polynomial(["v", "w"], 3)
    with pytest.raises(DataError, match="expected at least 10"):
        fit_symbolic(np.random.default_rng(0).normal(size=(8, 2)), np.ones(8), library)


@pytest.mark.parametrize(
    "settings, pattern",
    [({"threshold": -0.1}, "threshold is -0.1"), ({"ridge": float("nan")}, "ridge is nan"),
     ({"heldout_fraction": 1.0}, "heldout_fraction is 1.0"), ({"target_names": ["a", "b"]}, "target_names has 2")],
)
def test_bad_settings_rejected(settings, pattern):
    samples = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ConfigError, match=pattern):
        fit_symbolic(samples, samples[:, 0], CandidateLibrary.polynomial(["v", "w"], 1), **settings)


def test_library_errors():
    with pytest.raises(ConfigError, match="degree is 0"):
        CandidateLibrary.polynomial(["v"], 0)
    with pytest.raises(ConfigError, match="no variables"):
        CandidateLibrary.polynomial([], 2)
    with pytest.raises(ConfigError, match="nonlinearity 'softsign' is not known"):
        CandidateLibrary.polynomial(["v"], 1).with_functions({"softsign": None})
    with pytest.raises(ConfigError, match=r"variables \['q'\] are not in the library"):
        CandidateLibrary.polynomial(["v"], 1).with_functions({"tanh": None}, ["q"])
    with pytest.raises(ConfigError, match="appear more than once"):
        CandidateLibrary(("v",), ("v", "v"), (np.sin, np.cos))


def test_zero_column_rejected():
    samples = np.zeros((50, 1))
    with pytest.raises(DataError, match=r"library columns \[1\] are zero"):
        fit_symbolic(samples, np.ones(50), CandidateLibrary.polynomial(["z"], 1))


# --- learned terms of grey-box models ---

RECOVERY = {"v": 0.08, "w": -0.064, "1": 0.056}


def linear_recovery_closure():
    """A FitzHugh-Nagumo recovery closure whose network is the linear map 0.08 v - 0.064 w + 0.056."""
    closure = NeuralClosure(FitzHughNagumo(input_size=1, time_scale=1.0), "recovery", depth=0, key=jax.random.PRNGKey(0))
    layer = closure.network.layers[0]
    weight = jnp.array([[RECOVERY["v"], RECOVERY["w"]]], jnp.float32).reshape(layer.weight.shape)
    bias = jnp.asarray(RECOVERY["1"], jnp.float32).reshape(layer.bias.shape)
    return eqx.tree_at(lambda c: (c.network.layers[0].weight, c.network.layers[0].bias), closure, (weight, bias))


def test_closure_samples_read_term_inputs():
    closure = linear_recovery_closure()
    states = np.random.default_rng(0).normal(size=(30, 2))
    samples = evaluate_learned_term(closure, states, np.zeros((30, 1)), ("v", "w"))

    assert samples.variable_names == ("v", "w")
    assert samples.output_names == ("recovery",)
    np.testing.assert_allclose(samples.inputs, states, rtol=1e-6)
    expected = RECOVERY["v"] * states[:, 0] + RECOVERY["w"] * states[:, 1] + RECOVERY["1"]
    np.testing.assert_allclose(samples.outputs[:, 0], expected, rtol=1e-5, atol=1e-7)


def test_closure_of_scalar_term_named_z():
    closure = NeuralClosure(FitzHughNagumo(input_size=1), "cubic", width=4, depth=1, key=jax.random.PRNGKey(0))
    states = np.random.default_rng(0).normal(size=(20, 2))
    samples = evaluate_learned_term(closure, states, np.zeros((20, 1)))
    # The cubic term reads v alone.
    assert samples.variable_names == ("z",)
    np.testing.assert_allclose(samples.inputs[:, 0], states[:, 0], rtol=1e-6)


def test_closure_recovered_from_posterior_paths():
    config = tiny_config(model={"drift": "fitzhugh_nagumo", "closure": "recovery", "constants": {"time_scale": 1.0},
                                "encoder": "identity"})
    recording = tiny_recording(n_trials=4)
    model = build_model(config, recording.n_channels, recording.n_inputs, jax.random.PRNGKey(0), 0.5)
    model = eqx.tree_at(lambda m: m.sde.drift, model, linear_recovery_closure())

    fit = recover_learned_term(model, recording, jax.random.PRNGKey(1), degree=2, state_names=("v", "w"))
    active = fit.active_terms()
    assert set(active) == set(RECOVERY), str(fit)
    for name, value in RECOVERY.items():
        assert active[name] == pytest.approx(value, rel=1e-3)
    assert fit.n_train + fit.n_heldout == recording.n_trials * recording.n_time * 4


def test_residual_recovered_with_input_terms():
    residual = ResidualDrift(FitzHughNagumo(input_size=1), 1, depth=0, key=jax.random.PRNGKey(0))
    matrix = jnp.array([[0.5, 0.0, -1.0], [0.0, 2.0, 0.0]], jnp.float32)
    bias = jnp.array([0.0, 0.3], jnp.float32)
    residual = eqx.tree_at(lambda r: (r.residual.layers[0].weight, r.residual.layers[0].bias), residual, (matrix, bias))
    rng = np.random.default_rng(0)
    samples = evaluate_learned_term(residual, rng.normal(size=(200, 2)), rng.normal(size=(200, 1)), ("v", "w"))

    assert samples.variable_names == ("v", "w", "u0")
    library = CandidateLibrary.polynomial(["v", "w"], 2, input_names=["u0"])
    fit = fit_symbolic(samples.inputs, samples.outputs, library, samples.output_names)
    assert fit.active_terms(0) == pytest.approx({"v": 0.5, "u0": -1.0}, rel=1e-4)
    assert fit.active_terms(1) == pytest.approx({"w": 2.0, "1": 0.3}, rel=1e-4)


def test_closure_with_two_outputs_sampled():
    # The Wilson-Cowan sigmoid closure is called once per population and returns the pair (S_e, S_i).
    closure = NeuralClosure(WilsonCowan(input_size=1), "sigmoid", width=4, depth=1, key=jax.random.PRNGKey(0))
    samples = evaluate_learned_term(closure, np.zeros((5, 2)), np.zeros((5, 1)))
    assert samples.inputs.shape == (10, 1)
    assert samples.outputs.shape == (10, 2)
    assert samples.output_names == ("sigmoid[0]", "sigmoid[1]")


def test_closure_mapped_inside_drift_rejected():
    mechanistic = Kuramoto(input_size=1, size=3, key=jax.random.PRNGKey(0))
    closure = NeuralClosure(mechanistic, "coupling", width=4, depth=1, key=jax.random.PRNGKey(1))
    with pytest.raises(ConfigError, match="cannot be captured"):
        evaluate_learned_term(closure, np.zeros((5, 3)), np.zeros((5, 1)))


def test_black_box_drift_rejected():
    drift = NeuralDrift(2, 1, width=4, depth=1, key=jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match="expected a grey-box drift"):
        evaluate_learned_term(drift, np.zeros((5, 2)), np.zeros((5, 1)))


def test_nonfinite_states_rejected():
    states = np.zeros((5, 2))
    states[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN or infinite"):
        evaluate_learned_term(linear_recovery_closure(), states, np.zeros((5, 1)))
