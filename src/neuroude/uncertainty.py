"""Uncertainty over mechanistic constants: Laplace approximation and priors from published ranges.

Each learnable `Constant` of the drift stores a raw value `r` and returns
`T(r)` (see `dynamics.parameters`). After a point fit, the Laplace
approximation treats the raw values as Gaussian,

    r ~ N(r_hat, H^-1),   H = d^2/dr^2 [ sum_i -ELBO_i(r) - log p(r) ] at r_hat,

where the sum runs over the training trials. Every other parameter (encoder,
recognition model, correction network, diffusion, readout) is held at the fit.
The ELBO is averaged over a few fixed noise keys, which are common random
numbers, so the Hessian is that of one smooth function. The negative ELBO is an
upper bound on `-log p(y | r)`, so the result is the Laplace approximation of
the surrogate posterior `exp(ELBO(r)) p(r)`.

A level-`c` interval for `r` is `r_hat +- z s` with `z` the standard normal
quantile at `(1 + c) / 2` and `s` the raw standard deviation. Every transform
is increasing, so mapping both ends through `T` gives a level-`c` interval of
the physical value under the same Gaussian. The reported standard deviation of
the physical value is the delta-method one, `|T'(r_hat)| s`.

A prior from a published range `[low, high]` is `r ~ N(m, s^2)` with
`m = (T^-1(low) + T^-1(high)) / 2` and `s = (T^-1(high) - T^-1(low)) / (2 z_0.975)`,
so the range contains 95 % of the prior mass.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray
from scipy.stats import norm

from .dynamics.parameters import Constant
from .errors import ConfigError
from .identifiability import IdentifiabilityReport, classify_constants
from .solve import FIXED_STEP_METHODS

logger = logging.getLogger("neuroude")

INTERVAL_METHODS = ("none", "laplace", "variational")

# Quantile of the standard normal that leaves 2.5 % in each tail.
Z_95 = float(norm.ppf(0.975))

# An eigenvalue of the Hessian below this fraction of the largest one counts as flat. float32 round-off in a
# Hessian of a sum over many bins is about 1e-6 of its scale, so such directions are not identified.
RELATIVE_EIGENVALUE_FLOOR = 1e-5


# -- finding the constants ---------------------------------------------------


def _is_constant(node) -> bool:
    return isinstance(node, Constant)


def learnable_constants(model) -> list[tuple[str, Constant]]:
    """Return `(name, constant)` for each learnable `Constant` in the drift of `model`, in PyTree order.

    A name is the dotted path from the mechanistic model, such as `"a"` or
    `"local.tau"`. The grey-box wrappers' `mechanistic.` prefix is dropped, so
    the names match those of `model.constants` in the configuration.
    """
    drift = model.sde.drift
    root = getattr(drift, "mechanistic", drift)
    flat, _ = jax.tree_util.tree_flatten_with_path(root, is_leaf=_is_constant)
    found = []
    for path, leaf in flat:
        if isinstance(leaf, Constant) and leaf.learnable:
            found.append((jax.tree_util.keystr(path).lstrip("."), leaf))
    return found


def _constants_of(model) -> list[Constant]:
    return [constant for _, constant in learnable_constants(model)]


def raw_vector(model) -> Float[Array, " p"]:
    """Return the raw values of the learnable constants of `model` as one flat vector."""
    return jnp.concatenate([jnp.ravel(constant.raw) for constant in _constants_of(model)])


def with_raw_vector(model, vector: Float[Array, " p"]):
    """Return `model` with the raw values of its learnable constants replaced by `vector` (as `raw_vector` orders them)."""
    constants = _constants_of(model)
    pieces, start = [], 0
    for constant in constants:
        size = constant.raw.size
        pieces.append(jnp.reshape(vector[start:start + size], constant.raw.shape).astype(constant.raw.dtype))
        start += size
    return eqx.tree_at(lambda m: [constant.raw for constant in _constants_of(m)], model, pieces)


@dataclass(frozen=True)
class RawEntry:
    """One scalar entry of the raw vector: its name and the constant whose transform it goes through."""

    name: str
    constant: Constant
    index: int

    def constrain(self, raw: float) -> float:
        """Map one raw value through the constant's transform."""
        return float(_constrain(self.constant, jnp.asarray(raw, jnp.float32)))

    def slope(self, raw: float) -> float:
        """Return the derivative of the transform at `raw`."""
        return float(jax.grad(lambda r: _constrain(self.constant, r))(jnp.asarray(raw, jnp.float32)))


