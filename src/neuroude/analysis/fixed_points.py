"""Fixed points and slow points of a drift `f(x, u)` at a constant input `u`.

Every start `x_s` is moved to a local minimum of the kinetic energy

    q(x) = 0.5 * |f(x, u)|^2

by a least-squares solver (Levenberg-Marquardt on the residual `f`, or BFGS on
`q`), vmapped over the starts. A minimum with `q < tol` is a fixed point, where
`f = 0`. A minimum above `tol` is a slow point: the flow there is slow but not
zero, which is how a network can hold a state for a while without an
equilibrium. Each
point is linearised, `J = df/dx` by `jax.jacfwd`, and labelled by the
eigenvalues of `J`. Minima closer than `merge_radius` are merged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float, PRNGKeyArray

from ..errors import ConfigError

Drift = Callable[[Float[Array, " d"], Float[Array, " m"]], Float[Array, " d"]]

SOLVERS = ("levenberg-marquardt", "bfgs")
FIXED_POINT = "fixed point"
SLOW_POINT = "slow point"


class Autonomous(eqx.Module):
    """The drift `f(x, u) = vector_field(t, x, u)` at a fixed time `t`.

    A PyTree, so jitted analysis functions compile once per model structure
    and reuse the compilation for other parameter values.
    """

    vector_field: eqx.Module
    t: float = eqx.field(static=True, default=0.0)

    def __call__(self, x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, " d"]:
        return self.vector_field(self.t, x, u)


def autonomous(vector_field, t: float = 0.0) -> Drift:
    """Return `f(x, u) = vector_field(t, x, u)` for a drift module with the process model's `(t, x, u)` signature.

    A drift that depends on time is analysed as the frozen vector field at that instant.
    """
    return Autonomous(vector_field, t)


@dataclass
class Equilibrium:
    """A fixed point or slow point with its linearisation.

    `speed` is `|f(x, u)|`, `eigenvalues` those of the Jacobian (complex, sorted
    by decreasing real part), `n_unstable` the number with a real part above
    1e-4 times the largest magnitude, and `n_starts` how many starts ended at
    this point.
    """

    state: np.ndarray
    kind: str
    speed: float
    eigenvalues: np.ndarray
    stability: str
    n_unstable: int
    n_starts: int = 1
    jacobian: np.ndarray = field(repr=False, default=None)

    @property
    def is_stable(self) -> bool:
        return self.kind == FIXED_POINT and self.stability.startswith("stable")

    def to_dict(self) -> dict:
        """Return the point as plain JSON values; eigenvalues as [real, imaginary] pairs."""
        return {
            "state": [float(value) for value in self.state],
            "kind": self.kind,
            "speed": float(self.speed),
            "stability": self.stability,
            "n_unstable": int(self.n_unstable),
            "eigenvalues": [[float(value.real), float(value.imag)] for value in self.eigenvalues],
            "n_starts": int(self.n_starts),
        }


def count_unstable(eigenvalues, relative_tolerance: float = 1e-4) -> int:
    """Count the eigenvalues whose real part is above `relative_tolerance` times the largest magnitude."""
    eigenvalues = np.asarray(eigenvalues, dtype=complex)
    scale = max(float(np.max(np.abs(eigenvalues))), 1e-30)
    return int(np.sum(eigenvalues.real > relative_tolerance * scale))


def classify(eigenvalues, relative_tolerance: float = 1e-4) -> str:
    """Label a linearisation from the eigenvalues of its Jacobian.

    Returns "stable node" or "stable focus" when all real parts are negative,
    "unstable node" or "unstable focus" when all are positive, and "saddle" or
    "saddle-focus" when both signs occur. The focus labels mark a complex pair.
    "non-hyperbolic" means a real part is zero within `relative_tolerance`
    times the largest eigenvalue magnitude, where linearisation does not
    decide stability.
    """
    eigenvalues = np.asarray(eigenvalues, dtype=complex)
    scale = max(float(np.max(np.abs(eigenvalues))), 1e-30)
    real = eigenvalues.real
    has_complex = bool(np.any(np.abs(eigenvalues.imag) > relative_tolerance * scale))
    if np.any(np.abs(real) <= relative_tolerance * scale):
        return "non-hyperbolic"
    if np.all(real < 0):
        return "stable focus" if has_complex else "stable node"
    if np.all(real > 0):
        return "unstable focus" if has_complex else "unstable node"
    return "saddle-focus" if has_complex else "saddle"


def box_starts(lower, upper, n_starts: int, key: PRNGKeyArray) -> Float[Array, "n d"]:
    """Draw `n_starts` states uniformly in the box `lower <= x <= upper` (one bound per state)."""
    lower = jnp.atleast_1d(jnp.asarray(lower, jnp.float32))
    upper = jnp.atleast_1d(jnp.asarray(upper, jnp.float32))
    if lower.shape != upper.shape or lower.ndim != 1:
        raise ConfigError(f"box bounds have shapes {lower.shape} and {upper.shape}; expected two equal (d,) shapes")
    if not bool(jnp.all(upper > lower)):
        raise ConfigError(f"box upper bounds {upper.tolist()} are not all above lower bounds {lower.tolist()}")
    if n_starts < 1:
        raise ConfigError(f"n_starts is {n_starts}; expected an integer >= 1")
    unit = jax.random.uniform(key, (n_starts, lower.shape[0]), jnp.float32)
    return lower + unit * (upper - lower)


def visited_starts(states, n_starts: int, key: PRNGKeyArray, jitter: float = 0.05) -> Float[Array, "n d"]:
    """Draw `n_starts` rows of `states` (visited states, (N, d)) and add Gaussian jitter of `jitter` times each state's standard deviation."""
    states = jnp.asarray(states, jnp.float32)
    if states.ndim != 2 or states.shape[0] < 1:
        raise ConfigError(f"visited states have shape {states.shape}; expected (N, d) with N >= 1")
    if n_starts < 1:
        raise ConfigError(f"n_starts is {n_starts}; expected an integer >= 1")
    key_rows, key_jitter = jax.random.split(key)
    rows = jax.random.randint(key_rows, (n_starts,), 0, states.shape[0])
    spread = jnp.std(states, axis=0) + 1e-6
    return states[rows] + jitter * spread * jax.random.normal(key_jitter, (n_starts, states.shape[1]))


