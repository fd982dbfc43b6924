"""Measure how often the jointly fitted variational intervals of mechanistic constants contain the true values.

Each case simulates many data sets from known constants, fits the mean-field
posterior (`model.constant_posterior: variational`) to each with the training
step of a fit, and counts how often the 95 % interval `m +- 1.96 s` contains the
true raw value. Only the constants' means and log-stds are trained. The fits of
one case run vmapped in one compiled program.

Cases:

- `linear`: the conjugate toy problem of tests/test_constant_posterior.py, two
  constants (offset, gain) that enter the drift linearly, with a zero-mean input,
  so their posterior correlation is weak (about -0.07).
- `linear-correlated`: the same with the input around 0.3, so the correlation is
  about -0.84. A mean-field Gaussian ignores it, so its intervals are too narrow.
- `fitzhugh-nagumo`: the constants a and b of the FitzHugh-Nagumo ODE of
  tests/test_uncertainty.py (4 trials of 60 bins of 0.1 s, readout noise 0.3),
  a nonlinear model whose posterior is nearly Gaussian.

    python examples/constant_posterior_coverage.py [--repeats N] [--steps N] [--case NAME] [--full]

Measured with 400 repeats per case, 1500 steps for the linear cases and 5000 for
FitzHugh-Nagumo (`--steps 5000`), mean-field and with `--full`, on 2 CPU cores shared with
other jobs (30 to 85 s per case). The binomial standard error of a coverage of 0.95 is 0.011:

    case               posterior   constant  coverage  spread of the means / mean posterior std
    linear             mean-field  offset    0.955     1.00
    linear             mean-field  gain      0.968     0.97
    linear-correlated  mean-field  offset    0.698     1.82
    linear-correlated  mean-field  gain      0.710     1.81
    fitzhugh-nagumo    mean-field  a         0.693     1.83
    fitzhugh-nagumo    mean-field  b         0.705     1.88
    linear             full        offset    0.955     0.99
    linear             full        gain      0.968     0.97
    linear-correlated  full        offset    0.958     0.97
    linear-correlated  full        gain      0.960     0.97
    fitzhugh-nagumo    full        a         0.948     1.05
    fitzhugh-nagumo    full        b         0.940     1.06

The posterior of FitzHugh-Nagumo's a and b has a correlation of about -0.82 (from the Laplace
covariance), and the Laplace intervals covered 0.945 and 0.94 in 200 repeats
(tests/test_uncertainty.py). Mean-field intervals are too narrow by about `sqrt(1 - rho^2)`
for a correlation `rho`. The posterior std converges more slowly than the means: with 1500
steps, FitzHugh-Nagumo's full-covariance intervals were still too wide (coverage 0.98, spread
over std 0.71 and 0.77).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_constant_posterior as linear_case  # noqa: E402
import test_uncertainty as fitzhugh_case  # noqa: E402

from neuroude.constant_posterior import attach_constant_posterior, posterior_penalty  # noqa: E402
from neuroude.train import make_train_step  # noqa: E402
from neuroude.uncertainty import raw_vector  # noqa: E402

FITZHUGH_PRIORS = {"a": (0.2, 1.5), "b": (0.3, 2.0)}


def trained_leaves(model, names):
    """Filter that trains the raw values of the named drift constants and the posterior's scale."""
    spec = jax.tree_util.tree_map(lambda _: False, model)

    def trained(m):
        leaves = [getattr(m.sde.drift, name).raw for name in names] + [m.constant_posterior.log_std]
        if model.constant_posterior.lower is not None:
            leaves.append(m.constant_posterior.lower)
        return leaves

    return eqx.tree_at(trained, spec, [True] * len(trained(spec)))


def make_fit(model, names, n_trials, bin_width, steps):
    """Return `fit(y, stimulus, key) -> (raw means, marginal raw stds)` after `steps` steps of the training step."""
    params, static = eqx.partition(model, trained_leaves(model, names))
    optimizer = optax.adam(optax.cosine_decay_schedule(0.05, steps, alpha=0.01))
    step = make_train_step(static, optimizer, 0.0, bin_width, 1, penalty=posterior_penalty(model, n_trials))

    def fit(y, stimulus, key):
        mask = jnp.ones_like(y)

        def body(carry, step_key):
            params, opt_state = carry
            params, opt_state, _, _, _ = step(params, opt_state, y, stimulus, mask, step_key, jnp.float32(1.0))
            return (params, opt_state), None

        (params_out, _), _ = jax.lax.scan(body, (params, optimizer.init(params)), jax.random.split(key, steps))
        fitted = eqx.combine(params_out, static)
        return raw_vector(fitted), fitted.constant_posterior.std

    return fit


