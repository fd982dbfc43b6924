"""Mean-field Gaussian posterior over mechanistic constants, fitted jointly with the ELBO.

The conjugate checks use a one-state ODE with two constants that enter the drift
linearly, `dx/dt = -x / DECAY + offset + gain * u(t)`, read out with Gaussian
noise of known std. The path is linear in (offset, gain), so with normal priors
the exact posterior of the raw values (the identity of the constants here) is
Gaussian. Its mean and precision `P` come from the quadratic negative log joint.
The mean-field optimum then has the exact mean and the std `1 / sqrt(P_jj)`.
Only the constants' means and log-stds are trained, through the same training
step as a fit, with one draw of the constants per trial.
"""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import binom, norm

from conftest import tiny_config, tiny_recording
from neuroude.config import parse_config
from neuroude.data import Recording
from neuroude.constant_posterior import (
    attach_constant_posterior,
    point_model,
    posterior_means,
    posterior_penalty,
    variational_intervals,
)
from neuroude.dynamics.parameters import Constant
from neuroude.dynamics.sde import SDE
from neuroude.errors import ConfigError
from neuroude.model import LatentUDE
from neuroude.observation import GaussianObservation
from neuroude.stimulus import make_encoder
from neuroude.train import make_train_step
from neuroude.uncertainty import constant_prior, negative_log_joint, raw_vector, run_constant_intervals
from neuroude.workflow import fit_run

DECAY = 0.5
NOISE_STD = 0.5
N_TRIALS, N_BINS, BIN_WIDTH = 4, 50, 0.05
TRUE_OFFSET, TRUE_GAIN = 0.5, 1.0
PRIORS = {"offset": (-3.0, 3.0), "gain": (-3.0, 3.0)}


class LinearInput(eqx.Module):
    """`dx/dt = -x / DECAY + offset + gain * u`: a drift linear in its two constants."""

    offset: Constant
    gain: Constant

    def __call__(self, t, x, u):
        return -x / DECAY + self.offset.value + self.gain.value * u[:1]


class KnownInitialState(eqx.Module):
    """Recognition stand-in that returns x0 = 0 with a negligible spread."""

    latent_size: int = eqx.field(static=True, default=1)
    n_init_bins: int = eqx.field(static=True, default=1)

    def initial_state(self, y, drive):
        return jnp.zeros((1,)), jnp.full((1,), 1e-6)


def linear_model(offset=0.0, gain=0.0):
    drift = LinearInput(Constant(offset, "real"), Constant(gain, "real"))
    observation = GaussianObservation(1, 1, key=jax.random.PRNGKey(0))
    observation = eqx.tree_at(
        lambda o: (o.readout.weight, o.readout.bias, o.log_std), observation,
        (jnp.ones((1, 1)), jnp.zeros((1,)), jnp.full((1,), np.log(NOISE_STD), jnp.float32)),
    )
    return LatentUDE(
        make_encoder("identity", 1, 0, key=jax.random.PRNGKey(1)), KnownInitialState(), SDE(drift), observation,
        1, 1, method="euler", n_substeps=2, interpolation="hold", key=jax.random.PRNGKey(2),
    )


def stimulus_for(seed, level=0.0):
    """Return sines of random phase around `level`, shape (trials, bins, 1).

    With `level` 0 their mean over a trial is near 0, so the posterior of offset
    and gain is weakly correlated. A positive level correlates them strongly.
    """
    phases = np.random.default_rng(seed).uniform(0, 2 * np.pi, (N_TRIALS, 1, 1))
    ts = np.arange(N_BINS)[None, :, None] * BIN_WIDTH
    return jnp.asarray(level + np.sin(2 * np.pi * 1.5 * ts + phases), jnp.float32)


@jax.jit
def clean_paths(stimulus):
    """Return the (trials, bins, 1) noise-free path of the true model for each trial's stimulus."""
    model = linear_model(TRUE_OFFSET, TRUE_GAIN)
    key = jax.random.PRNGKey(0)
    return jax.vmap(lambda s: model.posterior_paths(jnp.zeros((N_BINS, 1)), s, 0.0, BIN_WIDTH, key, 1)[0])(stimulus)


def simulate(seed, clean):
    """Return noisy (trials, bins, 1) observations of the path `clean`."""
    noise = np.random.default_rng(1000 + seed).standard_normal((N_TRIALS, N_BINS, 1))
    return jnp.asarray(np.asarray(clean) + NOISE_STD * noise, jnp.float32)


PRIOR = constant_prior(linear_model(), PRIORS)