@eqx.filter_jit
def _minimise_all(drift: Drift, u, starts, solver_name: str, rtol: float, atol: float, max_steps: int):
    """Minimise q from every start; return the end states and whether the solver reported success."""

    def residual(x, args):
        return drift(x, u)

    def energy(x, args):
        value = drift(x, u)
        return 0.5 * jnp.sum(value**2)

    def one(start):
        if solver_name == "bfgs":
            solution = optx.minimise(energy, optx.BFGS(rtol=rtol, atol=atol), start, max_steps=max_steps, throw=False)
        else:
            solver = optx.LevenbergMarquardt(rtol=rtol, atol=atol)
            solution = optx.least_squares(residual, solver, start, max_steps=max_steps, throw=False)
        return solution.value, solution.result == optx.RESULTS.successful

    return jax.vmap(one)(starts)


@eqx.filter_jit
def _linearise_all(drift: Drift, u, states):
    """Return `f`, the Jacobian of `f` and the Hessian of q at each state."""

    def energy(x):
        value = drift(x, u)
        return 0.5 * jnp.sum(value**2)

    values = jax.vmap(lambda x: drift(x, u))(states)
    jacobians = jax.vmap(jax.jacfwd(lambda x: drift(x, u)))(states)
    hessians = jax.vmap(jax.hessian(energy))(states)
    return values, jacobians, hessians


def _check_inputs(u, starts, solver: str, tol: float) -> tuple[jax.Array, jax.Array]:
    if solver not in SOLVERS:
        raise ConfigError(f"solver is {solver!r}; expected one of {SOLVERS}")
    if not tol > 0:
        raise ConfigError(f"tol is {tol}; expected a positive threshold on q = 0.5 |f|^2")
    starts = jnp.asarray(starts)
    if starts.ndim != 2 or starts.shape[0] < 1:
        raise ConfigError(f"starts have shape {starts.shape}; expected (n_starts, latent size) with n_starts >= 1")
    if not jnp.issubdtype(starts.dtype, jnp.floating):
        starts = starts.astype(jnp.float32)
    u = jnp.atleast_1d(jnp.asarray(u, starts.dtype)) if u is not None else jnp.zeros((0,), starts.dtype)
    return u, starts


