"""One-parameter continuation of equilibria, with fold and Hopf detection.

A family `F(x, p)` (state `x` in R^d, scalar parameter `p`) has equilibria on
curves `F(x, p) = 0` in R^(d+1). `continue_equilibria` follows one curve by
pseudo-arclength continuation: from a point `y = (x, p)` with unit tangent
`t`, predict `y + h t`, then correct by Newton's method on

    F(y) = 0,    t . (y - y_predicted) = 0,

which stays well posed at a fold, where the curve turns back in `p`. Along the
curve,

- a fold (saddle-node) is where the tangent's `p` component changes sign. It is
  refined by Newton's method on `F = 0, det(dF/dx) = 0`;
- a Hopf point is where the real part of a complex pair of eigenvalues of
  `dF/dx` changes sign. It is refined by the Illinois false-position method on
  `p`, correcting `x` at each trial `p`.

`input_family` and `constant_family` build `F(x, p)` from a drift and an input
direction or a named mechanistic constant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..dynamics.parameters import Constant
from ..errors import ConfigError
from .fixed_points import Drift, classify

Family = Callable[[Float[Array, " d"], Float[Array, ""]], Float[Array, " d"]]

FOLD = "fold"
HOPF = "hopf"
BRANCH_POINT = "branch point"


def input_family(drift: Drift, u_base, direction) -> Family:
    """Return `F(x, p) = drift(x, u_base + p * direction)`: equilibria against the input level `p`."""
    u_base = jnp.atleast_1d(jnp.asarray(u_base, jnp.float32))
    direction = jnp.atleast_1d(jnp.asarray(direction, jnp.float32))
    if u_base.shape != direction.shape:
        raise ConfigError(f"u_base has shape {u_base.shape} and direction {direction.shape}; expected equal shapes")
    return lambda x, p: drift(x, u_base + p * direction)


def constant_family(vector_field, name: str, u, t: float = 0.0) -> Family:
    """Return `F(x, p)`: the drift module `vector_field(t, x, u)` with its mechanistic constant `name` set to `p`.

    `vector_field` is a mechanistic drift (or any module) with a `Constant` field `name`.
    Raises ConfigError naming the constants it has when `name` is not one.
    """
    constants = sorted(key for key, value in vars(vector_field).items() if isinstance(value, Constant))
    if name not in constants:
        raise ConfigError(f"{type(vector_field).__name__} has no constant {name!r}; expected one of {constants}")
    u = jnp.atleast_1d(jnp.asarray(u, jnp.float32))
    # A learnable "real" Constant returns its raw value unchanged and lets gradients reach it.
    template = Constant(0.0, "real", learnable=True)

    def family(x, p):
        replaced = eqx.tree_at(lambda constant: constant.raw, template, jnp.asarray(p, x.dtype))
        module = eqx.tree_at(lambda m: getattr(m, name), vector_field, replaced)
        return module(t, x, u)

    return family


@dataclass
class Bifurcation:
    """A fold or Hopf point (or an unrefined branch point) on a branch of equilibria.

    `frequency` is the imaginary part of the critical pair at a Hopf point, in
    radians per unit of time (0 otherwise). `refined` is False when the
    refinement did not converge and `parameter`, `state` are interpolated
    between the two branch points `index` and `index + 1`.
    """

    kind: str
    parameter: float
    state: np.ndarray
    index: int
    frequency: float = 0.0
    refined: bool = True

    def to_dict(self) -> dict:
        return {
            "kind": self.kind, "parameter": float(self.parameter), "state": [float(v) for v in self.state],
            "index": int(self.index), "frequency": float(self.frequency), "refined": bool(self.refined),
        }


@dataclass
class Branch:
    """Equilibria along one continuation curve: parameter (n,), states (n, d), eigenvalues (n, d), labels."""

    parameters: np.ndarray
    states: np.ndarray
    eigenvalues: np.ndarray
    stability: list[str]
    bifurcations: list[Bifurcation] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "parameters": self.parameters.tolist(),
            "states": self.states.tolist(),
            "max_real_eigenvalue": np.max(self.eigenvalues.real, axis=1).tolist(),
            "stability": list(self.stability),
            "bifurcations": [point.to_dict() for point in self.bifurcations],
        }


class _Evaluator:
    """Jitted `F(y)` and its Jacobian `[dF/dx, dF/dp]` at `y = (x, p)`, returned as float64 numpy arrays."""

    def __init__(self, family: Family, dtype):
        self.dtype = dtype

        def split(y):
            return family(y[:-1], y[-1])

        self._values = jax.jit(lambda y: (split(y), jax.jacfwd(split)(y)))

        def fold_system(y):
            jacobian_x = jax.jacfwd(lambda x: family(x, y[-1]))(y[:-1])
            return jnp.concatenate([split(y), jnp.linalg.det(jacobian_x)[None]])

        self._fold = jax.jit(lambda y: (fold_system(y), jax.jacfwd(fold_system)(y)))

    def __call__(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        value, jacobian = self._values(jnp.asarray(y, self.dtype))
        return np.asarray(value, np.float64), np.asarray(jacobian, np.float64)

    def fold(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        value, jacobian = self._fold(jnp.asarray(y, self.dtype))
        return np.asarray(value, np.float64), np.asarray(jacobian, np.float64)


def _converged(step: np.ndarray, y: np.ndarray, tol: float) -> bool:
    return bool(np.linalg.norm(step) <= tol * (1.0 + np.linalg.norm(y)))


def _solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray | None:
    try:
        step = np.linalg.solve(matrix, rhs)
    except np.linalg.LinAlgError:
        return None
    return step if np.all(np.isfinite(step)) else None


def _correct_at_parameter(evaluate: _Evaluator, x: np.ndarray, p: float, tol: float, max_iterations: int):
    """Newton's method on `F(x, p) = 0` at fixed `p`; return the state, or None when it does not converge."""
    for _ in range(max_iterations):
        value, jacobian = evaluate(np.append(x, p))
        step = _solve(jacobian[:, :-1], -value)
        if step is None:
            return None
        x = x + step
        if _converged(step, x, tol):
            return x
    return None