def linear_data(repeats, level, full_covariance):
    stimulus = linear_case.stimulus_for(0, level)
    clean = linear_case.clean_paths(stimulus)
    data = jnp.stack([linear_case.simulate(seed, clean) for seed in range(1, repeats + 1)])
    truth = np.array([linear_case.TRUE_OFFSET, linear_case.TRUE_GAIN])
    model = attach_constant_posterior(linear_case.linear_model(), linear_case.PRIORS, initial_std_fraction=0.2,
                                      full_covariance=full_covariance)
    return model, ["offset", "gain"], data, stimulus, truth, linear_case.N_TRIALS, linear_case.BIN_WIDTH


def fitzhugh_data(repeats, full_covariance):
    case = fitzhugh_case
    truth_model = case.known_model(case.TRUE_A, case.TRUE_B)
    stimulus = jnp.zeros((case.N_TRIALS, case.N_BINS, 0))
    clean = truth_model.posterior_paths(jnp.zeros((case.N_BINS, 1)), stimulus[0], 0.0, case.BIN_WIDTH,
                                        jax.random.PRNGKey(0), 1)[0, :, :1]
    data = []
    for seed in range(repeats):
        noise = np.random.default_rng(seed).standard_normal((case.N_TRIALS, case.N_BINS, 1))
        data.append(np.asarray(clean) + case.NOISE_STD * noise)
    data = jnp.asarray(np.stack(data), jnp.float32)
    # The fit starts at a = 0.55 and b = 0.78, with a away from the true 0.7.
    start = case.known_model(0.55, 0.78)
    model = attach_constant_posterior(start, FITZHUGH_PRIORS, initial_std_fraction=0.2,
                                      full_covariance=full_covariance)
    truth = np.asarray(raw_vector(truth_model), np.float64)
    return model, ["a", "b"], data, stimulus, truth, case.N_TRIALS, case.BIN_WIDTH


def run_case(name, repeats, steps, full_covariance):
    if name == "fitzhugh-nagumo":
        model, names, data, stimulus, truth, n_trials, bin_width = fitzhugh_data(repeats, full_covariance)
    else:
        level = 0.3 if name == "linear-correlated" else 0.0
        model, names, data, stimulus, truth, n_trials, bin_width = linear_data(repeats, level, full_covariance)
    fit = make_fit(model, names, n_trials, bin_width, steps)
    started = time.perf_counter()
    keys = jax.random.split(jax.random.PRNGKey(11), repeats)
    means, stds = jax.jit(jax.vmap(fit, in_axes=(0, None, 0)))(data, stimulus, keys)
    means, stds = np.asarray(means, np.float64), np.asarray(stds, np.float64)
    seconds = time.perf_counter() - started

    hits = np.abs(means - truth) <= norm.ppf(0.975) * stds
    ratio = means.std(axis=0, ddof=1) / stds.mean(axis=0)
    for index, constant in enumerate(names):
        # The binomial standard error of a coverage near 0.95 with this many repeats.
        error = np.sqrt(0.95 * 0.05 / repeats)
        family = "full" if full_covariance else "mean-field"
        print(f"{name:<18s} {family:<10s} {constant:<8s}  coverage {hits[:, index].mean():.3f} (+- {error:.3f})  "
              f"spread / mean posterior std {ratio[index]:.2f}")
    print(f"  {repeats} fits of {steps} steps in {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=400, help="simulated data sets per case")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per fit")
    parser.add_argument("--case", choices=["linear", "linear-correlated", "fitzhugh-nagumo"], action="append",
                        help="case to run (repeatable); all by default")
    parser.add_argument("--full", action="store_true",
                        help="fit the full-covariance posterior (variational_full) instead of the mean-field one")
    arguments = parser.parse_args()
    for name in arguments.case or ["linear", "linear-correlated", "fitzhugh-nagumo"]:
        run_case(name, arguments.repeats, arguments.steps, arguments.full)


if __name__ == "__main__":
    main()