def _constrain(constant: Constant, raw: Float[Array, ""]) -> Float[Array, ""]:
    # The constant's own `value` applies its transform, so none is re-implemented here. Only learnable
    # constants reach this point, so `value` does not stop the gradient that `slope` takes.
    return eqx.tree_at(lambda c: c.raw, constant, raw).value


def raw_entries(model) -> list[RawEntry]:
    """Return one `RawEntry` per element of `raw_vector(model)`, naming an array constant's elements `name[i]`."""
    entries = []
    for name, constant in learnable_constants(model):
        if constant.raw.size == 1:
            entries.append(RawEntry(name, constant, 0))
        else:
            entries.extend(RawEntry(f"{name}[{i}]", constant, i) for i in range(constant.raw.size))
    return entries


# -- priors from published ranges ---------------------------------------------


class ConstantPrior(eqx.Module):
    """Independent normal priors on the raw values of named scalar constants.

    `-log p(r) = sum_j 0.5 ((r_j - m_j) / s_j)^2 + log s_j + 0.5 log(2 pi)`.
    """

    names: tuple[str, ...] = eqx.field(static=True)
    means: Float[Array, " q"]
    stds: Float[Array, " q"]

    def negative_log_density(self, model) -> Float[Array, ""]:
        """Return `-log p(r)` at the raw values of the named constants of `model`."""
        by_name = dict(learnable_constants(model))
        raws = jnp.stack([jnp.reshape(by_name[name].raw, ()) for name in self.names])
        standardised = (raws - self.means) / self.stds
        return jnp.sum(0.5 * standardised**2 + jnp.log(self.stds) + 0.5 * math.log(2.0 * math.pi))

    def to_dict(self) -> dict:
        return {
            name: {"raw_mean": float(mean), "raw_std": float(std)}
            for name, mean, std in zip(self.names, np.asarray(self.means), np.asarray(self.stds))
        }


def constant_prior(model, ranges: dict[str, tuple[float, float]]) -> ConstantPrior | None:
    """Build the prior that puts 95 % of each named constant's mass in its `[low, high]` range.

    Returns None for no ranges. Raises ConfigError for a name that is not a
    learnable scalar constant of the drift, or a range that is not inside the
    constant's valid values with `low < high`.
    """
    if not ranges:
        return None
    constants = dict(learnable_constants(model))
    names, means, stds = [], [], []
    for name, bounds in ranges.items():
        constant = constants.get(name)
        if constant is None or constant.raw.size != 1:
            raise ConfigError(
                f"model.constant_priors names {name!r}; expected a learnable scalar constant of the drift, "
                f"one of {sorted(n for n, c in constants.items() if c.raw.size == 1)}"
            )
        low, high = (float(value) for value in bounds)
        if not low < high:
            raise ConfigError(f"model.constant_priors[{name!r}] is {list(bounds)}; expected [low, high] with low < high")
        raw_low, raw_high = (_raw_of(constant, name, value) for value in (low, high))
        names.append(name)
        means.append(0.5 * (raw_low + raw_high))
        stds.append((raw_high - raw_low) / (2.0 * Z_95))
    return ConstantPrior(tuple(names), jnp.asarray(means, jnp.float32), jnp.asarray(stds, jnp.float32))


def _raw_of(constant: Constant, name: str, value: float) -> float:
    try:
        return float(Constant(value, constant.transform, bounds=constant.bounds).raw)
    except ConfigError as error:
        raise ConfigError(f"model.constant_priors[{name!r}]: {error}") from None


