"""Noise around attractors: stationary spread near a stable point and escape times between attractors.

The SDE is `dx = f(x, u) dt + sigma(x, u) dW` with diagonal `sigma`, simulated
by Euler-Maruyama (the Ito solution). Near a stable fixed point `x*` with
Jacobian `J`, the linearised process is Ornstein-Uhlenbeck and its stationary
covariance `C` solves the Lyapunov equation

    J C + C J^T + diag(sigma(x*)^2) = 0,

which `lyapunov_covariance` returns for comparison with the simulated spread.
Escape from one attractor to another is rare for weak noise. For a gradient
system `dx = -U'(x) dt + sqrt(2 D) dW` Kramers' formula gives the mean escape
time `2 pi / sqrt(U''(a) |U''(s)|) * exp((U(s) - U(a)) / D)` over a barrier at
`s` from a well at `a`, to leading order in `D / (U(s) - U(a))` (Kramers'
formula in the overdamped limit).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jaxtyping import Array, Float, PRNGKeyArray

from ..errors import ConfigError
from .fixed_points import Drift

Diffusion = Callable[[Float[Array, " d"], Float[Array, " m"]], Float[Array, " d"]]


def _check_time_grid(dt: float, duration: float, name: str = "duration") -> int:
    if not dt > 0:
        raise ConfigError(f"dt is {dt}; expected a positive time step")
    if not duration >= dt:
        raise ConfigError(f"{name} is {duration}; expected at least one step of dt = {dt}")
    return int(round(duration / dt))


def _as_inputs(u, x0) -> tuple[jax.Array, jax.Array]:
    x0 = jnp.asarray(x0, jnp.float32)
    if x0.ndim != 2:
        raise ConfigError(f"initial states have shape {x0.shape}; expected (n_paths, latent size)")
    u = jnp.zeros((0,), x0.dtype) if u is None else jnp.atleast_1d(jnp.asarray(u, x0.dtype))
    return u, x0


@eqx.filter_jit
def _euler_maruyama(drift, diffusion, u, x0, dt: float, n_steps: int, record_every: int, key):
    def step(x, step_key):
        noise = jax.random.normal(step_key, x.shape, x.dtype) * jnp.sqrt(dt)
        sigma = jax.vmap(lambda state: diffusion(state, u))(x)
        return x + jax.vmap(lambda state: drift(state, u))(x) * dt + sigma * noise, None

    def block(x, block_key):
        x, _ = jax.lax.scan(step, x, jax.random.split(block_key, record_every))
        return x, x

    _, recorded = jax.lax.scan(block, x0, jax.random.split(key, n_steps // record_every))
    return jnp.concatenate([x0[None], recorded]).transpose(1, 0, 2)


def simulate(
    drift: Drift, diffusion: Diffusion, u, x0, dt: float, duration: float, key: PRNGKeyArray, record_every: int = 1
) -> Float[Array, "n T d"]:
    """Simulate `dx = f dt + sigma dW` by Euler-Maruyama from each row of `x0` (n, d) for `duration`.

    Returns the states every `record_every` steps, starting with `x0`:
    `(n, 1 + steps // record_every, d)`. The last `steps % record_every` steps
    are not simulated. `diffusion(x, u)` returns the diagonal of sigma.
    """
    u, x0 = _as_inputs(u, x0)
    n_steps = _check_time_grid(dt, duration)
    if record_every < 1 or n_steps < record_every:
        raise ConfigError(f"record_every is {record_every}; expected an integer from 1 to the {n_steps} steps")
    return _euler_maruyama(drift, diffusion, u, x0, float(dt), n_steps, int(record_every), key)


def lyapunov_covariance(jacobian, sigma) -> np.ndarray:
    """Solve `J C + C J^T + diag(sigma^2) = 0` for the stationary covariance of the linearised process.

    Raises ConfigError unless every eigenvalue of `J` has a negative real part,
    because only then is there a stationary covariance.
    """
    jacobian = np.asarray(jacobian, np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (jacobian.shape[0],))
    eigenvalues = np.linalg.eigvals(jacobian)
    if np.any(eigenvalues.real >= 0):
        raise ConfigError(
            f"the Jacobian has eigenvalues {np.round(eigenvalues, 6).tolist()}; "
            "a stationary covariance needs all real parts negative (a stable point)"
        )
    covariance = scipy.linalg.solve_continuous_lyapunov(jacobian, -np.diag(sigma**2))
    return 0.5 * (covariance + covariance.T)


@dataclass
class StationarySpread:
    """Spread of simulated states around a stable point, and the linear (Lyapunov) prediction.

    `mean` and `covariance` are pooled over paths and recorded times after the
    burn-in; `linear_covariance` solves the Lyapunov equation at the point.
    """

    point: np.ndarray
    mean: np.ndarray
    covariance: np.ndarray
    linear_covariance: np.ndarray

    def to_dict(self) -> dict:
        return {
            "point": self.point.tolist(), "mean": self.mean.tolist(), "covariance": self.covariance.tolist(),
            "linear_covariance": self.linear_covariance.tolist(),
        }


def stationary_spread(
    drift: Drift,
    diffusion: Diffusion,
    u,
    point,
    key: PRNGKeyArray,
    n_paths: int = 64,
    dt: float = 1e-3,
    duration: float = 10.0,
    burn_in: float = 1.0,
    record_every: int = 10,
) -> StationarySpread:
    """Simulate `n_paths` paths from the stable `point` and compare their spread with the Lyapunov covariance.

    Samples before `burn_in` are dropped. Choose `duration` long against the
    slowest relaxation time `1 / |Re lambda|` so the pooled samples are many
    nearly independent draws.
    """
    point = np.atleast_1d(np.asarray(point, np.float64))
    if burn_in < 0 or burn_in >= duration:
        raise ConfigError(f"burn_in is {burn_in}; expected a value from 0 to below the duration {duration}")
    u_array = jnp.zeros((0,), jnp.float32) if u is None else jnp.atleast_1d(jnp.asarray(u, jnp.float32))
    x = jnp.asarray(point, jnp.float32)
    jacobian = jax.jacfwd(lambda state: drift(state, u_array))(x)
    linear = lyapunov_covariance(jacobian, diffusion(x, u_array))

    starts = jnp.broadcast_to(x, (n_paths, point.shape[0]))
    paths = np.asarray(simulate(drift, diffusion, u, starts, dt, duration, key, record_every), np.float64)
    first = int(math.ceil(burn_in / (dt * record_every))) + 1
    samples = paths[:, first:].reshape(-1, point.shape[0])
    return StationarySpread(point, samples.mean(axis=0), np.atleast_2d(np.cov(samples, rowvar=False)), linear)


@dataclass
class EscapeTimes:
    """First times at which paths started at `start` come within `radius` of `target`.

    `times` is NaN for a path still out at `max_time` (censored). The rate is
    the maximum-likelihood rate of an exponential waiting time with
    censoring, escapes divided by total time at risk, and `mean_time` is its
    inverse (infinite when no path escaped).
    """

    start: np.ndarray
    target: np.ndarray
    times: np.ndarray
    max_time: float

    @property
    def n_escaped(self) -> int:
        return int(np.sum(np.isfinite(self.times)))

    @property
    def rate(self) -> float:
        time_at_risk = np.sum(np.where(np.isfinite(self.times), self.times, self.max_time))
        return self.n_escaped / float(time_at_risk)

    @property
    def mean_time(self) -> float:
        return math.inf if self.n_escaped == 0 else 1.0 / self.rate

    def to_dict(self) -> dict:
        return {
            "start": self.start.tolist(), "target": self.target.tolist(), "n_paths": int(self.times.size),
            "n_escaped": self.n_escaped, "max_time": float(self.max_time), "mean_time": self.mean_time,
        }


@eqx.filter_jit
def _first_arrivals(drift, diffusion, u, x0, target, radius, dt: float, n_steps: int, key):
    def step(carry, inputs):
        x, arrival = carry
        index, step_key = inputs
        noise = jax.random.normal(step_key, x.shape, x.dtype) * jnp.sqrt(dt)
        sigma = jax.vmap(lambda state: diffusion(state, u))(x)
        x = x + jax.vmap(lambda state: drift(state, u))(x) * dt + sigma * noise
        arrived = jnp.linalg.norm(x - target, axis=1) < radius
        arrival = jnp.where(jnp.isnan(arrival) & arrived, (index + 1) * dt, arrival)
        return (x, arrival), None

    arrival0 = jnp.full((x0.shape[0],), jnp.nan, x0.dtype)
    inputs = (jnp.arange(n_steps), jax.random.split(key, n_steps))
    (_, arrival), _ = jax.lax.scan(step, (x0, arrival0), inputs)
    return arrival


def escape_times(
    drift: Drift,
    diffusion: Diffusion,
    u,
    start,
    target,
    key: PRNGKeyArray,
    radius: float | None = None,
    n_paths: int = 64,
    dt: float = 1e-3,
    max_time: float = 100.0,
) -> EscapeTimes:
    """Simulate `n_paths` paths from the attractor `start` until each comes within `radius` of `target`.

    `radius` defaults to a quarter of the distance between the two points.
    Paths keep running after they arrive, but only the first arrival counts.
    """
    start = np.atleast_1d(np.asarray(start, np.float64))
    target = np.atleast_1d(np.asarray(target, np.float64))
    if start.shape != target.shape:
        raise ConfigError(f"start has shape {start.shape} and target {target.shape}; expected equal shapes")
    distance = float(np.linalg.norm(target - start))
    radius = 0.25 * distance if radius is None else radius
    if not 0 < radius < distance:
        raise ConfigError(f"radius is {radius}; expected a value between 0 and the distance {distance} to the target")
    if n_paths < 1:
        raise ConfigError(f"n_paths is {n_paths}; expected an integer >= 1")
    n_steps = _check_time_grid(dt, max_time, "max_time")

    u, x0 = _as_inputs(u, np.broadcast_to(start, (n_paths, start.shape[0])))
    arrival = _first_arrivals(
        drift, diffusion, u, x0, jnp.asarray(target, x0.dtype), float(radius), float(dt), n_steps, key
    )
    return EscapeTimes(start, target, np.asarray(arrival, np.float64), float(n_steps * dt))


def kramers_escape_time(well_curvature: float, barrier_curvature: float, barrier_height: float, noise: float) -> float:
    """Return Kramers' mean escape time `2 pi / sqrt(U''(a) |U''(s)|) * exp(dU / D)` for `dx = -U' dt + sqrt(2 D) dW`.

    `noise` is `D`; the formula is exact to leading order for `D << dU`.
    """
    if well_curvature <= 0 or barrier_curvature == 0 or barrier_height <= 0 or noise <= 0:
        raise ConfigError(
            "Kramers' formula needs U''(well) > 0, U''(barrier) != 0, a positive barrier height and noise D > 0; "
            f"got {well_curvature}, {barrier_curvature}, {barrier_height}, {noise}"
        )
    prefactor = 2.0 * math.pi / math.sqrt(well_curvature * abs(barrier_curvature))
    return prefactor * math.exp(barrier_height / noise)