@jax.jit
def _curvature(y, stimulus):
    model = linear_model()
    prior = PRIOR
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    objective = negative_log_joint(model, y, stimulus, jnp.ones_like(y), 0.0, BIN_WIDTH, keys, prior)
    start = jnp.zeros(2)
    return jax.grad(objective)(start), jax.hessian(objective)(start), jax.hessian(objective)(jnp.array([1.0, -2.0]))


def exact_posterior(y, stimulus):
    """Return the exact posterior mean and precision of (offset, gain), and the Hessian at a second point."""
    gradient, precision, other = (np.asarray(item, np.float64) for item in _curvature(y, stimulus))
    mean = -np.linalg.solve(precision, gradient)
    return mean, precision, other


def constants_only(model):
    """Filter that trains the constants' raw values and the posterior's scale, nothing else."""
    spec = jax.tree_util.tree_map(lambda _: False, model)

    def trained(m):
        leaves = [m.sde.drift.offset.raw, m.sde.drift.gain.raw, m.constant_posterior.log_std]
        if model.constant_posterior.lower is not None:
            leaves.append(m.constant_posterior.lower)
        return leaves

    return eqx.tree_at(trained, spec, [True] * len(trained(spec)))


N_STEPS = 1500


def make_fit(full_covariance=False):
    """Return `fit(y, stimulus, key) -> (raw means, raw covariance)`, which runs N_STEPS steps of the training step."""
    model = attach_constant_posterior(linear_model(), PRIORS, initial_std_fraction=0.2,
                                      full_covariance=full_covariance)
    params, static = eqx.partition(model, constants_only(model))
    schedule = optax.cosine_decay_schedule(0.05, N_STEPS, alpha=0.01)
    optimizer = optax.adam(schedule)
    step = make_train_step(static, optimizer, 0.0, BIN_WIDTH, 1, penalty=posterior_penalty(model, N_TRIALS))
    mask = jnp.ones((N_TRIALS, N_BINS, 1))

    def fit(y, stimulus, key):
        def body(carry, step_key):
            params, opt_state = carry
            params, opt_state, _, _, _ = step(params, opt_state, y, stimulus, mask, step_key, jnp.float32(1.0))
            return (params, opt_state), None

        (params_out, _), _ = jax.lax.scan(body, (params, optimizer.init(params)), jax.random.split(key, N_STEPS))
        fitted = eqx.combine(params_out, static)
        return raw_vector(fitted), fitted.constant_posterior.covariance()

    return fit, model


N_REPEATS = 40


@pytest.fixture(scope="module")
def fits():
    """Fit the posterior to one data set with correlated constants and N_REPEATS with weakly correlated ones.

    All fits run in one compiled program, vmapped over data sets.
    """
    stimuli = [stimulus_for(0, level=0.3)] + [stimulus_for(0)] * N_REPEATS
    data = [simulate(seed, clean_paths(stimulus)) for seed, stimulus in enumerate(stimuli)]
    fit, _ = make_fit()
    keys = jax.random.split(jax.random.PRNGKey(5), N_REPEATS + 1)
    means, covariances = jax.jit(jax.vmap(fit))(jnp.stack(data), jnp.stack(stimuli), keys)
    stds = np.sqrt(np.diagonal(np.asarray(covariances, np.float64), axis1=1, axis2=2))
    return np.asarray(means, np.float64), stds, data, stimuli


@pytest.fixture(scope="module")
def conjugate(fits):
    means, stds, data, stimuli = fits
    return means[0], stds[0], exact_posterior(data[0], stimuli[0])


# -- (a) conjugate toy problem ----------------------------------------------------------


def test_conjugate_objective_is_quadratic(conjugate):
    _, _, (_, precision, other) = conjugate
    # The Hessian is the same at two distant points, so the exact posterior is Gaussian.
    np.testing.assert_allclose(other, precision, rtol=1e-4)


def test_joint_fit_matches_exact_mean(conjugate):
    mean, _, (exact_mean, precision, _) = conjugate
    mean_field_std = 1 / np.sqrt(np.diag(precision))
    # Tolerance: 0.1 posterior std, well above the optimiser's noise at the end of the schedule.
    assert np.all(np.abs(mean - exact_mean) < 0.1 * mean_field_std), f"fit {mean}, exact {exact_mean}"


def test_joint_fit_matches_mean_field_std(conjugate):
    _, std, (_, precision, _) = conjugate
    mean_field_std = 1 / np.sqrt(np.diag(precision))
    np.testing.assert_allclose(std, mean_field_std, rtol=0.1)


