"""Phase portraits and branch figures: files written, projections exact, bad input rejected."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.analysis.continuation import continue_equilibria
from neuroude.analysis.fixed_points import autonomous, box_starts, find_fixed_points
from neuroude.analysis.phase import (
    identity_projection,
    pca_projection,
    plot_branches,
    plot_phase_portrait,
    projected_velocity,
)
from neuroude.dynamics.mechanistic import FitzHughNagumo
from neuroude.errors import ConfigError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_fitzhugh_nagumo_portrait(tmp_path):
    drift = autonomous(FitzHughNagumo(input_size=1))
    u = jnp.zeros(1)
    points = find_fixed_points(drift, u, box_starts([-2.0, -1.0], [2.0, 1.5], 8, jax.random.PRNGKey(0)))
    paths = np.random.default_rng(0).normal(size=(3, 20, 2))
    figure = plot_phase_portrait(drift, u, tmp_path / "fhn.png", points, paths, title="FitzHugh-Nagumo")
    assert figure.read_bytes()[:8] == PNG_SIGNATURE


def test_pca_projection_of_planar_cloud():
    rng = np.random.default_rng(1)
    plane = rng.normal(size=(200, 2)) * [3.0, 1.0]
    basis = np.linalg.qr(rng.normal(size=(4, 2)))[0].T
    states = 5.0 + plane @ basis
    projection = pca_projection(states)

    np.testing.assert_allclose(projection.components @ projection.components.T, np.eye(2), atol=1e-10)
    np.testing.assert_allclose(projection.lift(projection.project(states)), states, atol=1e-8)
    assert projection.labels[0].startswith("PC1 (90%")


def test_plane_through_fixed_point_zeroes_projected_velocity():
    # The fixed point (1, -2, 3) lies off the principal plane of the cloud, so only the shifted plane contains it.
    matrix = jnp.array([[-1.0, 2.0, 0.0], [0.0, -3.0, 1.0], [0.5, 0.0, -2.0]])
    fixed = np.array([1.0, -2.0, 3.0])
    drift = lambda x, u: matrix @ (x - jnp.asarray(fixed, jnp.float32))  # noqa: E731
    projection = pca_projection(np.random.default_rng(4).normal(size=(50, 3)))
    plane = projection.through(fixed)

    coordinates = plane.project(fixed)
    np.testing.assert_allclose(plane.lift(coordinates), fixed, atol=1e-10)
    np.testing.assert_allclose(coordinates, projection.project(fixed), atol=1e-10)
    v1, v2 = projected_velocity(drift, None, plane, coordinates[:1], coordinates[1:])
    np.testing.assert_allclose([v1[0, 0], v2[0, 0]], [0.0, 0.0], atol=1e-5)
    v1, v2 = projected_velocity(drift, None, projection, coordinates[:1], coordinates[1:])
    assert max(abs(v1[0, 0]), abs(v2[0, 0])) > 1e-2


def test_projected_velocity_of_linear_system():
    matrix = jnp.array([[-1.0, 2.0, 0.0], [0.0, -3.0, 1.0], [0.5, 0.0, -2.0]])
    projection = pca_projection(np.random.default_rng(2).normal(size=(50, 3)))
    z1, z2 = np.array([-1.0, 0.5]), np.array([0.0, 2.0])
    v1, v2 = projected_velocity(lambda x, u: matrix @ x, None, projection, z1, z2)

    state = projection.lift([0.5, 2.0])
    expected = projection.components @ (np.asarray(matrix, np.float64) @ state)
    np.testing.assert_allclose([v1[1, 1], v2[1, 1]], expected, rtol=1e-5, atol=1e-5)


def test_three_dimensional_portrait_in_projection(tmp_path):
    matrix = jnp.array([[-1.0, 2.0, 0.0], [-2.0, -1.0, 0.0], [0.0, 0.0, -0.5]])
    drift = lambda x, u: matrix @ x  # noqa: E731
    points = find_fixed_points(drift, None, jnp.ones((2, 3)))
    projection = pca_projection(np.random.default_rng(3).normal(size=(30, 3)))
    figure = plot_phase_portrait(drift, None, tmp_path / "three.png", points, projection=projection)
    assert figure.read_bytes()[:8] == PNG_SIGNATURE


def test_one_dimensional_portrait(tmp_path):
    drift = lambda x, u: x - x**3  # noqa: E731
    points = find_fixed_points(drift, None, jnp.linspace(-2.0, 2.0, 5)[:, None])
    figure = plot_phase_portrait(drift, None, tmp_path / "line.png", points)
    assert figure.read_bytes()[:8] == PNG_SIGNATURE


def test_branch_figure(tmp_path):
    branch = continue_equilibria(lambda x, r: r + x - x**3, [-1.3], -1.0, 1.0, step=0.05)
    figure = plot_branches([branch], tmp_path / "branch.png", parameter_name="r")
    assert figure.read_bytes()[:8] == PNG_SIGNATURE


def test_portrait_rejects_projection_of_other_size(tmp_path):
    three_state_paths = np.zeros((1, 4, 3))
    with pytest.raises(ConfigError, match="projection is for 2 states"):
        plot_phase_portrait(lambda x, u: -x, None, tmp_path / "bad.png", paths=three_state_paths,
                            projection=identity_projection(2))


def test_pca_projection_rejects_one_state():
    with pytest.raises(ConfigError, match="expected \\(N, d\\) with N >= 2 and d >= 2"):
        pca_projection(np.zeros((10, 1)))
