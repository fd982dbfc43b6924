"""Fixed points and slow points against systems whose equilibria are known in closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.analysis.fixed_points import (
    FIXED_POINT,
    SLOW_POINT,
    autonomous,
    box_starts,
    classify,
    find_fixed_points,
    visited_starts,
)
from neuroude.dynamics.mechanistic import FitzHughNagumo, WilsonCowan
from neuroude.errors import ConfigError


# Module-level drifts: each Python function compiles once, and the tests vary only arrays.
FITZHUGH_NAGUMO = autonomous(FitzHughNagumo(input_size=1))


def double_well(x, u):
    """x' = x - x^3 + u: wells at -1 and 1 and a barrier at 0 for u = 0."""
    return x - x**3 + u


def linear_drift(x, u):
    """x' = A (x - c), with A (row-major) in u[:4] and c in u[4:]."""
    return u[:4].reshape(2, 2) @ (x - u[4:])


def fitzhugh_nagumo_fixed_point(a=0.7, b=0.8, current=0.0):
    """The one real root of v - v^3/3 - (v + a)/b + I = 0, and w = (v + a) / b."""
    roots = np.roots([-1.0 / 3.0, 0.0, 1.0 - 1.0 / b, current - a / b])
    v = roots[np.abs(roots.imag) < 1e-9].real
    assert v.size == 1
    return np.array([v[0], (v[0] + a) / b])


def test_fitzhugh_nagumo_fixed_point_from_cubic():
    starts = box_starts([-2.5, -1.5], [2.5, 1.5], 16, jax.random.PRNGKey(0))
    points = find_fixed_points(FITZHUGH_NAGUMO, jnp.zeros(1), starts)

    fixed = [point for point in points if point.kind == FIXED_POINT]
    assert len(fixed) == 1
    np.testing.assert_allclose(fixed[0].state, fitzhugh_nagumo_fixed_point(), atol=1e-4)
    assert fixed[0].stability == "stable focus"
    assert fixed[0].n_starts == 16


def test_fitzhugh_nagumo_input_moves_fixed_point():
    # The input gain is 0.5 by default, so an input of 0.4 injects a current of 0.2.
    starts = box_starts([-2.5, -1.5], [2.5, 1.5], 16, jax.random.PRNGKey(1))
    points = find_fixed_points(FITZHUGH_NAGUMO, jnp.array([0.4]), starts)
    np.testing.assert_allclose(points[0].state, fitzhugh_nagumo_fixed_point(current=0.2), atol=1e-4)


@pytest.mark.parametrize(
    ("matrix", "label"),
    [
        ([[-1.0, 0.0], [0.0, -3.0]], "stable node"),
        ([[-0.5, 2.0], [-2.0, -0.5]], "stable focus"),
        ([[1.0, 0.0], [0.0, 2.0]], "unstable node"),
        ([[0.5, 2.0], [-2.0, 0.5]], "unstable focus"),
        ([[1.0, 0.0], [0.0, -2.0]], "saddle"),
    ],
)
def test_linear_system_label_and_eigenvalues(matrix, label):
    matrix = jnp.asarray(matrix)
    offset = jnp.array([0.3, -0.2])
    starts = box_starts([-1.0, -1.0], [1.0, 1.0], 4, jax.random.PRNGKey(2))
    points = find_fixed_points(linear_drift, jnp.concatenate([matrix.ravel(), offset]), starts)

    assert len(points) == 1
    np.testing.assert_allclose(points[0].state, np.asarray(offset), atol=1e-5)
    assert points[0].stability == label
    expected = np.sort_complex(np.linalg.eigvals(np.asarray(matrix)))
    np.testing.assert_allclose(np.sort_complex(points[0].eigenvalues), expected, atol=1e-5)


def test_double_well_three_fixed_points():
    starts = jnp.linspace(-2.0, 2.0, 9)[:, None]
    points = find_fixed_points(double_well, 0.0, starts)

    states = [float(point.state[0]) for point in points]
    np.testing.assert_allclose(states, [-1.0, 0.0, 1.0], atol=1e-5)
    assert [point.stability for point in points] == ["stable node", "unstable node", "stable node"]
    assert [point.is_stable for point in points] == [True, False, True]
    assert sum(point.n_starts for point in points) == 9


def test_bfgs_finds_same_points():
    starts = jnp.array([[-1.2], [-0.2], [0.2], [1.2]])
    points = find_fixed_points(double_well, 0.0, starts, solver="bfgs", tol=1e-7)
    np.testing.assert_allclose([float(point.state[0]) for point in points], [-1.0, 0.0, 1.0], atol=1e-3)


def test_wilson_cowan_limit_cycle_has_unstable_focus():
    # The default constants give a limit cycle around one equilibrium, an unstable focus or node.
    drift = autonomous(WilsonCowan(input_size=0))
    starts = box_starts([0.0, 0.0], [0.5, 0.5], 24, jax.random.PRNGKey(3))
    points = [point for point in find_fixed_points(drift, None, starts) if point.kind == FIXED_POINT]
    assert len(points) == 1
    assert points[0].n_unstable == 2
    state = jnp.asarray(points[0].state, jnp.float32)
    assert float(jnp.max(jnp.abs(drift(state, jnp.zeros(0))))) < 1e-2


def test_slow_point_near_saddle_node_ghost():
    # x' = 0.05 + x^2 has no equilibrium; the slowest flow, |f| = 0.05, is at x = 0.
    drift = lambda x, u: jnp.stack([0.05 + x[0] ** 2, -x[1]])  # noqa: E731
    starts = box_starts([-1.0, -1.0], [1.0, 1.0], 8, jax.random.PRNGKey(4))
    points = find_fixed_points(drift, None, starts)

    assert len(points) == 1
    assert points[0].kind == SLOW_POINT
    np.testing.assert_allclose(points[0].state, [0.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(points[0].speed, 0.05, rtol=1e-3)
    assert find_fixed_points(drift, None, starts, keep_slow_points=False) == []


def test_three_dimensional_saddle_focus():
    matrix = jnp.array([[0.2, -3.0, 0.0], [3.0, 0.2, 0.0], [0.0, 0.0, -1.0]])
    points = find_fixed_points(lambda x, u: matrix @ x, None, jnp.ones((2, 3)))
    assert points[0].stability == "saddle-focus"
    assert points[0].n_unstable == 2


def test_classify_non_hyperbolic():
    assert classify([0.0 + 1.0j, 0.0 - 1.0j]) == "non-hyperbolic"


def test_visited_starts_are_near_states():
    states = jnp.array([[0.0, 0.0], [10.0, 10.0]])
    starts = visited_starts(states, 20, jax.random.PRNGKey(5), jitter=0.0)
    distances = jnp.min(jnp.linalg.norm(starts[:, None] - states[None], axis=-1), axis=1)
    assert float(jnp.max(distances)) == 0.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"solver": "newton"}, "solver is 'newton'"),
        ({"tol": 0.0}, "tol is 0.0"),
        ({"starts": jnp.zeros(3)}, "starts have shape"),
    ],
)
def test_find_fixed_points_rejects_bad_arguments(arguments, message):
    call = {"starts": jnp.zeros((2, 1))} | arguments
    with pytest.raises(ConfigError, match=message):
        find_fixed_points(lambda x, u: -x, None, **call)


def test_box_starts_rejects_inverted_box():
    with pytest.raises(ConfigError, match="upper bounds"):
        box_starts([1.0], [0.0], 4, jax.random.PRNGKey(0))