def find_fixed_points(
    drift: Drift,
    u,
    starts,
    tol: float = 1e-8,
    solver: str = "levenberg-marquardt",
    merge_radius: float | None = None,
    keep_slow_points: bool = True,
    max_steps: int = 256,
    rtol: float = 1e-6,
    atol: float = 1e-8,
) -> list[Equilibrium]:
    """Find the fixed points and slow points of `drift(x, u)` reached from `starts` (n, d).

    A minimum with `q = 0.5 |f|^2 < tol` is a fixed point. One above `tol` is
    kept as a slow point when the solver converged, the gradient `J^T f` of q is
    small against `|J| |f|` and the Hessian of q has no clearly negative
    eigenvalue (a local minimum, not a saddle of q). Points closer than
    `merge_radius` (default 1e-3 times the spread of the starts, at least 1e-6)
    are merged, keeping the lowest q. Returns fixed points first, then slow
    points, each group ordered by the first state.
    """
    u, starts = _check_inputs(u, starts, solver, tol)
    ends, converged = _minimise_all(drift, u, starts, solver, rtol, atol, max_steps)
    values, jacobians, hessians = _linearise_all(drift, u, ends)
    ends, values = np.asarray(ends, np.float64), np.asarray(values, np.float64)
    jacobians, hessians = np.asarray(jacobians, np.float64), np.asarray(hessians, np.float64)
    converged = np.asarray(converged)

    if merge_radius is None:
        spread = float(np.max(np.ptp(np.asarray(starts), axis=0))) if starts.shape[0] > 1 else 1.0
        merge_radius = max(1e-3 * spread, 1e-6)

    candidates = []
    for index in range(ends.shape[0]):
        kind = _kind(values[index], jacobians[index], hessians[index], bool(converged[index]), tol)
        if kind is None or (kind == SLOW_POINT and not keep_slow_points):
            continue
        if not np.all(np.isfinite(ends[index])):
            continue
        candidates.append((kind, index))

    points = _merge([(kind, ends[i], values[i], jacobians[i]) for kind, i in candidates], merge_radius)
    return sorted(points, key=lambda point: (point.kind != FIXED_POINT, tuple(point.state)))


def _kind(value, jacobian, hessian, converged: bool, tol: float) -> str | None:
    energy = 0.5 * float(value @ value)
    if not np.isfinite(energy):
        return None
    if energy < tol:
        return FIXED_POINT
    if not converged:
        return None

    gradient = jacobian.T @ value
    scale = np.linalg.norm(jacobian) * np.linalg.norm(value) + 1e-30
    if np.linalg.norm(gradient) > 1e-3 * scale:
        return None
    curvature = np.linalg.eigvalsh(0.5 * (hessian + hessian.T))
    if curvature.min() < -1e-6 * max(abs(curvature).max(), 1e-30):
        return None
    return SLOW_POINT


def _merge(candidates, merge_radius: float) -> list[Equilibrium]:
    """Group candidates closer than `merge_radius` to a group's best point and linearise each group's best."""
    order = sorted(range(len(candidates)), key=lambda i: float(candidates[i][2] @ candidates[i][2]))
    groups: list[list[int]] = []
    for i in order:
        state = candidates[i][1]
        for group in groups:
            if np.linalg.norm(state - candidates[group[0]][1]) < merge_radius:
                group.append(i)
                break
        else:
            groups.append([i])

    points = []
    for group in groups:
        kind, state, value, jacobian = candidates[group[0]]
        eigenvalues = np.linalg.eigvals(jacobian)
        eigenvalues = eigenvalues[np.argsort(-eigenvalues.real, kind="stable")]
        points.append(Equilibrium(
            state=state, kind=kind, speed=float(np.linalg.norm(value)), eigenvalues=eigenvalues,
            stability=classify(eigenvalues), n_unstable=count_unstable(eigenvalues),
            n_starts=len(group), jacobian=jacobian,
        ))
    return points