def test_mean_field_std_below_marginal(conjugate):
    _, std, (_, precision, _) = conjugate
    # The constants are strongly correlated here, and a mean-field Gaussian ignores correlations,
    # so its std is clearly below the exact marginal std.
    marginal_std = np.sqrt(np.diag(np.linalg.inv(precision)))
    assert np.all(marginal_std > 1.3 / np.sqrt(np.diag(precision))), "the design expects correlated constants"
    assert np.all(std < marginal_std / 1.15), f"{std} against marginal {marginal_std}"


def test_full_covariance_matches_exact(fits):
    _, _, data, stimuli = fits
    fit, _ = make_fit(full_covariance=True)
    mean, covariance = jax.jit(fit)(data[0], stimuli[0], jax.random.PRNGKey(6))
    mean, covariance = np.asarray(mean, np.float64), np.asarray(covariance, np.float64)
    exact_mean, precision, _ = exact_posterior(data[0], stimuli[0])
    exact_covariance = np.linalg.inv(precision)
    marginal_std = np.sqrt(np.diag(exact_covariance))

    assert np.all(np.abs(mean - exact_mean) < 0.1 * marginal_std), f"fit {mean}, exact {exact_mean}"
    np.testing.assert_allclose(np.sqrt(np.diag(covariance)), marginal_std, rtol=0.1)
    correlation = covariance[0, 1] / np.sqrt(covariance[0, 0] * covariance[1, 1])
    exact_correlation = exact_covariance[0, 1] / (marginal_std[0] * marginal_std[1])
    assert correlation == pytest.approx(exact_correlation, abs=0.05)


# -- (b) coverage over repeated simulations ------------------------------------------------

# At a true rate of 0.95, fewer than 34 hits in 40 has probability binom.cdf(33, 40, 0.95) = 0.0034,
# while a true rate of 0.75 (the correlated case of the coverage example) gives fewer with probability 0.9.
MIN_HITS = 34


@pytest.fixture(scope="module")
def repeats(fits):
    means, stds, data, stimuli = fits
    return means[1:], stds[1:], exact_posterior(data[1], stimuli[1])[1]


def test_hit_bound_is_binomial():
    assert binom.cdf(MIN_HITS - 1, N_REPEATS, 0.95) < 0.005
    assert binom.cdf(MIN_HITS - 1, N_REPEATS, 0.75) > 0.9


def test_coverage_near_nominal(repeats):
    means, stds, _ = repeats
    truth = np.array([TRUE_OFFSET, TRUE_GAIN])
    z = norm.ppf(0.975)
    hits = np.sum(np.abs(means - truth) <= z * stds, axis=0)
    assert hits[0] >= MIN_HITS, f"offset covered in {hits[0]} of {N_REPEATS}"
    assert hits[1] >= MIN_HITS, f"gain covered in {hits[1]} of {N_REPEATS}"


def test_std_matches_spread(repeats):
    means, stds, precision = repeats
    correlation = -precision[0, 1] / np.sqrt(precision[0, 0] * precision[1, 1])
    assert abs(correlation) < 0.3, f"posterior correlation {correlation}; the design expects weak correlation"
    # Intervals that are too wide would still cover. For 40 normal draws the sample std is between 0.72 and
    # 1.29 times the true std with probability about 0.99.
    ratio = means.std(axis=0, ddof=1) / stds.mean(axis=0)
    assert np.all(ratio > 0.72), f"spread / posterior std is {ratio}"
    assert np.all(ratio < 1.29), f"spread / posterior std is {ratio}"


# -- intervals ----------------------------------------------------------------------------------


VARIATIONAL_MODEL = {
    "drift": "fitzhugh_nagumo", "frozen_constants": ["i_ext", "time_scale"], "constants": {"time_scale": 10.0},
    "constant_priors": {"a": [0.2, 1.5], "b": [0.3, 2.0], "tau": [5.0, 30.0]}, "constant_posterior": "variational",
}


def test_intervals_map_quantiles(make_model):
    model = make_model(tiny_config(model=VARIATIONAL_MODEL))
    raw_std = jnp.array([0.2, 0.5, 0.1])
    model = eqx.tree_at(lambda m: m.constant_posterior.log_std, model, jnp.log(raw_std))
    result = variational_intervals(model)
    raw = np.asarray(raw_vector(model), np.float64)
    softplus = lambda r: np.log1p(np.exp(r)) + 1e-8  # noqa: E731
    z = norm.ppf(0.975)

    assert result.names == ["a", "b", "tau"]
    np.testing.assert_allclose(result.estimate, softplus(raw), rtol=1e-5)
    np.testing.assert_allclose(result.lower, softplus(raw - z * np.asarray(raw_std)), rtol=1e-5)
    np.testing.assert_allclose(result.upper, softplus(raw + z * np.asarray(raw_std)), rtol=1e-5)
    np.testing.assert_allclose(np.sqrt(np.diag(result.covariance)), raw_std, rtol=1e-6)