def prior_penalty(prior: ConstantPrior | None, n_trials: int):
    """Return the term added to the per-trial training loss: `-log p(r) / n_trials`, or None without a prior.

    The training loss is the negative ELBO averaged over trials, so dividing
    the log prior by the number of training trials makes the loss `1 / n_trials`
    times the negative log joint `sum_i -ELBO_i - log p(r)`.
    """
    if prior is None:
        return None
    if n_trials < 1:
        raise ConfigError(f"n_trials is {n_trials}; the prior penalty needs at least one training trial")
    return lambda model: prior.negative_log_density(model) / n_trials


# -- Laplace approximation ----------------------------------------------------


@dataclass
class ConstantIntervals:
    """Gaussian summary of the learnable constants: estimates, standard deviations and intervals."""

    names: list[str]
    transforms: list[str]
    raw_estimate: np.ndarray
    hessian: np.ndarray | None
    level: float
    covariance: np.ndarray | None
    estimate: np.ndarray
    std: np.ndarray | None
    lower: np.ndarray | None
    upper: np.ndarray | None
    flat_directions: list[dict]
    fit_estimate: np.ndarray | None = None
    method: str = "laplace"
    identifiability: IdentifiabilityReport | None = None

    @property
    def identifiable(self) -> bool:
        return self.covariance is not None

    def to_dict(self) -> dict:
        """Return a JSON-ready record: per constant its estimate, std and interval, or the flat directions."""
        constants = {}
        for i, name in enumerate(self.names):
            constants[name] = {
                "estimate": float(self.estimate[i]),
                "std": None if self.std is None else float(self.std[i]),
                "lower": None if self.lower is None else float(self.lower[i]),
                "upper": None if self.upper is None else float(self.upper[i]),
                "raw_estimate": float(self.raw_estimate[i]),
                "raw_std": None if self.covariance is None else float(math.sqrt(self.covariance[i, i])),
                "transform": self.transforms[i],
            }
            if self.fit_estimate is not None:
                constants[name]["fit_estimate"] = float(self.fit_estimate[i])
        return {
            "method": self.method,
            "level": self.level,
            "identifiable": self.identifiable,
            "constants": constants,
            "raw_covariance": None if self.covariance is None else self.covariance.tolist(),
            "non_identifiable_directions": self.flat_directions,
            "identifiability": None if self.identifiability is None else self.identifiability.to_dict(),
        }


def laplace_from_hessian(
    raw_estimate, hessian, entries: list[RawEntry], level: float = 0.95
) -> ConstantIntervals:
    """Turn the Hessian of the negative log joint in raw space into estimates, std and intervals.

    The covariance is `H^-1` when every eigenvalue of the symmetrised `H` is
    above `RELATIVE_EIGENVALUE_FLOOR` times the largest. Otherwise no std or
    interval is given, and each flat or negative eigenvalue is reported with
    its eigenvector's loadings on the constants. Moving the raw values along
    such a direction changes the objective little or lowers it. Either the
    data do not determine that combination of constants, or the fit is not at
    a minimum. In both cases `identifiability` classifies each constant as
    identifiable, weakly identifiable or not identifiable by the rule of
    `neuroude.identifiability`.
    """
    if not 0.0 < level < 1.0:
        raise ConfigError(f"interval level is {level}; expected a probability strictly between 0 and 1")
    raw_estimate = np.asarray(raw_estimate, np.float64)
    hessian = np.asarray(hessian, np.float64)
    size = raw_estimate.shape[0]
    if hessian.shape != (size, size) or len(entries) != size:
        raise ConfigError(
            f"Hessian has shape {hessian.shape} for {size} raw values and {len(entries)} names; expected ({size}, {size})"
        )
    names = [entry.name for entry in entries]
    estimate = np.array([entry.constrain(raw) for entry, raw in zip(entries, raw_estimate)])
    result = ConstantIntervals(
        names, [entry.constant.transform for entry in entries], raw_estimate, hessian, level,
        None, estimate, None, None, None, [],
    )
    slopes = np.array([entry.slope(raw) for entry, raw in zip(entries, raw_estimate)])
    result.identifiability = classify_constants(names, estimate, slopes, hessian, level=level)
    if not np.all(np.isfinite(hessian)):
        result.flat_directions = [{"eigenvalue": None, "loadings": {}, "reason": "the Hessian is not finite"}]
        return result

    symmetric = 0.5 * (hessian + hessian.T)
    eigenvalues, eigenvectors = np.linalg.eigh(symmetric)
    floor = RELATIVE_EIGENVALUE_FLOOR * max(float(np.max(np.abs(eigenvalues))), np.finfo(np.float64).tiny)
    flat = eigenvalues <= floor
    if np.any(flat):
        result.flat_directions = [
            {
                "eigenvalue": float(eigenvalues[k]),
                "loadings": {name: float(weight) for name, weight in zip(names, eigenvectors[:, k])},
            }
            for k in np.flatnonzero(flat)
        ]
        return result

    covariance = (eigenvectors / eigenvalues) @ eigenvectors.T
    raw_std = np.sqrt(np.diag(covariance))
    z = float(norm.ppf(0.5 + 0.5 * level))
    result.covariance = covariance
    result.std = np.array([abs(entry.slope(raw)) * s for entry, raw, s in zip(entries, raw_estimate, raw_std)])
    ends = [(entry.constrain(raw - z * s), entry.constrain(raw + z * s)) for entry, raw, s in zip(entries, raw_estimate, raw_std)]
    result.lower = np.array([low for low, _ in ends])
    result.upper = np.array([high for _, high in ends])
    return result


