"""Continuation of equilibria: folds and Hopf points at their analytic parameter values."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.analysis.continuation import FOLD, HOPF, constant_family, continue_equilibria, input_family
from neuroude.analysis.fixed_points import autonomous
from neuroude.dynamics.mechanistic import FitzHughNagumo, StuartLandau
from neuroude.errors import ConfigError


def cubic_family(x, r):
    """x' = r + x - x^3: folds at x = -+1/sqrt(3), r = +-2 / (3 sqrt(3))."""
    return r + x - x**3


def test_cubic_folds_at_analytic_values():
    branch = continue_equilibria(cubic_family, [-1.3], -1.0, 1.0, step=0.05)
    folds = [point for point in branch.bifurcations if point.kind == FOLD]
    r_fold = 2.0 / (3.0 * math.sqrt(3.0))

    assert len(folds) == 2
    assert folds[0].refined and folds[1].refined
    np.testing.assert_allclose(folds[0].parameter, r_fold, atol=1e-5)
    np.testing.assert_allclose(folds[0].state, [-1.0 / math.sqrt(3.0)], atol=1e-4)
    np.testing.assert_allclose(folds[1].parameter, -r_fold, atol=1e-5)
    np.testing.assert_allclose(folds[1].state, [1.0 / math.sqrt(3.0)], atol=1e-4)


def test_cubic_branch_is_s_shaped():
    branch = continue_equilibria(cubic_family, [-1.3], -1.0, 1.0, step=0.05)
    # The branch runs from r = -1 on the lower sheet to r = 1 on the upper sheet, through the unstable middle.
    assert branch.parameters[0] == -1.0
    np.testing.assert_allclose(branch.parameters[-1], 1.0, atol=1e-9)
    assert branch.states[-1, 0] > 1.0
    residuals = [float(cubic_family(x, r)[0]) for x, r in zip(branch.states, branch.parameters)]
    assert max(abs(value) for value in residuals) < 1e-4
    middle = [label for x, label in zip(branch.states[:, 0], branch.stability) if abs(x) < 0.5]
    assert middle and all(label == "unstable node" for label in middle)
    assert branch.stability[0] == "stable node"
    assert branch.stability[-1] == "stable node"


def test_saddle_node_normal_form_fold():
    branch = continue_equilibria(lambda x, r: r + x**2, [-1.0], -1.0, 1.0, step=0.05)
    assert [point.kind for point in branch.bifurcations] == [FOLD]
    np.testing.assert_allclose(branch.bifurcations[0].parameter, 0.0, atol=1e-6)
    np.testing.assert_allclose(branch.bifurcations[0].state, [0.0], atol=1e-3)


def test_stuart_landau_hopf_at_zero():
    omega = 3.0
    family = constant_family(StuartLandau(input_size=1, omega=omega), "mu", [0.0])
    branch = continue_equilibria(family, [0.1, -0.1], -1.0, 1.0, step=0.05)
    hopf = [point for point in branch.bifurcations if point.kind == HOPF]

    assert len(hopf) == 1
    assert hopf[0].refined
    np.testing.assert_allclose(hopf[0].parameter, 0.0, atol=1e-6)
    np.testing.assert_allclose(hopf[0].frequency, omega, rtol=1e-5)
    assert branch.stability[0] == "stable focus"
    assert branch.stability[-1] == "unstable focus"


def fitzhugh_nagumo_hopf_current(a=0.7, b=0.8, tau=12.5):
    """The lower Hopf current: trace J = 1 - v^2 - b / tau = 0 at the equilibrium."""
    v = -math.sqrt(1.0 - b / tau)
    w = (v + a) / b
    return w - v + v**3 / 3.0, v


def test_fitzhugh_nagumo_hopf_current():
    current, v_hopf = fitzhugh_nagumo_hopf_current()
    family = constant_family(FitzHughNagumo(input_size=1), "i_ext", [0.0])
    branch = continue_equilibria(family, [-1.2, -0.6], 0.0, 1.6, step=0.02)
    hopf = [point for point in branch.bifurcations if point.kind == HOPF]

    np.testing.assert_allclose(current, 0.33128, atol=1e-5)
    assert len(hopf) == 2
    np.testing.assert_allclose(hopf[0].parameter, current, atol=1e-4)
    np.testing.assert_allclose(hopf[0].state[0], v_hopf, atol=1e-3)
    # The trace also vanishes at v = +sqrt(1 - b / tau), the upper Hopf point at a current of about 1.418.
    upper_current = (-v_hopf + 0.7) / 0.8 + v_hopf - v_hopf**3 / 3.0
    np.testing.assert_allclose(hopf[1].parameter, upper_current, atol=1e-4)
    np.testing.assert_allclose(hopf[1].state[0], -v_hopf, atol=1e-3)
    assert branch.stability[0] == "stable focus"
    assert branch.stability[len(branch.parameters) // 2] in ("unstable focus", "unstable node")


def test_input_family_scales_by_gain():
    # The input reaches the current through the gain 0.5, so the Hopf input is twice the Hopf current.
    current, _ = fitzhugh_nagumo_hopf_current()
    family = input_family(autonomous(FitzHughNagumo(input_size=1)), [0.0], [1.0])
    branch = continue_equilibria(family, [-1.2, -0.6], 0.0, 0.8, step=0.04)
    hopf = [point for point in branch.bifurcations if point.kind == HOPF]
    assert len(hopf) == 1
    np.testing.assert_allclose(hopf[0].parameter, 2.0 * current, atol=2e-4)


def test_branch_to_dict_is_plain():
    branch = continue_equilibria(cubic_family, [-1.3], -1.0, 1.0, step=0.05)
    record = branch.to_dict()
    assert record["bifurcations"][0]["kind"] == FOLD
    assert len(record["parameters"]) == len(record["states"]) == len(record["stability"])


def test_continuation_rejects_missing_equilibrium():
    with pytest.raises(ConfigError, match="no equilibrium near"):
        continue_equilibria(lambda x, r: 1.0 + x**2, [0.0], 0.0, 1.0)


def test_constant_family_rejects_unknown_constant():
    with pytest.raises(ConfigError, match="no constant 'gamma'"):
        constant_family(StuartLandau(input_size=1), "gamma", [0.0])


@pytest.mark.parametrize(("start", "stop", "step"), [(0.0, 0.0, 0.1), (0.0, 1.0, 0.0), (0.0, math.inf, 0.1)])
def test_continuation_rejects_bad_range(start, stop, step):
    with pytest.raises(ConfigError):
        continue_equilibria(cubic_family, [0.0], start, stop, step=step)