def _tangent(jacobian: np.ndarray, previous: np.ndarray | None, direction: float) -> np.ndarray:
    """Unit null vector of the (d, d+1) Jacobian, oriented along `previous` (or along `direction` in p)."""
    _, _, right = np.linalg.svd(jacobian)
    tangent = right[-1]
    reference = tangent @ previous if previous is not None else tangent[-1] * direction
    return -tangent if reference < 0 else tangent


def _corrector(evaluate: _Evaluator, predicted, tangent, tol: float, max_iterations: int):
    """Newton's method on `F(y) = 0, tangent . (y - predicted) = 0`; return (y, Jacobian, iterations) or None."""
    y = predicted.copy()
    for iteration in range(1, max_iterations + 1):
        value, jacobian = evaluate(y)
        matrix = np.vstack([jacobian, tangent[None]])
        rhs = -np.append(value, tangent @ (y - predicted))
        step = _solve(matrix, rhs)
        if step is None:
            return None
        y = y + step
        if _converged(step, y, tol):
            _, jacobian = evaluate(y)
            return y, jacobian, iteration
    return None


def _check_continuation_arguments(x0, p_start: float, p_stop: float, step: float, max_points: int) -> np.ndarray:
    x0 = np.atleast_1d(np.asarray(x0, np.float64))
    if x0.ndim != 1:
        raise ConfigError(f"x0 has shape {x0.shape}; expected a (d,) state")
    if not (np.isfinite(p_start) and np.isfinite(p_stop)) or p_start == p_stop:
        raise ConfigError(f"parameter range is [{p_start}, {p_stop}]; expected two different finite values")
    if not step > 0:
        raise ConfigError(f"step is {step}; expected a positive arclength step")
    if max_points < 2:
        raise ConfigError(f"max_points is {max_points}; expected an integer >= 2")
    return x0


