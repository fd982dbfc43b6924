"""Gaussian posterior over the mechanistic constants, fitted jointly with the rest of the ELBO.

The raw values `r` of the learnable constants (see `dynamics.parameters`) become
a global latent variable shared by all trials:

    r ~ p(r) = prod_j N(mu_j, sigma_j^2)         prior from model.constant_priors
    q(r)     = N(m, L L^T)                       m = the model's raw values, L = diag(exp(log_std)) + lower

`lower` is strictly lower triangular. It is absent for the mean-field family
(`model.constant_posterior: variational`, `q = prod_j N(m_j, s_j^2)`) and learned for
the full-covariance family (`variational_full`), which keeps correlations between constants.

The objective over the N training trials is

    -ELBO = sum_i E_q(r)[-ELBO_i(r)] + KL(q(r) || p(r)),

where `ELBO_i(r)` is the trial's ELBO with its prior drift at constants `T(r)`.
The training loss is the negative ELBO per trial averaged over a minibatch of B
trials, so it estimates `-ELBO / N` as

    (1 / B) sum_{i in batch} -ELBO_i(m + L eps_i) + KL(q || p) / N,     eps_i ~ N(0, I).

Each trial draws its own `eps_i` (reparameterisation trick). Every trial's term is
an expectation under the same `q`, so independent draws per trial are as unbiased
as one draw shared by the minibatch, and averaging B independent draws lowers the
variance of the gradient at the same cost. The KL enters once per data set, which
is `1 / N` per trial, like the prior penalty of a point fit. It is not multiplied
by the annealed KL weight beta. Its entropy part keeps `s` from collapsing while
beta is small, and the point fit's prior term is not annealed either.

With `s -> 0` the objective is the point fit with a prior penalty, so the point
fit is the special case where the raw values are the means.

Every transform `T` is increasing, so with the marginal std `s_j = sqrt((L L^T)_jj)` the
level-`c` interval `T(m_j -+ z s_j)` contains the central `c` of the posterior mass of the
physical value (quantile mapping), and `T(m_j)` is its posterior median.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray
from numpy.polynomial.hermite_e import hermegauss
from scipy.stats import norm

from .errors import ConfigError
from .uncertainty import ConstantIntervals, constant_prior, raw_entries, raw_vector, with_raw_vector

# Initial posterior std of each raw value, as a fraction of its prior std. A small start keeps the first
# steps close to a point fit.
# NOTE: Adam moves log_std by at most about one learning rate per step, and less with noisy gradients, so
# the std settles more slowly than the means. The default schedule (1500 steps, peak 3e-3) may end before it
# does; FitzHugh-Nagumo in examples/constant_posterior_coverage.py needed 5000 steps at 0.05.
INITIAL_STD_FRACTION = 0.05

# Gauss-Hermite nodes for the posterior mean of a transformed constant: exact for polynomials of degree 39.
HERMITE_NODES = 20


class ConstantPosterior(eqx.Module):
    """Scale of the Gaussian over the raw constants, and the prior it is fitted under.

    The means are the raw values of the model's learnable constants, in the
    order of `uncertainty.raw_vector`. The scale matrix is
    `L = diag(exp(log_std)) + tril(lower, -1)`, with `lower` None for a
    mean-field posterior. The prior's means and standard deviations are
    static, so the optimiser never changes them.
    """

    log_std: Float[Array, " p"]
    lower: Float[Array, "p p"] | None
    names: tuple[str, ...] = eqx.field(static=True)
    prior_mean: tuple[float, ...] = eqx.field(static=True)
    prior_std: tuple[float, ...] = eqx.field(static=True)

    def scale(self) -> Float[Array, "p p"]:
        """Return the lower-triangular `L` with `covariance = L L^T`."""
        diagonal = jnp.diag(jnp.exp(self.log_std))
        if self.lower is None:
            return diagonal
        return diagonal + jnp.tril(self.lower, -1)

    def covariance(self) -> Float[Array, "p p"]:
        scale = self.scale()
        return scale @ scale.T

    @property
    def std(self) -> Float[Array, " p"]:
        """Marginal standard deviation of each raw value."""
        return jnp.sqrt(jnp.diag(self.covariance()))

    def draw(self, model, key: PRNGKeyArray):
        """Return `model` with its raw constants replaced by one draw `m + L eps` from `q`."""
        mean = raw_vector(model)
        noise = jax.random.normal(key, mean.shape, mean.dtype)
        return with_raw_vector(model, mean + self.scale() @ noise)

    def kl(self, model) -> Float[Array, ""]:
        """Return `KL(q || p) = sum_j (Sigma_jj + (m_j - mu_j)^2) / (2 sigma_j^2) - 1/2 + log sigma_j - log L_jj`."""
        mean = raw_vector(model)
        prior_mean = jnp.asarray(self.prior_mean, mean.dtype)
        prior_std = jnp.asarray(self.prior_std, mean.dtype)
        variance = jnp.sum(self.scale() ** 2, axis=1)
        standardised_mean = (mean - prior_mean) / prior_std
        return jnp.sum(
            0.5 * (variance / prior_std**2 + standardised_mean**2 - 1.0) + jnp.log(prior_std) - self.log_std
        )


# -- construction ----------------------------------------------------------------


def attach_constant_posterior(model, ranges: dict[str, tuple[float, float]],
                              initial_std_fraction: float = INITIAL_STD_FRACTION, full_covariance: bool = False):
    """Return `model` with a `ConstantPosterior` over its learnable constants.

    Each raw std starts at `initial_std_fraction` of the prior std, and the
    posterior starts uncorrelated. `full_covariance` also learns the
    correlations between constants.

    Every learnable constant needs a prior from `ranges` (`model.constant_priors`).
    A variational interval is only as meaningful as the prior it was fitted
    under, and no single broad default suits constants whose units and
    transforms differ. Raises ConfigError when the drift has no learnable
    constants or a learnable constant has no prior.
    """
    if not initial_std_fraction > 0:
        raise ConfigError(f"initial_std_fraction is {initial_std_fraction}; expected a fraction > 0")
    entries = raw_entries(model)
    if not entries:
        raise ConfigError(
            "model.constant_posterior asks for a variational posterior, but the "
            f"{type(model.sde.drift).__name__} drift has no learnable mechanistic constants; use a mechanistic "
            "drift with at least one constant not in model.frozen_constants, or set model.constant_posterior to 'point'"
        )
    _check_every_constant_has_prior(entries, ranges)

    prior = constant_prior(model, ranges)
    by_name = dict(zip(prior.names, zip(np.asarray(prior.means).tolist(), np.asarray(prior.stds).tolist())))
    names = tuple(entry.name for entry in entries)
    prior_mean = tuple(by_name[name][0] for name in names)
    prior_std = tuple(by_name[name][1] for name in names)
    log_std = jnp.log(initial_std_fraction * jnp.asarray(prior_std, jnp.float32))
    lower = jnp.zeros((len(names), len(names)), jnp.float32) if full_covariance else None
    posterior = ConstantPosterior(log_std, lower, names, prior_mean, prior_std)
    return eqx.tree_at(lambda m: m.constant_posterior, model, posterior, is_leaf=lambda node: node is None)


def _check_every_constant_has_prior(entries, ranges: dict) -> None:
    arrays = sorted({entry.name.split("[")[0] for entry in entries if "[" in entry.name})
    if arrays:
        raise ConfigError(
            "model.constant_posterior asks for a variational posterior, but the learnable constants "
            f"{arrays} are arrays, and model.constant_priors takes scalar constants only; add them to "
            "model.frozen_constants or set model.constant_posterior to 'point'"
        )
    missing = [entry.name for entry in entries if entry.name not in ranges]
    if missing:
        example = ", ".join(f"{name}: [low, high]" for name in missing)
        raise ConfigError(
            "model.constant_posterior asks for a variational posterior, but the learnable constants "
            f"{missing} have no prior; expected a published range for each in model.constant_priors "
            f"({{{example}}}), or add them to model.frozen_constants"
        )


def point_model(model):
    """Return `model` without its constant posterior, so its loss uses the raw values as they are."""
    if getattr(model, "constant_posterior", None) is None:
        return model
    return eqx.tree_at(lambda m: m.constant_posterior, model, None)


def posterior_penalty(model, n_trials: int):
    """Return the term added to the per-trial training loss, `KL(q || p) / n_trials`."""
    if model.constant_posterior is None:
        raise ConfigError("the model has no constant posterior; set model.constant_posterior to 'variational'")
    if n_trials < 1:
        raise ConfigError(f"n_trials is {n_trials}; the KL of the constants needs at least one training trial")
    return lambda current: current.constant_posterior.kl(current) / n_trials


# -- intervals -------------------------------------------------------------------------


def variational_intervals(model, level: float = 0.95) -> ConstantIntervals:
    """Summarise the fitted posterior of each constant: median `T(m)`, interval `T(m -+ z s)` and delta-method std.

    `s` is the marginal std of the raw value. The std of the physical value is
    `|T'(m)| s`, as for the Laplace intervals.
    """
    if model.constant_posterior is None:
        raise ConfigError("the model has no constant posterior; set model.constant_posterior to 'variational'")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"interval level is {level}; expected a probability strictly between 0 and 1")
    entries = raw_entries(model)
    mean = np.asarray(raw_vector(model), np.float64)
    covariance = np.asarray(model.constant_posterior.covariance(), np.float64)
    raw_std = np.sqrt(np.diag(covariance))
    z = float(norm.ppf(0.5 + 0.5 * level))

    ends = [(entry.constrain(m - z * s), entry.constrain(m + z * s)) for entry, m, s in zip(entries, mean, raw_std)]
    return ConstantIntervals(
        [entry.name for entry in entries], [entry.constant.transform for entry in entries], mean, None, level,
        covariance, np.array([entry.constrain(m) for entry, m in zip(entries, mean)]),
        np.array([abs(entry.slope(m)) * s for entry, m, s in zip(entries, mean, raw_std)]),
        np.array([low for low, _ in ends]), np.array([high for _, high in ends]), [], method="variational",
    )


def posterior_means(model) -> dict[str, float]:
    """Return each constant's posterior mean of the physical value, `E_q[T(r)]`, by Gauss-Hermite quadrature."""
    nodes, weights = hermegauss(HERMITE_NODES)
    weights = weights / math.sqrt(2.0 * math.pi)
    raw_std = np.asarray(model.constant_posterior.std, np.float64)
    means = {}
    for entry, m, s in zip(raw_entries(model), np.asarray(raw_vector(model), np.float64), raw_std):
        means[entry.name] = float(sum(w * entry.constrain(m + s * x) for x, w in zip(nodes, weights)))
    return means


def run_variational_intervals(model, split) -> dict:
    """Return the `constants` record of `metrics.json` for `evaluation.constant_intervals: variational`.

    The format is that of the Laplace record. Each constant also gets
    `posterior_mean`, the mean of its physical value, because `estimate` is
    the posterior median `T(m)`.
    """
    record = variational_intervals(model).to_dict()
    for name, mean in posterior_means(model).items():
        record["constants"][name]["posterior_mean"] = mean
    posterior = model.constant_posterior
    record["n_trials"] = len(split["train"])
    record["prior"] = {
        name: {"raw_mean": mean, "raw_std": std}
        for name, mean, std in zip(posterior.names, posterior.prior_mean, posterior.prior_std)
    }
    return record


def check_posterior_settings(config) -> None:
    """Raise ConfigError when variational intervals are requested from a point fit."""
    if config.evaluation.constant_intervals == "variational" and config.model.constant_posterior == "point":
        raise ConfigError(
            f"evaluation.constant_intervals is 'variational', but model.constant_posterior is "
            f"{config.model.constant_posterior!r}; set model.constant_posterior to 'variational' or "
            "'variational_full' to fit the posterior, or use evaluation.constant_intervals 'laplace' after a point fit"
        )