def negative_log_joint(
    model,
    y: Float[Array, "B T n"],
    stimulus: Float[Array, "B T k"],
    mask: Float[Array, "B T n"],
    t0: float,
    bin_width: float,
    keys: PRNGKeyArray,
    prior: ConstantPrior | None = None,
    n_samples: int = 1,
):
    """Return `f(r) = mean_k sum_i -ELBO_i(r; key_k) - log p(r)` as a function of the raw constant vector.

    `keys` (K, 2) are the fixed noise keys averaged over. The ELBO has beta = 1.
    """
    n_trials = y.shape[0]

    def objective(raw: Float[Array, " p"]) -> Float[Array, ""]:
        current = with_raw_vector(model, raw)

        def loss_for(key):
            loss, _ = current.loss(y, stimulus, mask, t0, bin_width, key, 1.0, n_samples)
            return loss * n_trials

        total = jnp.mean(jax.lax.map(loss_for, keys))
        if prior is not None:
            total = total + prior.negative_log_density(current)
        return total

    return objective


def laplace_constants(
    model,
    recording,
    trials,
    key: PRNGKeyArray,
    prior: ConstantPrior | None = None,
    n_keys: int = 4,
    n_samples: int = 1,
    level: float = 0.95,
    mode_steps: int = 10,
) -> ConstantIntervals:
    """Fit a Laplace approximation over the learnable constants of `model`.

    `trials` are the indices of `recording`'s training trials. The Gaussian is
    centred on the mode of the negative log joint over the raw constants, with
    the other parameters held at the fit. The search for it starts from the
    fitted values and takes at most `mode_steps` steps of `newton_mode` (0
    centres it on the fitted values). A stochastic fit, and a checkpoint chosen
    by a noisy validation score, can stop short of that mode, where the Hessian
    may be indefinite. The fitted values are kept as `fit_estimate`. Raises
    ConfigError when the drift has no learnable constants or `n_keys < 1`.
    """
    entries = raw_entries(model)
    if not entries:
        raise ConfigError(
            f"the {type(model.sde.drift).__name__} drift has no learnable mechanistic constants; "
            "constant intervals need a mechanistic drift with at least one constant not in model.frozen_constants"
        )
    if n_keys < 1:
        raise ConfigError(f"n_keys is {n_keys}; expected at least one noise key")

    # NOTE: all training trials enter one vmapped Hessian, so memory grows with trials x bins x constants.
    subset = recording.select(list(trials))
    y = jnp.asarray(subset.y)
    stimulus = jnp.asarray(subset.u) if subset.u is not None else jnp.zeros(y.shape[:2] + (0,), y.dtype)
    mask = jnp.asarray(subset.mask, y.dtype) if subset.mask is not None else jnp.ones_like(y)
    keys = jax.random.split(key, n_keys)
    objective = negative_log_joint(
        model, y, stimulus, mask, float(subset.ts[0]), float(subset.dt), keys, prior, n_samples
    )
    derivatives = jax.jit(lambda raw: (*jax.value_and_grad(objective)(raw), _hessian(objective, raw, model.method)))
    fitted = np.asarray(raw_vector(model), np.float64)
    raw = newton_mode(derivatives, fitted, mode_steps)
    _, _, hessian = derivatives(jnp.asarray(raw, jnp.float32))
    result = laplace_from_hessian(raw, np.asarray(hessian), entries, level)
    result.fit_estimate = np.array([entry.constrain(value) for entry, value in zip(entries, fitted)])
    if not result.identifiable:
        logger.warning(
            "the Hessian over the constants %s is not positive definite; no intervals are given "
            "(see non_identifiable_directions in metrics.json)", result.names,
        )
    return result