def continue_equilibria(
    family: Family,
    x0,
    p_start: float,
    p_stop: float,
    step: float = 0.02,
    max_step: float | None = None,
    min_step: float | None = None,
    max_points: int = 2000,
    tol: float | None = None,
    max_newton: int = 12,
) -> Branch:
    """Follow the equilibria of `F(x, p)` from near `x0` at `p_start` towards `p_stop` by pseudo-arclength continuation.

    `x0` is first corrected to an equilibrium at `p_start` (ConfigError when
    Newton's method does not converge there). The curve is followed with
    arclength steps between `min_step` (default `step / 1000`) and `max_step`
    (default `10 * step`) in the joint (x, p) space, so a badly scaled state
    needs a smaller `step`. It stops when `p` leaves the interval between
    `p_start` and `p_stop`, after `max_points` points, or when the corrector
    fails at `min_step`. The last point is corrected onto the range boundary
    when the curve crosses it. `tol` is the Newton step tolerance relative to
    `1 + |y|` (default 1e-5 in float32, 1e-10 in float64).
    """
    x0 = _check_continuation_arguments(x0, p_start, p_stop, step, max_points)
    dtype = jnp.result_type(float)
    if tol is None:
        tol = 1e-10 if dtype == jnp.float64 else 1e-5
    max_step = max_step if max_step is not None else 10.0 * step
    min_step = min_step if min_step is not None else step / 1000.0
    evaluate = _Evaluator(family, dtype)
    direction = float(np.sign(p_stop - p_start))
    lower, upper = min(p_start, p_stop), max(p_start, p_stop)

    x_start = _correct_at_parameter(evaluate, x0, p_start, tol, 4 * max_newton)
    if x_start is None:
        raise ConfigError(f"Newton's method found no equilibrium near x0 = {x0.tolist()} at p = {p_start}")
    y = np.append(x_start, p_start)
    _, jacobian = evaluate(y)
    tangent = _tangent(jacobian, None, direction)
    points, tangents = [y], [tangent]

    h = step
    while len(points) < max_points:
        result = _corrector(evaluate, y + h * tangent, tangent, tol, max_newton)
        if result is None:
            h /= 2.0
            if h < min_step:
                break
            continue
        y_next, jacobian, iterations = result
        if not lower - 1e-12 <= y_next[-1] <= upper + 1e-12:
            end = _land_on_boundary(evaluate, y, y_next, lower, upper, tol, max_newton)
            if end is not None:
                _, jacobian = evaluate(end)
                points.append(end)
                tangents.append(_tangent(jacobian, tangent, direction))
            break
        tangent = _tangent(jacobian, tangent, direction)
        y = y_next
        points.append(y)
        tangents.append(tangent)
        h = min(h * 1.5, max_step) if iterations <= 3 else max(h * 0.7, min_step)

    return _branch(evaluate, np.array(points), np.array(tangents), tol, max_newton)


def _land_on_boundary(evaluate: _Evaluator, y, y_next, lower: float, upper: float, tol: float, max_newton: int):
    """Correct the equilibrium at the range boundary crossed between `y` and `y_next`; None when Newton fails."""
    boundary = upper if y_next[-1] > upper else lower
    weight = (boundary - y[-1]) / (y_next[-1] - y[-1])
    guess = y + weight * (y_next - y)
    x = _correct_at_parameter(evaluate, guess[:-1], boundary, tol, max_newton)
    return None if x is None else np.append(x, boundary)


def _branch(evaluate: _Evaluator, points: np.ndarray, tangents: np.ndarray, tol: float, max_newton: int) -> Branch:
    eigenvalues, determinants = [], []
    for y in points:
        _, jacobian = evaluate(y)
        jacobian_x = jacobian[:, :-1]
        values = np.linalg.eigvals(jacobian_x)
        eigenvalues.append(values[np.argsort(-values.real, kind="stable")])
        determinants.append(np.linalg.det(jacobian_x))
    eigenvalues = np.array(eigenvalues)
    branch = Branch(points[:, -1], points[:, :-1], eigenvalues, [classify(values) for values in eigenvalues])
    branch.bifurcations = _detect(evaluate, points, tangents, eigenvalues, np.array(determinants), tol, max_newton)
    return branch


def _hopf_test(eigenvalues: np.ndarray) -> float | None:
    """Largest real part among complex eigenvalues, or None when all are real."""
    scale = max(float(np.max(np.abs(eigenvalues))), 1e-30)
    complex_values = eigenvalues[np.abs(eigenvalues.imag) > 1e-6 * scale]
    if complex_values.size == 0:
        return None
    return float(np.max(complex_values.real))


