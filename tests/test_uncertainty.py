"""Laplace intervals and priors for mechanistic constants.

The closed-form checks use a quadratic objective, whose Laplace covariance is
exactly the inverse of its matrix.

The coverage check fits the constants `a` and `b` of a FitzHugh-Nagumo ODE to
20 simulated data sets. Each is 4 noisy copies of one 6 s path of `v`, with
Gaussian noise of known std 0.3. The initial state and readout are known, so
only the constants are fitted. The test counts how often the 95 % intervals
contain the true values. Measured with 200 repeats (2 CPU cores, about 9 s):
coverage 0.945 for `a` and 0.94 for `b`, and the spread of the estimates over
repeats is 1.05 and 1.03 times the mean Laplace std.
"""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from conftest import tiny_config, tiny_recording
from neuroude.config import parse_config
from neuroude.data import Recording
from neuroude.dynamics.mechanistic.fitzhugh_nagumo import FitzHughNagumo
from neuroude.dynamics.parameters import Constant, trainable_filter
from neuroude.dynamics.sde import SDE
from neuroude.errors import ConfigError
from neuroude.identifiability import STATUSES
from neuroude.model import LatentUDE
from neuroude.observation import GaussianObservation
from neuroude.stimulus import make_encoder
from neuroude.train import make_optimizer, make_train_step
from neuroude.uncertainty import (
    _hessian,
    RawEntry,
    constant_prior,
    laplace_constants,
    laplace_from_hessian,
    learnable_constants,
    negative_log_joint,
    newton_mode,
    prior_penalty,
    raw_entries,
    raw_vector,
    variational_from_objective,
    with_raw_vector,
)
from neuroude.workflow import fit_run

Z_95 = norm.ppf(0.975)


# -- closed form ----------------------------------------------------------------


def quadratic_entries():
    return [RawEntry("rate", Constant(2.0, "positive"), 0), RawEntry("offset", Constant(0.5, "real"), 0)]


def test_laplace_quadratic_covariance():
    precision = np.array([[4.0, 1.0], [1.0, 2.0]])
    centre = jnp.array([0.3, -1.2])

    def objective(raw):
        delta = raw - centre
        return 0.5 * delta @ jnp.asarray(precision, jnp.float32) @ delta

    hessian = jax.hessian(objective)(centre)
    result = laplace_from_hessian(np.asarray(centre), np.asarray(hessian), quadratic_entries())
    covariance = np.linalg.inv(precision)

    assert result.identifiable
    np.testing.assert_allclose(result.covariance, covariance, rtol=1e-5)

    # The positive constant's interval is softplus of the raw interval, and its std is sigmoid(r) times the raw std.
    raw_std = np.sqrt(np.diag(covariance))
    softplus = lambda r: np.log1p(np.exp(r)) + 1e-8  # noqa: E731
    assert result.estimate[0] == pytest.approx(softplus(0.3), rel=1e-6)
    assert result.lower[0] == pytest.approx(softplus(0.3 - Z_95 * raw_std[0]), rel=1e-5)
    assert result.upper[0] == pytest.approx(softplus(0.3 + Z_95 * raw_std[0]), rel=1e-5)
    assert result.std[0] == pytest.approx(raw_std[0] / (1 + np.exp(-0.3)), rel=1e-5)

    # The real constant's interval is the raw one.
    assert result.lower[1] == pytest.approx(-1.2 - Z_95 * raw_std[1], rel=1e-5)
    assert result.upper[1] == pytest.approx(-1.2 + Z_95 * raw_std[1], rel=1e-5)
    assert result.std[1] == pytest.approx(raw_std[1], rel=1e-5)


def test_laplace_other_level():
    result = laplace_from_hessian(np.zeros(2), np.diag([1.0, 4.0]), quadratic_entries(), level=0.5)
    half_width = norm.ppf(0.75) * 0.5
    assert result.upper[1] - result.lower[1] == pytest.approx(2 * half_width, rel=1e-5)


def test_laplace_reports_flat_direction():
    # The objective depends only on rate + offset, so rate - offset is not identified.
    hessian = np.array([[1.0, 1.0], [1.0, 1.0]])
    result = laplace_from_hessian(np.zeros(2), hessian, quadratic_entries())
    record = result.to_dict()

    assert not result.identifiable
    assert record["constants"]["rate"]["std"] is None
    assert record["constants"]["offset"]["lower"] is None
    assert len(record["non_identifiable_directions"]) == 1
    loadings = record["non_identifiable_directions"][0]["loadings"]
    assert abs(loadings["rate"]) == pytest.approx(1 / np.sqrt(2), rel=1e-6)
    assert loadings["rate"] == pytest.approx(-loadings["offset"], rel=1e-6)