# Step of the central differences of the gradient, relative to 1 + |r|: the truncation error (about step^2)
# and the float32 round-off of the gradient divided by the step (about 1e-7 / step) are both near 1e-5 here.
FINITE_DIFFERENCE_STEP = 3e-3


def _hessian(objective, raw: Float[Array, " p"], method: str) -> Float[Array, "p p"]:
    """Return the Hessian of `objective` at `raw`: forward over reverse mode, or differences of the gradient.

    The adaptive diffrax solvers differentiate through a custom VJP, which has
    no forward mode, so for them each column is the central difference of the
    reverse-mode gradient.
    """
    if method in FIXED_STEP_METHODS:
        return jax.hessian(objective)(raw)

    gradient = jax.grad(objective)
    steps = FINITE_DIFFERENCE_STEP * (1.0 + jnp.abs(raw))
    shifts = jnp.diag(steps)
    differences = jax.vmap(lambda shift: gradient(raw + shift) - gradient(raw - shift))(shifts)
    # Row j of `differences` is the change of the gradient along raw value j, so it is column j of the Hessian.
    hessian = differences.T / steps[None, :] / 2.0
    return 0.5 * (hessian + hessian.T)


def newton_mode(derivatives, raw: np.ndarray, steps: int) -> np.ndarray:
    """Move `raw` towards a minimum of an objective by at most `steps` Newton steps.

    `derivatives(raw)` returns the objective's value, gradient and Hessian.
    Each step solves with the Hessian's eigenvalues replaced by their absolute
    values (floored at 1e-3 of the largest), so it descends where the Hessian
    is indefinite. A step is halved up to 10 times until the objective does
    not rise, and the search ends at a step that never descends.
    """
    raw = np.asarray(raw, np.float64)
    for _ in range(steps):
        value, gradient, hessian = (np.asarray(item, np.float64) for item in derivatives(jnp.asarray(raw, jnp.float32)))
        if not (np.isfinite(value) and np.all(np.isfinite(gradient)) and np.all(np.isfinite(hessian))):
            break
        eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (hessian + hessian.T))
        scale = max(float(np.max(np.abs(eigenvalues))), np.finfo(np.float64).tiny)
        eigenvalues = np.maximum(np.abs(eigenvalues), 1e-3 * scale)
        step = eigenvectors @ ((eigenvectors.T @ gradient) / eigenvalues)

        for _ in range(10):
            candidate_value = float(derivatives(jnp.asarray(raw - step, jnp.float32))[0])
            if candidate_value <= value:
                break
            step = step / 2
        else:
            break
        raw = raw - step
    return raw


# -- mean-field variational posterior -----------------------------------------


