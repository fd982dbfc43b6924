"""Identifiability of mechanistic constants: a classification read from the Laplace Hessian.

The Hessian `H` of the negative log joint over the raw constants `r` (see
`uncertainty`) is first moved to relative coordinates. A constant with
physical value `theta_j = T_j(r_j)` changes by the fraction
`delta_j = T_j'(r_j) dr_j / |theta_j|` for a small raw step `dr_j`, so

    H_rel = D H D,   D = diag(|theta_j| / T_j'(r_j)),

is the curvature per unit of relative change, the same for every transform
and unit. With `H_rel = V diag(lambda) V^T`:

1. A direction `k` is flat when `lambda_k <= FLAT_EIGENVALUE_FLOOR * max |lambda|`:
   numerically null, or negative (the fit is not at a minimum along it).
2. A constant's flat loading is `L_j = sum_{k flat} V_jk^2`, the share of its
   axis that lies in flat directions. `L_j > FLAT_LOADING_LIMIT` makes it
   not identifiable: the data leave some combination with it free.
3. Otherwise its relative posterior std is the one of the pseudo-inverse over
   the other directions, `rho_j = sqrt(sum_{k not flat} V_jk^2 / lambda_k)`.
   With `z` the standard normal quantile at `(1 + level) / 2`:
   `z rho_j <= tolerance` (the level-`level` interval lies within
   `+- tolerance` of the estimate) is identifiable, `z rho_j < 1` (the
   interval excludes 0 and spans less than +-100 %) is weakly identifiable,
   and anything wider is not identifiable.

The report also gives the weakest direction, the eigenvector of the smallest
eigenvalue, with its relative std `1 / sqrt(lambda_min)`: the combination of
constants the data determine least. Two constants that enter the drift only
through their product share a weakest direction with opposite loadings.

With the defaults (`tolerance = 0.05`, `level = 0.95`) a constant is
identifiable when its relative std is at most 2.55 %.

NOTE: the Hessian is that of the fitted model. When the model leaves out a
source of variation in the data (process noise in an ODE fit, for example),
the relative std is too small and so is the error it promises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from .errors import ConfigError

IDENTIFIABLE = "identifiable"
WEAKLY_IDENTIFIABLE = "weakly identifiable"
NOT_IDENTIFIABLE = "not identifiable"
STATUSES = (IDENTIFIABLE, WEAKLY_IDENTIFIABLE, NOT_IDENTIFIABLE)

# Eigenvalues of H_rel below this fraction of the largest are flat, because float32 round-off in a Hessian of a sum
# over many bins is about 1e-6 of its scale.
FLAT_EIGENVALUE_FLOOR = 1e-5

# A constant whose axis has more than this squared share in flat directions is not identifiable. The flat
# directions then move it by more than a tenth of their own length.
FLAT_LOADING_LIMIT = 0.01

# Default relative half-width of the interval that makes a constant identifiable.
RELATIVE_TOLERANCE = 0.05


@dataclass
class IdentifiabilityReport:
    """Class, relative posterior std (None when flat) and flat loading of each constant, and the weak directions."""

    names: list[str]
    status: list[str]
    relative_std: list[float | None]
    flat_loading: list[float]
    flat_directions: list[dict]
    weakest_direction: dict
    tolerance: float
    level: float

    def names_with(self, status: str) -> list[str]:
        """Return the names of the constants in class `status`, in order."""
        if status not in STATUSES:
            raise ConfigError(f"identifiability status is {status!r}; expected one of {STATUSES}")
        return [name for name, found in zip(self.names, self.status) if found == status]

    def to_dict(self) -> dict:
        """Return a JSON-ready record: the rule's thresholds, each constant's class and the flat directions."""
        return {
            "rule": {
                "tolerance": self.tolerance,
                "level": self.level,
                "flat_eigenvalue_floor": FLAT_EIGENVALUE_FLOOR,
                "flat_loading_limit": FLAT_LOADING_LIMIT,
            },
            "constants": {
                name: {"status": status, "relative_std": rho, "flat_loading": loading}
                for name, status, rho, loading in zip(self.names, self.status, self.relative_std, self.flat_loading)
            },
            "flat_directions": self.flat_directions,
            "weakest_direction": self.weakest_direction,
        }


def classify_constants(
    names: list[str],
    estimate,
    slopes,
    hessian,
    tolerance: float = RELATIVE_TOLERANCE,
    level: float = 0.95,
) -> IdentifiabilityReport:
    """Classify each constant as identifiable, weakly identifiable or not identifiable (rule in the module docstring).

    `estimate` contains the physical values `theta_j`, `slopes` the transform
    derivatives `T_j'(r_j)` and `hessian` the Hessian over the raw values.
    A constant estimated at exactly 0 has no relative precision, so its row of
    `H_rel` is 0 and it comes out not identifiable.
    """
    if not 0.0 < tolerance < 1.0:
        raise ConfigError(f"identifiability tolerance is {tolerance}; expected a fraction strictly between 0 and 1")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"identifiability level is {level}; expected a probability strictly between 0 and 1")
    if not names:
        raise ConfigError("identifiability got no constants; expected the names of one or more learnable constants")
    estimate = np.asarray(estimate, np.float64)
    slopes = np.asarray(slopes, np.float64)
    hessian = np.asarray(hessian, np.float64)
    size = len(names)
    if estimate.shape != (size,) or slopes.shape != (size,) or hessian.shape != (size, size):
        raise ConfigError(
            f"estimate {estimate.shape}, slopes {slopes.shape} and Hessian {hessian.shape} do not match "
            f"{size} names; expected ({size},), ({size},) and ({size}, {size})"
        )

    if not (np.all(np.isfinite(hessian)) and np.all(np.isfinite(estimate)) and np.all(slopes > 0)):
        reason = [{"eigenvalue": None, "loadings": {}, "reason": "the Hessian or the transforms are not finite"}]
        return IdentifiabilityReport(
            list(names), [NOT_IDENTIFIABLE] * size, [None] * size, [1.0] * size, reason, reason[0], tolerance, level
        )

    scale = np.abs(estimate) / slopes
    relative = scale[:, None] * (0.5 * (hessian + hessian.T)) * scale[None, :]
    eigenvalues, eigenvectors = np.linalg.eigh(relative)
    floor = FLAT_EIGENVALUE_FLOOR * max(float(np.max(np.abs(eigenvalues))), np.finfo(np.float64).tiny)
    flat = eigenvalues <= floor

    loading = np.sum(eigenvectors[:, flat] ** 2, axis=1)
    variance = np.sum(eigenvectors[:, ~flat] ** 2 / eigenvalues[~flat], axis=1)
    z = float(norm.ppf(0.5 + 0.5 * level))
    status, relative_std = [], []
    for j in range(size):
        if loading[j] > FLAT_LOADING_LIMIT:
            status.append(NOT_IDENTIFIABLE)
            relative_std.append(None)
            continue
        rho = math.sqrt(variance[j])
        relative_std.append(rho)
        if z * rho <= tolerance:
            status.append(IDENTIFIABLE)
        elif z * rho < 1.0:
            status.append(WEAKLY_IDENTIFIABLE)
        else:
            status.append(NOT_IDENTIFIABLE)

    directions = [_direction(names, eigenvalues[k], eigenvectors[:, k]) for k in np.flatnonzero(flat)]
    weakest = _direction(names, eigenvalues[0], eigenvectors[:, 0])
    return IdentifiabilityReport(
        list(names), status, relative_std, [float(value) for value in loading], directions, weakest, tolerance, level
    )


def _direction(names: list[str], eigenvalue: float, vector: np.ndarray) -> dict:
    """Describe one eigen-direction of H_rel: its eigenvalue, relative std (None unless positive) and loadings."""
    return {
        "eigenvalue": float(eigenvalue),
        "relative_std": float(1.0 / math.sqrt(eigenvalue)) if eigenvalue > 0 else None,
        "loadings": {name: float(weight) for name, weight in zip(names, vector)},
    }