def test_laplace_reports_negative_curvature():
    result = laplace_from_hessian(np.zeros(2), np.diag([1.0, -0.5]), quadratic_entries())
    assert not result.identifiable
    assert result.flat_directions[0]["eigenvalue"] == pytest.approx(-0.5)


def test_laplace_rejects_bad_level():
    with pytest.raises(ConfigError, match="level"):
        laplace_from_hessian(np.zeros(2), np.eye(2), quadratic_entries(), level=1.5)


# -- priors ---------------------------------------------------------------------


def test_prior_covers_range():
    drift = FitzHughNagumo(a=0.7, b=0.8)
    model = type("Holder", (), {"sde": SDE(drift)})()
    prior = constant_prior(model, {"a": (0.2, 1.5), "i_ext": (-1.0, 1.0)})
    entries = {entry.name: entry for entry in raw_entries(model)}

    for index, (name, (low, high)) in enumerate([("a", (0.2, 1.5)), ("i_ext", (-1.0, 1.0))]):
        mean, std = float(prior.means[index]), float(prior.stds[index])
        assert entries[name].constrain(mean - Z_95 * std) == pytest.approx(low, rel=1e-4)
        assert entries[name].constrain(mean + Z_95 * std) == pytest.approx(high, rel=1e-4)


def test_prior_penalty_is_scaled_log_density():
    model = type("Holder", (), {"sde": SDE(FitzHughNagumo(a=0.7))})()
    prior = constant_prior(model, {"a": (0.2, 1.5)})
    raw = float(model.sde.drift.a.raw)
    mean, std = float(prior.means[0]), float(prior.stds[0])
    expected = -norm.logpdf(raw, mean, std) / 8
    assert float(prior_penalty(prior, 8)(model)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "ranges, message",
    [
        ({"c": (0.1, 1.0)}, "'c'"),
        ({"a": (1.0, 0.5)}, "low < high"),
        ({"tau": (-1.0, 5.0)}, "positive constant"),
        ({"b": (0.1, 1.0)}, "'b'"),
    ],
)
def test_prior_rejects_bad_ranges(ranges, message):
    model = type("Holder", (), {"sde": SDE(FitzHughNagumo(frozen=("b",)))})()
    with pytest.raises(ConfigError, match=message):
        constant_prior(model, ranges)


# -- white-box coverage ----------------------------------------------------------

TRUE_A, TRUE_B = 0.7, 0.8
NOISE_STD = 0.3
N_TRIALS, N_BINS, BIN_WIDTH = 4, 60, 0.1
X0 = (-1.0, 0.5)
N_REPEATS = 20


class KnownInitialState(eqx.Module):
    """Recognition stand-in that returns the true initial state with a negligible spread."""

    x0: jax.Array
    latent_size: int = eqx.field(static=True, default=2)
    n_init_bins: int = eqx.field(static=True, default=1)

    def initial_state(self, y, drive):
        return self.x0, jnp.full_like(self.x0, 1e-6)


def known_model(a, b, method="euler", n_substeps=4):
    drift = FitzHughNagumo(a=a, b=b, tau=12.5, time_scale=10.0, i_ext=0.5, frozen=("tau", "time_scale", "i_ext"))
    observation = GaussianObservation(1, 1, key=jax.random.PRNGKey(0))
    observation = eqx.tree_at(
        lambda o: (o.readout.weight, o.readout.bias, o.log_std), observation,
        (jnp.ones((1, 1)), jnp.zeros((1,)), jnp.full((1,), np.log(NOISE_STD), jnp.float32)),
    )
    return LatentUDE(
        make_encoder("identity", 0, 0, key=jax.random.PRNGKey(1)), KnownInitialState(jnp.asarray(X0, jnp.float32)),
        SDE(drift), observation, 2, 1, method=method, n_substeps=n_substeps, interpolation="hold",
        observed_states=(0,), key=jax.random.PRNGKey(2),
    )


@pytest.fixture(scope="module")
def coverage():
    return fit_repeats(N_REPEATS)


def fit_repeats(n_repeats):
    """Simulate `n_repeats` data sets, fit a and b to each, and return the model, Laplace results and data."""
    model = known_model(TRUE_A, TRUE_B)
    stimulus = jnp.zeros((N_TRIALS, N_BINS, 0))
    mask = jnp.ones((N_TRIALS, N_BINS, 1))
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    clean = model.posterior_paths(jnp.zeros((N_BINS, 1)), stimulus[0], 0.0, BIN_WIDTH, keys[0], 1)[0, :, :1]

    @jax.jit
    def derivatives(raw, y):
        objective = negative_log_joint(model, y, stimulus, mask, 0.0, BIN_WIDTH, keys)
        value, gradient = jax.value_and_grad(objective)(raw)
        return value, gradient, jax.hessian(objective)(raw)

    true_raw = np.asarray(raw_vector(model), np.float64)
    entries = raw_entries(model)
    results, data = [], []
    for seed in range(n_repeats):
        rng = np.random.default_rng(seed)
        y = jnp.asarray(np.asarray(clean) + NOISE_STD * rng.standard_normal((N_TRIALS, N_BINS, 1)), jnp.float32)
        raw = newton_mode(lambda raw: derivatives(raw, y), true_raw + 0.05, 12)
        _, _, hessian = derivatives(jnp.asarray(raw, jnp.float32), y)
        results.append(laplace_from_hessian(raw, np.asarray(hessian), entries))
        data.append(y)
    return model, results, data