def variational_from_objective(
    objective,
    raw: np.ndarray,
    entries: list[RawEntry],
    key: PRNGKeyArray,
    initial_std: np.ndarray,
    steps: int = 400,
    n_draws: int = 8,
    learning_rate: float = 0.05,
    level: float = 0.95,
) -> ConstantIntervals:
    """Fit a mean-field Gaussian `q(r) = N(m, diag(s^2))` over the raw constants to `exp(-objective(r))`.

    Minimises `E_q[objective(r)] - H[q]` (the negative ELBO of the constants,
    `H[q] = sum_j log s_j` up to a constant) by Adam on reparameterised draws
    `r = m + s * eps`, `n_draws` per step, starting from `m = raw` and
    `s = initial_std`. For a quadratic objective `0.5 (r - c)^T A (r - c)` the
    optimum is `m = c` and `s_j^2 = 1 / A_jj`. That is at most the Laplace
    variance `(A^-1)_jj`, because a mean-field family ignores correlations.
    """
    # This fits q after the point fit with the networks held fixed. `model.constant_posterior: variational`
    # fits the same family jointly with the ELBO instead (see `constant_posterior`).
    if steps < 1 or n_draws < 1:
        raise ConfigError(f"steps is {steps} and n_draws is {n_draws}; expected both >= 1")
    initial_std = np.asarray(initial_std, np.float64)
    if initial_std.shape != np.shape(raw) or not np.all(initial_std > 0):
        raise ConfigError(f"initial_std is {initial_std}; expected {np.shape(raw)[0]} positive values")

    parameters = {"mean": jnp.asarray(raw, jnp.float32), "log_std": jnp.asarray(np.log(initial_std), jnp.float32)}
    optimizer = optax.adam(learning_rate)
    state = optimizer.init(parameters)

    def loss(parameters, step_key):
        noise = jax.random.normal(step_key, (n_draws, parameters["mean"].shape[0]))
        draws = parameters["mean"] + jnp.exp(parameters["log_std"]) * noise
        return jnp.mean(jax.lax.map(objective, draws)) - jnp.sum(parameters["log_std"])

    @jax.jit
    def update(parameters, state, step_key):
        gradient = jax.grad(loss)(parameters, step_key)
        changes, state = optimizer.update(gradient, state)
        return optax.apply_updates(parameters, changes), state

    for step_key in jax.random.split(key, steps):
        parameters, state = update(parameters, state, step_key)

    mean = np.asarray(parameters["mean"], np.float64)
    raw_std = np.exp(np.asarray(parameters["log_std"], np.float64))
    z = float(norm.ppf(0.5 + 0.5 * level))
    ends = [(entry.constrain(m - z * s), entry.constrain(m + z * s)) for entry, m, s in zip(entries, mean, raw_std)]
    return ConstantIntervals(
        [entry.name for entry in entries], [entry.constant.transform for entry in entries], mean, None, level,
        np.diag(raw_std**2), np.array([entry.constrain(m) for entry, m in zip(entries, mean)]),
        np.array([abs(entry.slope(m)) * s for entry, m, s in zip(entries, mean, raw_std)]),
        np.array([low for low, _ in ends]), np.array([high for _, high in ends]), [], method="mean-field variational",
    )


# -- run folders ---------------------------------------------------------------


def check_run_settings(model, config) -> None:
    """Raise ConfigError before a fit when the priors or the interval method do not suit the model's drift."""
    from .constant_posterior import check_posterior_settings

    constant_prior(model, config.model.constant_priors)
    check_posterior_settings(config)
    if config.evaluation.constant_intervals == "laplace" and not learnable_constants(model):
        raise ConfigError(
            f"evaluation.constant_intervals is 'laplace', but the {config.model.drift!r} drift has no learnable "
            "mechanistic constants; use a mechanistic drift or set evaluation.constant_intervals to 'none'"
        )


def run_constant_intervals(model, recording, split, config) -> dict | None:
    """Return the `constants` record of `metrics.json` for the configured interval method, or None for 'none'.

    'variational' reports the posterior fitted with the model (see `constant_posterior`).
    'laplace' uses the training trials, `training.n_samples` paths per trial, 4
    noise keys drawn from `seed + 2` and the prior of `model.constant_priors`.
    """
    from .constant_posterior import point_model, run_variational_intervals

    if config.evaluation.constant_intervals == "none":
        return None
    if config.evaluation.constant_intervals == "variational":
        return run_variational_intervals(model, split)
    # Laplace works on the raw values as fitted, so a variational fit is summarised at its means.
    model = point_model(model)
    prior = constant_prior(model, config.model.constant_priors)
    key = jax.random.PRNGKey(config.seed + 2)
    result = laplace_constants(model, recording, split["train"], key, prior, n_samples=config.training.n_samples)
    record = result.to_dict()
    record["n_trials"] = len(split["train"])
    record["prior"] = None if prior is None else prior.to_dict()
    return record