def _detect(evaluate, points, tangents, eigenvalues, determinants, tol, max_newton) -> list[Bifurcation]:
    found = []
    for i in range(len(points) - 1):
        turned = np.sign(tangents[i, -1]) != np.sign(tangents[i + 1, -1])
        if turned:
            found.append(_refine_fold(evaluate, points, tangents, i, tol, max_newton))
        elif np.sign(determinants[i]) != np.sign(determinants[i + 1]):
            # NOTE: a branch point is reported where det(dF/dx) changes sign, unrefined; the other branch is not followed.
            found.append(Bifurcation(BRANCH_POINT, float(points[i, -1]), points[i, :-1], i, refined=False))

        before, after = _hopf_test(eigenvalues[i]), _hopf_test(eigenvalues[i + 1])
        if before is not None and after is not None and np.sign(before) != np.sign(after):
            found.append(_refine_hopf(evaluate, points, i, before, after, tol, max_newton))
    return found


def _interpolate(points, i: int, weight: float) -> np.ndarray:
    return (1.0 - weight) * points[i] + weight * points[i + 1]


def _refine_fold(evaluate: _Evaluator, points, tangents, i: int, tol: float, max_newton: int) -> Bifurcation:
    """Newton's method on `F = 0, det(dF/dx) = 0` from the point where the tangent's p component interpolates to 0."""
    a, b = tangents[i, -1], tangents[i + 1, -1]
    guess = _interpolate(points, i, a / (a - b))
    y = guess.copy()
    for _ in range(4 * max_newton):
        value, jacobian = evaluate.fold(y)
        step = _solve(jacobian, -value)
        if step is None:
            break
        y = y + step
        if _converged(step, y, tol):
            near = np.linalg.norm(y - guess) <= 2.0 * np.linalg.norm(points[i + 1] - points[i]) + tol
            if near:
                return Bifurcation(FOLD, float(y[-1]), y[:-1], i)
            break
    return Bifurcation(FOLD, float(guess[-1]), guess[:-1], i, refined=False)


def _refine_hopf(evaluate: _Evaluator, points, i: int, before: float, after: float, tol: float, max_newton: int):
    """Illinois false position on p for the real part of the critical pair, correcting x at every trial p."""
    low, high = points[i].copy(), points[i + 1].copy()
    f_low, f_high = before, after
    side = 0
    for _ in range(60):
        weight = f_low / (f_low - f_high)
        trial = _interpolate(np.array([low, high]), 0, weight)
        x = _correct_at_parameter(evaluate, trial[:-1], trial[-1], tol, max_newton)
        if x is None:
            break
        trial = np.append(x, trial[-1])
        _, jacobian = evaluate(trial)
        value = _hopf_test(np.linalg.eigvals(jacobian[:, :-1]))
        if value is None:
            break
        if abs(high[-1] - low[-1]) <= tol * (1.0 + abs(trial[-1])) or value == 0.0:
            return _hopf_point(evaluate, trial, i, refined=True)
        if np.sign(value) == np.sign(f_low):
            low, f_low = trial, value
            f_high = f_high / 2.0 if side == -1 else f_high
            side = -1
        else:
            high, f_high = trial, value
            f_low = f_low / 2.0 if side == 1 else f_low
            side = 1
        if abs(value) <= 1e-9 * max(1.0, np.max(np.abs(np.linalg.eigvals(jacobian[:, :-1])))):
            return _hopf_point(evaluate, trial, i, refined=True)
    guess = _interpolate(points, i, before / (before - after))
    return _hopf_point(evaluate, guess, i, refined=False)


def _hopf_point(evaluate: _Evaluator, y: np.ndarray, i: int, refined: bool) -> Bifurcation:
    _, jacobian = evaluate(y)
    values = np.linalg.eigvals(jacobian[:, :-1])
    scale = max(float(np.max(np.abs(values))), 1e-30)
    complex_values = values[np.abs(values.imag) > 1e-6 * scale]
    critical = complex_values[np.argmin(np.abs(complex_values.real))] if complex_values.size else 0.0
    return Bifurcation(HOPF, float(y[-1]), y[:-1], i, frequency=float(abs(np.imag(critical))), refined=refined)