def test_constants_are_a_and_b(coverage):
    model, _, _ = coverage
    assert [name for name, _ in learnable_constants(model)] == ["a", "b"]


def test_coverage_near_nominal(coverage):
    _, results, _ = coverage
    truth = np.array([TRUE_A, TRUE_B])
    assert all(result.identifiable for result in results)
    covered = np.array([(result.lower <= truth) & (truth <= result.upper) for result in results])
    # With 20 repeats at a true rate of 0.95, 16 or fewer hits has probability below 0.02.
    assert covered[:, 0].mean() >= 0.8, f"a covered in {covered[:, 0].sum()} of {N_REPEATS}"
    assert covered[:, 1].mean() >= 0.8, f"b covered in {covered[:, 1].sum()} of {N_REPEATS}"


def test_laplace_std_matches_spread(coverage):
    _, results, _ = coverage
    estimates = np.array([result.estimate for result in results])
    stds = np.array([result.std for result in results])
    # Intervals that are too wide would still cover, so the spread of the estimates over repeats must match the std.
    # For 20 normal draws, the sample std is between 0.6 and 1.5 times the true std with probability about 0.99.
    ratio = estimates.std(axis=0, ddof=1) / stds.mean(axis=0)
    assert np.all(ratio > 0.6), f"spread / Laplace std is {ratio}"
    assert np.all(ratio < 1.5), f"spread / Laplace std is {ratio}"


def test_laplace_constants_on_recording(coverage):
    model, results, data = coverage
    y = np.asarray(data[0])
    recording = Recording(y=y, ts=np.arange(N_BINS) * BIN_WIDTH, metadata={"source": "test"})
    raw = results[0].raw_estimate
    fitted = with_raw_vector(model, jnp.asarray(raw, jnp.float32))
    result = laplace_constants(fitted, recording, range(N_TRIALS), jax.random.PRNGKey(0), n_keys=1)

    np.testing.assert_allclose(result.covariance, results[0].covariance, rtol=1e-3)
    np.testing.assert_allclose(result.estimate, results[0].estimate, rtol=1e-5)
    np.testing.assert_allclose(result.fit_estimate, results[0].estimate, rtol=1e-5)


def test_laplace_constants_finds_mode(coverage):
    model, results, data = coverage
    recording = Recording(y=np.asarray(data[0]), ts=np.arange(N_BINS) * BIN_WIDTH, metadata={"source": "test"})
    start = known_model(0.6, 0.95)
    result = laplace_constants(start, recording, range(N_TRIALS), jax.random.PRNGKey(0), n_keys=1)

    np.testing.assert_allclose(result.fit_estimate, [0.6, 0.95], rtol=1e-5)
    np.testing.assert_allclose(result.estimate, results[0].estimate, rtol=1e-3)
    np.testing.assert_allclose(result.std, results[0].std, rtol=1e-2)


# -- run folders -------------------------------------------------------------------


def test_fit_run_writes_constant_intervals(tmp_path):
    from neuroude.data import save_npz

    path = tmp_path / "data.npz"
    save_npz(tiny_recording(), path)
    config = tiny_config(
        data={"source": "npz", "path": str(path)},
        model={"drift": "fitzhugh_nagumo", "frozen_constants": ["i_ext", "time_scale"],
               "constants": {"time_scale": 10.0}, "constant_priors": {"a": [0.2, 1.5]}},
        evaluation={"constant_intervals": "laplace"},
    )
    fit_run(config, tmp_path / "run", quiet=True)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())["constants"]

    assert record["method"] == "laplace"
    assert sorted(record["constants"]) == ["a", "b", "tau"]
    assert record["prior"]["a"]["raw_std"] > 0
    for name, entry in record["constants"].items():
        if record["identifiable"]:
            assert entry["lower"] <= entry["estimate"] <= entry["upper"], name
        else:
            assert entry["std"] is None, name
    if not record["identifiable"]:
        assert record["non_identifiable_directions"]
    classes = record["identifiability"]["constants"]
    assert sorted(classes) == ["a", "b", "tau"]
    assert all(entry["status"] in STATUSES for entry in classes.values())


