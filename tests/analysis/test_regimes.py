"""Two-parameter regime scans on systems whose regimes are known in closed form."""

import jax.numpy as jnp
import numpy as np

from neuroude.analysis.regimes import scan_regimes


def stuart_landau(x, parameters):
    """Stuart-Landau with mu = parameters[0] and omega = parameters[1]: a limit cycle for mu > 0."""
    mu, omega = parameters[0], parameters[1]
    radius_squared = x[0] ** 2 + x[1] ** 2
    return jnp.stack([
        mu * x[0] - omega * x[1] - radius_squared * x[0],
        omega * x[0] + mu * x[1] - radius_squared * x[1],
    ])


def cubic_with_decay(x, parameters):
    """x' = r + c x - x^3, y' = -y: bistable when c > 0 and |r| < 2 (c / 3)^(3/2)."""
    r, c = parameters[0], parameters[1]
    return jnp.stack([r + c * x[0] - x[0] ** 3, -x[1]])


def test_stuart_landau_equilibrium_and_oscillation():
    starts = jnp.array([[0.5, 0.0], [-0.3, 0.4], [1.5, -1.0]])
    regimes = scan_regimes(stuart_landau, [-1.0, 1.0], [2.0, 6.0], starts, dt=0.01, duration=15.0)
    assert regimes.labels == [["equilibrium", "equilibrium"], ["oscillation", "oscillation"]]
    np.testing.assert_array_equal(regimes.n_stable, [[1, 1], [0, 0]])


def test_cubic_multistability_region():
    r_values, c_values = [-0.6, 0.0, 0.3], [-0.5, 1.0]
    starts = jnp.array([[-2.0, 0.5], [-0.2, 0.1], [0.3, -0.2], [2.0, 0.0]])
    regimes = scan_regimes(cubic_with_decay, r_values, c_values, starts, dt=0.02, duration=10.0)

    for i, r in enumerate(r_values):
        for j, c in enumerate(c_values):
            bistable = c > 0 and abs(r) < 2.0 * (c / 3.0) ** 1.5
            expected = "multistability" if bistable else "equilibrium"
            assert regimes.labels[i][j] == expected, (r, c)
    assert regimes.to_dict()["labels"] == regimes.labels


def test_unbounded_flow_is_labelled():
    regimes = scan_regimes(lambda x, p: p[0] * x, [1.0], [0.0], jnp.ones((2, 1)), dt=0.1, duration=500.0)
    assert regimes.labels == [["unbounded"]]
