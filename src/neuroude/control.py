"""Input design on a known or fitted SDE: open-loop and receding-horizon (model predictive) control.

The input on a grid of T bins is a bounded transform of unconstrained values r,

    u_k = u_min + (u_max - u_min) * sigmoid(r_k),

so it lies in [u_min, u_max] by construction. It is held constant within each
bin (zero-order hold) unless the system interpolates. For S noise samples of the
controlled SDE, whose output z is either the latent state or a readout of it
(the expected rates of a fitted model), the cost is

    J(r) = tracking + smoothness * mean_k |u_{k+1} - u_k|^2 + energy * mean_k |u_k|^2
    tracking = sum_{s,k,j} w_kj (z_skj - z*_kj)^2 / (S sum_kj w_kj)

where `z*` is the target and `w` is 1 where the target is finite and 0 where it
is NaN ("no target here"). J is minimised with Adam through the solver,
averaging over S vmapped noise samples and drawing fresh noise at every
iteration (a stochastic gradient of the expected cost).

- `design_open_loop` optimises the whole input once from a known initial state.
- `receding_horizon` re-plans every `control_interval` bins: it estimates the
  current state, optimises the next `horizon` bins, applies the first
  `control_interval` of them to the plant and simulates the plant with noise.
  The state estimate is the plant's true state (`TrueState`) or, for a fitted
  `LatentUDE`, its posterior at the present given every observation so far
  (`RecognitionEstimator`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .errors import ConfigError, DataError
from .solve import FIXED_STEP_METHODS, solve_fixed_step
from .stimulus import INTERPOLATIONS, input_at

logger = logging.getLogger("neuroude")

OUTPUT_SPACES = ("latent", "rate")


# -- the controlled system ---------------------------------------------------


class ControlledSystem(eqx.Module):
    """A controlled SDE `dx = f(t, x, g(u)) dt + sigma(t, x, g(u)) dW` with an output map `z = h(x)`.

    `drift` f and `diffusion` sigma (None for an ODE) take the drive `g(u)`,
    where `input_map` g maps the designed input (T, m) to the drive per bin
    (identity when None, a fitted model's stimulus encoder otherwise).
    `output` h maps a path (T, d) to the controlled output (T, p), the latent
    state itself when None. `observation`, when given, draws the
    observations that a recognition model reads during receding-horizon
    control.
    """

    drift: eqx.Module
    diffusion: eqx.Module | None
    input_map: eqx.Module | None
    output: eqx.Module | None
    observation: eqx.Module | None
    state_size: int = eqx.field(static=True)
    input_size: int = eqx.field(static=True)
    n_substeps: int = eqx.field(static=True)
    method: str = eqx.field(static=True)
    interpolation: str = eqx.field(static=True)

    def __init__(
        self,
        drift,
        diffusion=None,
        *,
        state_size: int,
        input_size: int,
        input_map=None,
        output=None,
        observation=None,
        n_substeps: int = 1,
        method: str = "euler",
        interpolation: str = "hold",
    ):
        if not isinstance(state_size, int) or state_size < 1:
            raise ConfigError(f"state_size is {state_size!r}; expected a positive integer")
        if not isinstance(input_size, int) or input_size < 1:
            raise ConfigError(f"input_size is {input_size!r}; expected a positive integer number of inputs to design")
        if not isinstance(n_substeps, int) or n_substeps < 1:
            raise ConfigError(f"n_substeps is {n_substeps!r}; expected an integer >= 1")
        if method not in FIXED_STEP_METHODS:
            raise ConfigError(f"method is {method!r}; control integrates with one of {FIXED_STEP_METHODS}")
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation is {interpolation!r}; expected one of {INTERPOLATIONS}")
        self.drift = drift
        self.diffusion = diffusion
        self.input_map = input_map
        self.output = output
        self.observation = observation
        self.state_size = state_size
        self.input_size = input_size
        self.n_substeps = n_substeps
        self.method = method
        self.interpolation = interpolation

    @classmethod
    def from_model(cls, model, space: str = "latent") -> ControlledSystem:
        """Control a fitted `LatentUDE` through its stimulus: the prior SDE, encoder and observation model.

        `space` "latent" controls the latent state, "rate" the expected
        observations per bin (counts per bin for a Poisson model).
        """
        if space not in OUTPUT_SPACES:
            raise ConfigError(f"output space is {space!r}; expected one of {OUTPUT_SPACES}")
        input_size = _stimulus_size(model)
        if input_size == 0:
            raise ConfigError("the model was fitted without a stimulus, so it has no input to control")
        # NOTE: models fitted with an adaptive ODE solver are controlled with Heun at n_substeps steps per bin.
        method = model.method if model.method in FIXED_STEP_METHODS else "heun"
        return cls(
            model.sde.drift,
            model.sde.diffusion,
            state_size=model.latent_size,
            input_size=input_size,
            input_map=model.encoder,
            output=ModelReadout(model) if space == "rate" else None,
            observation=ModelObservation(model),
            n_substeps=model.n_substeps,
            method=method,
            interpolation=model.interpolation,
        )

    def drive(self, u: Float[Array, "T m"]) -> Float[Array, "T q"]:
        return u if self.input_map is None else self.input_map(u)

    def simulate(
        self, x0: Float[Array, " d"], u: Float[Array, "T m"], t0: float, bin_width: float, key: PRNGKeyArray | None
    ) -> Float[Array, "T d"]:
        """Integrate from `x0` over the T bins of `u`; `key=None` (or no diffusion) integrates without noise.

        A drift with conduction delays (a `BrainNetwork` built with fibre
        lengths) is integrated with its history buffer, as in fitting, with
        the state held at `x0` before `t0`.
        """
        fields = _InputFields(self, self.drive(u))
        noise_key = None if self.diffusion is None else key
        delay_line = getattr(self.drift, "delay_line", None)
        history = None if delay_line is None else delay_line(bin_width / self.n_substeps)
        path, _ = solve_fixed_step(
            fields, x0, t0, bin_width, u.shape[0], self.n_substeps, noise_key, self.method, history=history
        )
        return path

    def outputs(self, path: Float[Array, "T d"]) -> Float[Array, "T p"]:
        return path if self.output is None else self.output(path)

    @property
    def output_size(self) -> int | None:
        return self.state_size if self.output is None else self.output.size


class _InputFields(eqx.Module):
    system: ControlledSystem
    drive: Float[Array, "T q"]

    def __call__(self, t, x, k, frac, past=None):
        # `past` contains the delayed states of a network with conduction delays (see `BrainNetwork.delayed`).
        u = input_at(self.drive, k, frac, self.system.interpolation)
        drift = self.system.drift(t, x, u) if past is None else self.system.drift.delayed(t, x, u, past)
        if self.system.diffusion is None:
            return drift, jnp.zeros_like(x), jnp.zeros((), x.dtype)
        return drift, self.system.diffusion(t, x, u), jnp.zeros((), x.dtype)


class SelectStates(eqx.Module):
    """Output map that keeps the latent states at `indices`, for example the voltage of a neuron model."""

    indices: tuple[int, ...] = eqx.field(static=True)

    @property
    def size(self) -> int:
        return len(self.indices)

    def __call__(self, path: Float[Array, "T d"]) -> Float[Array, "T p"]:
        return path[:, jnp.asarray(self.indices)]


class ModelReadout(eqx.Module):
    """Expected observations per bin of a fitted model's path."""

    model: eqx.Module
    size: int = eqx.field(static=True)

    def __init__(self, model):
        self.model = model
        self.size = _channel_count(model)

    def __call__(self, path: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return self.model.observation.mean(self.model.observed(path))


class ModelObservation(eqx.Module):
    """Observations drawn from a fitted model's observation model along a path."""

    model: eqx.Module
    size: int = eqx.field(static=True)

    def __init__(self, model):
        self.model = model
        self.size = _channel_count(model)

    def __call__(self, key: PRNGKeyArray, path: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return self.model.observation.sample(key, self.model.observed(path))


def _stimulus_size(model) -> int:
    encoder = model.encoder
    if hasattr(encoder, "linear"):
        return encoder.linear.in_features
    if hasattr(encoder, "mlp"):
        return encoder.mlp.in_size
    return encoder.output_size


def _channel_count(model) -> int:
    readout = model.observation.readout
    return readout.out_features


# -- settings, bounds and cost ------------------------------------------------


@dataclass(frozen=True)
class ControlSettings:
    """Bounds, penalties and optimiser settings of an input design.

    `u_min` and `u_max` are one value for every input channel or one per
    channel. `smoothness` weighs the mean squared difference of consecutive
    inputs, `energy` the mean squared input. `n_samples` noise samples are
    averaged per cost evaluation, over `n_iterations` Adam steps at
    `learning_rate` on the unconstrained input values.
    """

    u_min: float | tuple[float, ...] = -1.0
    u_max: float | tuple[float, ...] = 1.0
    smoothness: float = 0.0
    energy: float = 0.0
    n_samples: int = 16
    n_iterations: int = 200
    learning_rate: float = 0.1

    def __post_init__(self):
        for name in ("u_min", "u_max"):
            value = getattr(self, name)
            if isinstance(value, Sequence):
                object.__setattr__(self, name, tuple(float(v) for v in value))
        lower = np.atleast_1d(np.asarray(self.u_min, dtype=float))
        upper = np.atleast_1d(np.asarray(self.u_max, dtype=float))
        if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
            raise ConfigError(f"input bounds are u_min {self.u_min}, u_max {self.u_max}; expected finite numbers")
        if lower.shape != upper.shape and lower.size != 1 and upper.size != 1:
            raise ConfigError(f"u_min has {lower.size} values and u_max {upper.size}; expected the same count, or one")
        if np.any(lower >= upper):
            raise ConfigError(f"input bounds are u_min {self.u_min}, u_max {self.u_max}; expected u_min < u_max")
        for name in ("smoothness", "energy"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} penalty is {value}; expected a finite value >= 0")
        if not (isinstance(self.n_samples, int) and self.n_samples >= 1):
            raise ConfigError(f"n_samples is {self.n_samples!r}; expected an integer >= 1")
        if not (isinstance(self.n_iterations, int) and self.n_iterations >= 1):
            raise ConfigError(f"n_iterations is {self.n_iterations!r}; expected an integer >= 1")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning_rate is {self.learning_rate}; expected a value > 0")

    def bounds(self, input_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Return `(u_min, u_max)` as arrays of shape (input_size,), raising ConfigError on a size mismatch."""
        arrays = []
        for name in ("u_min", "u_max"):
            value = np.atleast_1d(np.asarray(getattr(self, name), dtype=np.float32))
            if value.size not in (1, input_size):
                raise ConfigError(f"{name} has {value.size} values; the system has {input_size} inputs")
            arrays.append(np.broadcast_to(value, (input_size,)).copy())
        return arrays[0], arrays[1]


def bounded_input(raw: Float[Array, "T m"], u_min, u_max) -> Float[Array, "T m"]:
    """Map unconstrained values onto `[u_min, u_max]`: `u_min + (u_max - u_min) * sigmoid(raw)`."""
    return u_min + (u_max - u_min) * jax.nn.sigmoid(raw)


def unbounded_input(u, u_min, u_max) -> np.ndarray:
    """Invert `bounded_input`, clipping `u` just inside the bounds first."""
    fraction = (np.asarray(u, np.float32) - u_min) / (u_max - u_min)
    fraction = np.clip(fraction, 1e-3, 1.0 - 1e-3)
    return np.log(fraction / (1.0 - fraction)).astype(np.float32)


def prepare_target(target, n_bins: int | None, output_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Return the target as (T, p) with NaNs set to 0 and the weights (1 where the target is finite).

    A 1-D target of length p is a set-point held over all `n_bins` bins.
    Raises DataError for a target of the wrong shape or with no finite entry.
    """
    array = np.asarray(target, dtype=np.float32)
    if array.ndim == 1 and n_bins is not None:
        array = np.broadcast_to(array, (n_bins, array.shape[0]))
    if array.ndim != 2:
        raise DataError(f"target has shape {array.shape}; expected (time, outputs) or a set-point of shape (outputs,)")
    if output_size is not None and array.shape[1] != output_size:
        raise DataError(f"target has {array.shape[1]} columns; the controlled output has {output_size}")
    if array.shape[0] < 2:
        raise DataError(f"target has {array.shape[0]} time bins; expected at least 2")
    if np.any(np.isinf(array)):
        raise DataError("target contains infinite values; expected finite values, or NaN where there is no target")
    weights = np.isfinite(array).astype(np.float32)
    if not weights.any():
        raise DataError("target is NaN everywhere; expected at least one finite value to track")
    return np.nan_to_num(array, nan=0.0), weights


def cost_terms(
    system: ControlledSystem,
    raw: Float[Array, "T m"],
    x0s: Float[Array, "S d"],
    target: Float[Array, "T p"],
    weights: Float[Array, "T p"],
    bounds: tuple[Array, Array],
    t0: float,
    bin_width: float,
    key: PRNGKeyArray,
    settings: ControlSettings,
) -> dict[str, Float[Array, ""]]:
    """Return the cost terms `tracking`, `smoothness`, `energy` and their weighted sum `total`, averaged over x0s."""
    u = bounded_input(raw, *bounds)
    keys = jax.random.split(key, x0s.shape[0])
    outputs = jax.vmap(lambda x0, k: system.outputs(system.simulate(x0, u, t0, bin_width, k)))(x0s, keys)
    tracking = jnp.sum(weights * (outputs - target) ** 2) / (jnp.sum(weights) * x0s.shape[0])
    smoothness = jnp.mean(jnp.sum(jnp.diff(u, axis=0) ** 2, axis=-1))
    energy = jnp.mean(jnp.sum(u**2, axis=-1))
    total = tracking + settings.smoothness * smoothness + settings.energy * energy
    return {"total": total, "tracking": tracking, "smoothness": smoothness, "energy": energy}


@eqx.filter_jit
def _optimise(system, raw0, x0s, target, weights, bounds, t0, bin_width, key, settings: ControlSettings):
    """Run `settings.n_iterations` Adam steps on the unconstrained input; return it and the cost per step."""
    optimizer = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(settings.learning_rate))

    def cost(raw, step_key):
        terms = cost_terms(system, raw, x0s, target, weights, bounds, t0, bin_width, step_key, settings)
        return terms["total"]

    def step(carry, index):
        raw, state = carry
        value, gradient = jax.value_and_grad(cost)(raw, jax.random.fold_in(key, index))
        updates, state = optimizer.update(gradient, state, raw)
        return (optax.apply_updates(raw, updates), state), value

    (raw, _), history = jax.lax.scan(step, (raw0, optimizer.init(raw0)), jnp.arange(settings.n_iterations))
    return raw, history


@eqx.filter_jit
def _simulate_one(system, x0, u, t0, bin_width, key):
    return system.simulate(x0, u, t0, bin_width, key)


@eqx.filter_jit
def _simulate_samples(system, x0s, u, t0, bin_width, key):
    keys = jax.random.split(key, x0s.shape[0])
    return jax.vmap(lambda x0, k: system.simulate(x0, u, t0, bin_width, k))(x0s, keys)


# -- open-loop design ----------------------------------------------------------


@dataclass
class ControlResult:
    """A designed input and what it does.

    `input` (T, m) is the input and `ts` (T,) the bin times in seconds.
    `paths` (S, T, d) and `outputs` (S, T, p) are the controlled system's
    latent paths and outputs over S noise samples, and `target` (T, p) is the
    target (NaN where none).
    `terms` contains the cost terms on those samples plus `tracking_rmse` (root
    mean squared output error where a target is set) and
    `max_bound_violation` (how far the input leaves its bounds, 0 by
    construction). `history` is the optimiser's cost per iteration.
    """

    input: np.ndarray
    ts: np.ndarray
    paths: np.ndarray
    outputs: np.ndarray
    target: np.ndarray
    terms: dict[str, float]
    history: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _initial_raw(initial_input, n_bins: int, u_min: np.ndarray, u_max: np.ndarray) -> np.ndarray:
    if initial_input is None:
        # Start at zero input where the bounds allow it, else at the middle of the bounds.
        initial_input = np.clip(np.zeros_like(u_min), u_min, u_max)
    initial = np.broadcast_to(np.asarray(initial_input, np.float32), (n_bins, u_min.shape[0]))
    return unbounded_input(initial, u_min, u_max)


def _initial_samples(x0, x0_std, n_samples: int, state_size: int, key) -> jnp.ndarray:
    x0 = jnp.asarray(x0, jnp.float32)
    if x0.shape != (state_size,):
        raise DataError(f"x0 has shape {tuple(x0.shape)}; expected ({state_size},), one value per state")
    if x0_std is None:
        return jnp.broadcast_to(x0, (n_samples, state_size))
    std = jnp.broadcast_to(jnp.asarray(x0_std, jnp.float32), (state_size,))
    return x0 + std * jax.random.normal(key, (n_samples, state_size))


def summarise(
    system: ControlledSystem,
    u: np.ndarray,
    x0s,
    target: np.ndarray,
    weights: np.ndarray,
    settings: ControlSettings,
    t0: float,
    bin_width: float,
    key: PRNGKeyArray,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Simulate input `u` from each of `x0s` with fresh noise; return the cost terms, paths and outputs."""
    u_min, u_max = settings.bounds(system.input_size)
    paths = _simulate_samples(system, jnp.asarray(x0s), jnp.asarray(u), jnp.float32(t0), float(bin_width), key)
    outputs = np.asarray(jax.vmap(system.outputs)(paths))
    terms = _terms_of(u, outputs, target, weights, settings, u_min, u_max)
    return terms, np.asarray(paths), outputs


def _terms_of(u, outputs, target, weights, settings, u_min, u_max) -> dict[str, float]:
    squared_error = weights * (outputs - target) ** 2
    tracking = float(np.sum(squared_error) / (np.sum(weights) * outputs.shape[0]))
    smoothness = float(np.mean(np.sum(np.diff(u, axis=0) ** 2, axis=-1)))
    energy = float(np.mean(np.sum(u**2, axis=-1)))
    violation = float(max(np.max(u_min - u, initial=0.0), np.max(u - u_max, initial=0.0), 0.0))
    return {
        "total": tracking + settings.smoothness * smoothness + settings.energy * energy,
        "tracking": tracking,
        "smoothness": smoothness,
        "energy": energy,
        "tracking_rmse": math.sqrt(tracking),
        "max_bound_violation": violation,
    }


def design_open_loop(
    system: ControlledSystem,
    x0,
    target,
    settings: ControlSettings,
    t0: float,
    bin_width: float,
    key: PRNGKeyArray,
    x0_std=None,
    initial_input=None,
) -> ControlResult:
    """Design the whole input at once by gradient descent through the SDE from `x0` (plus `x0_std` spread).

    `target` is (T, p) (NaN where there is no target) or a set-point (p,) that
    then needs `initial_input` of shape (T, m) to fix T. The returned terms
    are measured on fresh noise samples, not those the optimiser saw.
    """
    n_bins = None if initial_input is None or np.ndim(initial_input) < 2 else np.shape(initial_input)[0]
    target, weights = prepare_target(target, n_bins, system.output_size)
    _check_bin_width(bin_width)
    u_min, u_max = settings.bounds(system.input_size)
    key_x0, key_optimise, key_check = jax.random.split(key, 3)
    x0s = _initial_samples(x0, x0_std, settings.n_samples, system.state_size, key_x0)
    raw0 = jnp.asarray(_initial_raw(initial_input, target.shape[0], u_min, u_max))
    bounds = (jnp.asarray(u_min), jnp.asarray(u_max))

    logger.info("designing an open-loop input over %d bins with %d noise samples", target.shape[0], settings.n_samples)
    raw, history = _optimise(system, raw0, x0s, jnp.asarray(target), jnp.asarray(weights), bounds,
                             jnp.float32(t0), float(bin_width), key_optimise, settings)
    u = np.asarray(bounded_input(raw, *bounds))
    terms, paths, outputs = summarise(system, u, x0s, target, weights, settings, t0, bin_width, key_check)
    ts = t0 + bin_width * np.arange(target.shape[0])
    return ControlResult(u, ts, paths, outputs, np.where(weights > 0, target, np.nan), terms, np.asarray(history))


def _check_bin_width(bin_width: float) -> None:
    if not (math.isfinite(bin_width) and bin_width > 0):
        raise ConfigError(f"bin_width is {bin_width}; expected a duration in seconds > 0")


# -- state estimation ------------------------------------------------------------


class TrueState:
    """The plant's true state, read directly: for a known system simulated here."""

    bins_needed = 1

    def estimate(self, history: dict[str, np.ndarray], key, n_samples: int) -> jnp.ndarray:
        return jnp.broadcast_to(jnp.asarray(history["states"][-1]), (n_samples, history["states"].shape[1]))


ESTIMATOR_OBSERVATIONS = ("all", "window")


class RecognitionEstimator:
    """State estimate of a fitted `LatentUDE` from the observations received so far.

    With `observations="all"` (the default), the estimate is the model's
    posterior at the current bin given every observation since the start of
    control. The recognition model infers `q(x0 | y)` from the first
    `n_init_bins` observations and a context from all of them, and samples of
    the posterior SDE (prior drift plus the context-driven correction) are
    integrated from `x0` with the inputs that were applied, up to the current
    bin. The recognition model's context at bin k summarises the observations
    from k to the present, so later observations correct the path.

    With `observations="window"`, the recognition model reads only the last
    `n_init_bins` observations. It infers the state at the first of them, and
    samples of that state are pushed through the prior SDE to the current bin.
    This costs a few bins per estimate instead of the whole history, but
    ignores the older observations.

    Either way, the controller waits `n_init_bins - 1` bins before its first plan.

    NOTE: for an ODE model the posterior has no correction term, so "all" then only
    uses the first `n_init_bins` observations, propagated through the fitted ODE.
    """

    def __init__(self, model, observations: str = "all"):
        if observations not in ESTIMATOR_OBSERVATIONS:
            raise ConfigError(f"observations is {observations!r}; expected one of {ESTIMATOR_OBSERVATIONS}")
        self.model = model
        self.system = ControlledSystem.from_model(model)
        self.bins_needed = model.recognition.n_init_bins
        self.observations = observations

    def estimate(self, history: dict[str, np.ndarray], key, n_samples: int) -> jnp.ndarray:
        if history.get("observations") is None:
            raise ConfigError("the plant draws no observations, so the recognition model has nothing to read")
        bin_width = float(history["bin_width"])
        if self.observations == "window":
            window = self.bins_needed
            y = jnp.asarray(history["observations"][-window:])
            u = jnp.asarray(history["inputs"][-window:])
            t0 = jnp.float32(history["ts"][-window])
            return _estimate_from_window(self.model, self.system, y, u, t0, bin_width, key, n_samples)

        y, u, n_observed = _right_aligned(history["observations"], history["inputs"], self.bins_needed)
        t0 = jnp.float32(history["ts"][0])
        return _estimate_from_prefix(self.model, y, u, jnp.int32(n_observed), t0, bin_width, key, n_samples)


def _right_aligned(observations: np.ndarray, inputs: np.ndarray, min_bins: int) -> tuple[jnp.ndarray, jnp.ndarray, int]:
    """Place the history at the end of a buffer whose length is the next power of two.

    A few buffer lengths cover a whole control run, so the estimator compiles a
    few times instead of once per planning bin. The padding in front is zero
    observations and the first input. The recognition model reads the
    observations backwards in time, so padding before the history does not
    change its context over the history.
    """
    n_observed = observations.shape[0]
    length = 1 << (max(n_observed, min_bins, 2) - 1).bit_length()
    padding = length - n_observed
    y = np.concatenate([np.zeros((padding, observations.shape[1]), np.float32), observations])
    u = np.concatenate([np.repeat(inputs[:1], padding, axis=0), inputs])
    return jnp.asarray(y, jnp.float32), jnp.asarray(u, jnp.float32), n_observed


@eqx.filter_jit
def _estimate_from_window(model, system, y, u, t0, bin_width, key, n_samples):
    mean0, std0 = model.recognition.initial_state(model.recognition_input(y), model.encode(u))
    key_x0, key_noise = jax.random.split(key)
    x0s = mean0 + std0 * jax.random.normal(key_x0, (n_samples, mean0.shape[0]))
    paths = _simulate_samples(system, x0s, u, t0, bin_width, key_noise)
    return paths[:, -1]


@eqx.filter_jit
def _estimate_from_prefix(model, y, u, n_observed, t0, bin_width, key, n_samples):
    """Sample the posterior state at the last observed bin, given observations `y[-n_observed:]` of the buffer."""
    length = y.shape[0]
    offset = length - n_observed
    drive = model.encode(u)
    readable = model.recognition_input(y)

    n_init = model.recognition.n_init_bins
    mean0, std0 = model.recognition.initial_state(
        jax.lax.dynamic_slice_in_dim(readable, offset, n_init), jax.lax.dynamic_slice_in_dim(drive, offset, n_init)
    )
    # Shift the history to the start of the buffer, so that the solver's bin k is history bin k. The padding
    # then lies after the last observed bin, where the path is never read.
    context = None
    if not model.sde.is_ode:
        context = jnp.roll(model.recognition.context(readable, drive), -offset, axis=0)
    fields = model._fields(jnp.roll(drive, -offset, axis=0), context)
    paths, _ = model._sample_paths(fields, mean0, std0, t0, bin_width, length, key, n_samples)
    return paths[:, n_observed - 1]


# -- receding-horizon control -----------------------------------------------------


@dataclass
class RecedingHorizonResult:
    """A closed-loop run: the input applied, the plant's single noisy path and how well it tracked.

    `input` (T, m), `ts` (T,), `states` (T, d), `outputs` (T, p) and, when the
    plant draws them, `observations` (T, n). `estimates` (T, d) is the
    estimated state mean at each planning bin (NaN elsewhere). `terms` as for
    `ControlResult`, on this one path.
    """

    input: np.ndarray
    ts: np.ndarray
    states: np.ndarray
    outputs: np.ndarray
    target: np.ndarray
    estimates: np.ndarray
    observations: np.ndarray | None
    terms: dict[str, float]


def _window(array: np.ndarray, start: int, length: int) -> np.ndarray:
    """Return `length` rows from `start`, repeating the last row beyond the end."""
    rows = array[start : start + length]
    if rows.shape[0] < length:
        padding = np.repeat(array[-1:], length - rows.shape[0], axis=0)
        rows = np.concatenate([rows, padding])
    return rows


def receding_horizon(
    system: ControlledSystem,
    x0,
    target,
    settings: ControlSettings,
    t0: float,
    bin_width: float,
    key: PRNGKeyArray,
    horizon: int,
    control_interval: int = 1,
    plant: ControlledSystem | None = None,
    estimator=None,
) -> RecedingHorizonResult:
    """Control `plant` (default: `system`) in closed loop, re-planning on `system` every `control_interval` bins.

    At each planning bin k the estimator returns `settings.n_samples` samples
    of the current state. The input over bins k..k+horizon is optimised from
    them (warm-started from the previous plan), its first `control_interval`
    bins are applied, and the plant is integrated with noise. Beyond the end
    of the target its last row is repeated with weight 0. `target` is (T, p)
    with NaN where there is no target. Before the estimator has
    `bins_needed` bins of history the input stays at its initial value.
    """
    plant = plant or system
    estimator = estimator or TrueState()
    target, weights = prepare_target(target, None, system.output_size)
    _check_bin_width(bin_width)
    if not (isinstance(horizon, int) and horizon >= 1):
        raise ConfigError(f"horizon is {horizon!r}; expected an integer number of bins >= 1")
    if not (isinstance(control_interval, int) and 1 <= control_interval <= horizon):
        raise ConfigError(f"control_interval is {control_interval!r}; expected an integer from 1 to horizon {horizon}")
    if plant.input_size != system.input_size or plant.state_size != system.state_size:
        raise ConfigError(
            f"the plant has {plant.state_size} states and {plant.input_size} inputs; "
            f"the model used for planning has {system.state_size} and {system.input_size}"
        )

    n_bins = target.shape[0]
    u_min, u_max = settings.bounds(system.input_size)
    bounds = (jnp.asarray(u_min), jnp.asarray(u_max))
    ts = t0 + bin_width * np.arange(n_bins)

    raw_plan = _initial_raw(None, horizon + 1, u_min, u_max)
    resting_input = np.asarray(bounded_input(jnp.asarray(raw_plan[0]), *bounds))
    states = np.zeros((n_bins, system.state_size), np.float32)
    states[0] = np.asarray(x0, np.float32)
    inputs = np.repeat(resting_input[None], n_bins, axis=0)
    estimates = np.full_like(states, np.nan)
    observations = None
    if plant.observation is not None:
        observations = np.zeros((n_bins, plant.observation.size), np.float32)
        observations[:1] = np.asarray(plant.observation(jax.random.fold_in(key, n_bins), jnp.asarray(states[:1])))

    current = 0
    while current < n_bins - 1:
        step_key = jax.random.fold_in(key, current)
        key_estimate, key_plan, key_plant, key_observe = jax.random.split(step_key, 4)
        length = min(control_interval, n_bins - 1 - current)
        planning = current + 1 >= estimator.bins_needed
        if not planning:
            # Wait at rest only until the estimator has its window, so the first plan is not delayed further.
            length = min(length, estimator.bins_needed - 1 - current)

        if planning:
            history = {"states": states[: current + 1], "inputs": inputs[: current + 1], "ts": ts[: current + 1],
                       "bin_width": bin_width,
                       "observations": None if observations is None else observations[: current + 1]}
            x0s = estimator.estimate(history, key_estimate, settings.n_samples)
            estimates[current] = np.asarray(jnp.mean(x0s, axis=0))
            window_target = _window(target, current, horizon + 1)
            window_weights = _window(weights, current, horizon + 1)
            window_weights[n_bins - current :] = 0.0
            raw_plan, _ = _optimise(system, jnp.asarray(raw_plan), x0s, jnp.asarray(window_target),
                                    jnp.asarray(window_weights), bounds, jnp.float32(ts[current]), float(bin_width),
                                    key_plan, settings)
            raw_plan = np.asarray(raw_plan)
            inputs[current : current + length] = np.asarray(bounded_input(jnp.asarray(raw_plan[:length]), *bounds))
            # The next plan starts from this one shifted by the bins just applied.
            raw_plan = np.concatenate([raw_plan[length:], np.repeat(raw_plan[-1:], length, axis=0)])

        # NOTE: each segment restarts a delayed plant's history, so for the first D_ij seconds of a segment
        # node i reads node j held at the segment's first state instead of its past.
        segment = _simulate_one(plant, jnp.asarray(states[current]), jnp.asarray(inputs[current : current + length + 1]),
                                jnp.float32(ts[current]), float(bin_width), key_plant)
        states[current + 1 : current + length + 1] = np.asarray(segment[1:])
        if observations is not None:
            observed = plant.observation(key_observe, segment[1:])
            observations[current + 1 : current + length + 1] = np.asarray(observed)
        current += length

    outputs = np.asarray(plant.outputs(jnp.asarray(states)))
    terms = _terms_of(inputs, outputs[None], target, weights, settings, u_min, u_max)
    return RecedingHorizonResult(inputs, ts, states, outputs, np.where(weights > 0, target, np.nan), estimates,
                                 observations, terms)