def test_fit_run_rejects_intervals_without_constants(tmp_path):
    from neuroude.data import save_npz

    path = tmp_path / "data.npz"
    save_npz(tiny_recording(), path)
    config = tiny_config(data={"source": "npz", "path": str(path)}, evaluation={"constant_intervals": "laplace"})
    with pytest.raises(ConfigError, match="no learnable mechanistic constants"):
        fit_run(config, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_config_rejects_unknown_interval_method():
    with pytest.raises(ConfigError, match="constant_intervals"):
        parse_config({"evaluation": {"constant_intervals": "bootstrap"}})


def test_train_step_adds_prior():
    model = known_model(0.6, 0.9)
    prior = constant_prior(model, {"a": (0.2, 1.5)})
    params, static = eqx.partition(model, trainable_filter(model))
    optimizer = make_optimizer(tiny_config().training)
    y = jax.random.normal(jax.random.PRNGKey(3), (2, 20, 1))
    batch = (y, jnp.zeros((2, 20, 0)), jnp.ones_like(y))

    losses = []
    for penalty in (None, prior_penalty(prior, 6)):
        step = make_train_step(static, optimizer, 0.0, BIN_WIDTH, 1, penalty=penalty)
        _, _, terms, _, _ = step(params, optimizer.init(params), *batch, jax.random.PRNGKey(4), jnp.float32(1.0))
        losses.append(float(terms["loss"]))

    expected = float(prior.negative_log_density(model)) / 6
    assert np.isfinite(losses[0])
    assert losses[1] - losses[0] == pytest.approx(expected, rel=1e-3)


def test_variational_quadratic_optimum():
    precision = np.array([[4.0, 1.0], [1.0, 2.0]])
    centre = jnp.array([0.3, -1.2])

    def objective(raw):
        delta = raw - centre
        return 0.5 * delta @ jnp.asarray(precision, jnp.float32) @ delta

    result = variational_from_objective(
        objective, np.zeros(2), quadratic_entries(), jax.random.PRNGKey(0), np.ones(2), steps=1500, n_draws=32,
        learning_rate=0.02,
    )
    # The mean-field optimum has the centre as its mean and 1 / A_jj as its variances.
    np.testing.assert_allclose(result.raw_estimate, [0.3, -1.2], atol=0.03)
    np.testing.assert_allclose(np.diag(result.covariance), 1 / np.diag(precision), rtol=0.1)
    assert result.to_dict()["method"] == "mean-field variational"


def test_variational_rejects_bad_initial_std():
    with pytest.raises(ConfigError, match="initial_std"):
        variational_from_objective(lambda raw: jnp.sum(raw**2), np.zeros(2), quadratic_entries(),
                                   jax.random.PRNGKey(0), np.array([1.0, 0.0]))


def test_variational_matches_curvature(coverage):
    model, results, data = coverage
    laplace = results[0]
    stimulus = jnp.zeros((N_TRIALS, N_BINS, 0))
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    objective = negative_log_joint(model, data[0], stimulus, jnp.ones_like(data[0]), 0.0, BIN_WIDTH, keys)
    mean_field_std = 1 / np.sqrt(np.diag(laplace.hessian))

    result = variational_from_objective(
        objective, laplace.raw_estimate, raw_entries(model), jax.random.PRNGKey(1), 2 * mean_field_std,
        steps=300, n_draws=8, learning_rate=0.02,
    )
    # Near a nearly Gaussian mode, the mean-field posterior has the mode as its mean and std 1 / sqrt(H_jj).
    raw_std = np.sqrt(np.diag(result.covariance))
    np.testing.assert_allclose(result.raw_estimate, laplace.raw_estimate, atol=0.3 * mean_field_std.max())
    np.testing.assert_allclose(raw_std, mean_field_std, rtol=0.2)
    assert np.all(raw_std <= np.sqrt(np.diag(laplace.covariance)) * 1.2)


def test_finite_difference_hessian_matches_exact():
    # Adaptive solvers get the Hessian from differences of the gradient. On the Euler coverage model at 64
    # sub-steps per bin, tsit5 this way and Euler in forward mode agreed within 2 % (measured, 34 s to compile).
    def objective(raw):
        return 200.0 * jnp.exp(raw[0]) * jnp.sin(raw[1]) + 50.0 * raw[0] ** 2 * raw[1] ** 2 + raw[2] ** 4

    raw = jnp.array([0.3, 1.1, -0.7])
    exact = _hessian(objective, raw, "euler")
    differences = _hessian(objective, raw, "tsit5")
    np.testing.assert_allclose(np.asarray(exact), np.asarray(jax.hessian(objective)(raw)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(differences), np.asarray(exact), rtol=1e-3, atol=1e-3 * np.abs(exact).max())