def test_posterior_mean_matches_sampling(make_model):
    model = make_model(tiny_config(model=VARIATIONAL_MODEL))
    raw_std = np.array([0.2, 0.5, 0.1])
    model = eqx.tree_at(lambda m: m.constant_posterior.log_std, model, jnp.log(jnp.asarray(raw_std, jnp.float32)))
    raw = np.asarray(raw_vector(model), np.float64)
    draws = raw + raw_std * np.random.default_rng(0).standard_normal((200_000, 3))
    sampled = np.mean(np.log1p(np.exp(draws)), axis=0)
    quadrature = posterior_means(model)
    # 200000 draws put the Monte-Carlo error below 1e-3 of each mean.
    np.testing.assert_allclose([quadrature[name] for name in ("a", "b", "tau")], sampled, rtol=2e-3)


def test_prior_is_aligned_with_constants(make_model):
    config = tiny_config(model=VARIATIONAL_MODEL)
    model = make_model(config)
    posterior = model.constant_posterior
    prior = constant_prior(model, config.model.constant_priors)
    by_name = dict(zip(prior.names, np.asarray(prior.means)))
    assert posterior.names == ("a", "b", "tau")
    np.testing.assert_allclose(posterior.prior_mean, [by_name[name] for name in posterior.names], rtol=1e-6)


@pytest.mark.parametrize("posterior", ["variational", "variational_full"])
def test_kl_is_gaussian_kl(make_model, posterior):
    model = make_model(tiny_config(model=dict(VARIATIONAL_MODEL, constant_posterior=posterior)))
    if posterior == "variational_full":
        lower = jnp.array([[0.0, 0.0, 0.0], [0.03, 0.0, 0.0], [-0.02, 0.05, 0.0]])
        model = eqx.tree_at(lambda m: m.constant_posterior.lower, model, lower)
    posterior = model.constant_posterior
    mean = np.asarray(raw_vector(model), np.float64)
    covariance = np.asarray(posterior.covariance(), np.float64)
    prior_mean, prior_std = np.asarray(posterior.prior_mean), np.asarray(posterior.prior_std)

    # KL(N(m, C) || N(mu, S)) = (tr(S^-1 C) + (mu - m)^T S^-1 (mu - m) - p + log det S - log det C) / 2
    prior_covariance = np.diag(prior_std**2)
    inverse = np.linalg.inv(prior_covariance)
    delta = prior_mean - mean
    expected = 0.5 * (np.trace(inverse @ covariance) + delta @ inverse @ delta - 3
                      + np.linalg.slogdet(prior_covariance)[1] - np.linalg.slogdet(covariance)[1])
    assert float(posterior.kl(model)) == pytest.approx(expected, rel=1e-4)


@eqx.filter_jit
def loss_and_peaks(model, y, stimulus):
    loss, terms = model.loss(y, stimulus, jnp.ones_like(y), 0.0, BIN_WIDTH, jax.random.PRNGKey(0))
    return loss, terms["state_peak"]


def test_loss_draws_constants_per_trial():
    model = attach_constant_posterior(linear_model(TRUE_OFFSET, TRUE_GAIN), PRIORS)
    # Four copies of one trial: only the draws of the constants can make their paths differ.
    stimulus = jnp.repeat(stimulus_for(0)[:1], 4, axis=0)
    y = jnp.repeat(simulate(0, clean_paths(stimulus_for(0)))[:1], 4, axis=0)

    loss_point, peaks_point = loss_and_peaks(point_model(model), y, stimulus)
    loss_variational, peaks_variational = loss_and_peaks(model, y, stimulus)
    assert np.ptp(np.asarray(peaks_point)[:, -1]) < 1e-5
    assert np.ptp(np.asarray(peaks_variational)[:, -1]) > 1e-3
    assert float(loss_variational) != float(loss_point)


def test_loss_with_tiny_std_is_point_loss():
    model = attach_constant_posterior(linear_model(TRUE_OFFSET, TRUE_GAIN), PRIORS)
    narrow = eqx.tree_at(lambda m: m.constant_posterior.log_std, model, model.constant_posterior.log_std - 30.0)
    stimulus = stimulus_for(0)
    y = simulate(0, clean_paths(stimulus))
    loss_point, _ = loss_and_peaks(point_model(model), y, stimulus)
    loss_narrow, _ = loss_and_peaks(narrow, y, stimulus)
    assert float(loss_narrow) == pytest.approx(float(loss_point), rel=1e-5)


# -- run folders and configuration -----------------------------------------------------------


def test_fit_run_writes_variational_intervals(tmp_path):
    from neuroude.data import save_npz
    from neuroude.workflow import load_run

    path = tmp_path / "data.npz"
    save_npz(tiny_recording(), path)
    config = tiny_config(
        data={"source": "npz", "path": str(path)}, model=VARIATIONAL_MODEL,
        evaluation={"constant_intervals": "variational"},
    )
    run = fit_run(config, tmp_path / "run", quiet=True)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())["constants"]

    assert record["method"] == "variational"
    assert record["identifiable"]
    assert sorted(record["constants"]) == ["a", "b", "tau"]
    assert record["n_trials"] == len(run.split["train"])
    assert sorted(record["prior"]) == ["a", "b", "tau"]
    for name, entry in record["constants"].items():
        assert entry["lower"] < entry["estimate"] < entry["upper"], name
        assert entry["lower"] < entry["posterior_mean"] < entry["upper"], name
        assert entry["raw_std"] > 0, name

    # The fitted std is saved in the checkpoint: the reloaded model reports the same intervals.
    reloaded = load_run(tmp_path / "run")
    again = variational_intervals(reloaded.model).to_dict()["constants"]
    for name, entry in record["constants"].items():
        assert again[name]["raw_std"] == pytest.approx(entry["raw_std"], rel=1e-6), name


def test_laplace_after_variational_fit(fits):
    # Laplace intervals use the raw values as means, without draws, so on the linear model they are exact.
    _, _, data, stimuli = fits
    model = attach_constant_posterior(linear_model(0.3, 0.8), PRIORS)
    recording = Recording(y=np.asarray(data[0]), ts=np.arange(N_BINS) * BIN_WIDTH, u=np.asarray(stimuli[0]),
                          metadata={"source": "test"})
    config = tiny_config(model={"constant_priors": PRIORS}, evaluation={"constant_intervals": "laplace"})
    record = run_constant_intervals(model, recording, {"train": list(range(N_TRIALS))}, config)
    exact_mean, precision, _ = exact_posterior(data[0], stimuli[0])
    marginal_std = np.sqrt(np.diag(np.linalg.inv(precision)))

    assert record["method"] == "laplace"
    for index, name in enumerate(["offset", "gain"]):
        assert record["constants"][name]["estimate"] == pytest.approx(exact_mean[index], abs=1e-3 * marginal_std[index])
        assert record["constants"][name]["raw_std"] == pytest.approx(marginal_std[index], rel=1e-3)


def test_variational_without_constants_is_rejected(tmp_path):
    from neuroude.data import save_npz

    path = tmp_path / "data.npz"
    save_npz(tiny_recording(), path)
    config = tiny_config(data={"source": "npz", "path": str(path)}, model={"constant_posterior": "variational"})
    with pytest.raises(ConfigError, match="no learnable mechanistic constants"):
        fit_run(config, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_variational_without_prior_is_rejected(make_model):
    model_config = dict(VARIATIONAL_MODEL, constant_priors={"a": [0.2, 1.5]})
    with pytest.raises(ConfigError, match=r"\['b', 'tau'\] have no prior"):
        make_model(tiny_config(model=model_config))


def test_variational_intervals_need_posterior(tmp_path):
    from neuroude.data import save_npz

    path = tmp_path / "data.npz"
    save_npz(tiny_recording(), path)
    model_config = dict(VARIATIONAL_MODEL, constant_posterior="point")
    config = tiny_config(data={"source": "npz", "path": str(path)}, model=model_config,
                         evaluation={"constant_intervals": "variational"})
    with pytest.raises(ConfigError, match="model.constant_posterior is 'point'"):
        fit_run(config, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_config_rejects_unknown_posterior():
    with pytest.raises(ConfigError, match="constant_posterior"):
        parse_config({"model": {"constant_posterior": "laplace"}})


def test_point_model_keeps_pytree(make_model):
    # A point fit has no posterior leaves, so its checkpoints are those of earlier versions.
    point = make_model(tiny_config(model=dict(VARIATIONAL_MODEL, constant_posterior="point")))
    variational = make_model(tiny_config(model=VARIATIONAL_MODEL))
    assert point.constant_posterior is None
    point_leaves = jax.tree_util.tree_leaves(point)
    assert len(jax.tree_util.tree_leaves(variational)) == len(point_leaves) + 1
    assert len(jax.tree_util.tree_leaves(point_model(variational))) == len(point_leaves)
