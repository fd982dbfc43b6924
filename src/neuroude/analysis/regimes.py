"""Two-parameter regime scan: equilibrium, oscillation or multistability at each point of a grid.

At each grid point `(a, b)` the scan finds the fixed points of `F(x, (a, b))`
from fixed starts and integrates the deterministic flow from the same starts
(classical Runge-Kutta, fixed step). A bounded path whose last third still
swings by more than `amplitude_tol`, turns back at least twice and does not
decay is counted as an oscillation. The number of attractors is the number of stable fixed points
plus one when any path oscillates, and the label is

- "multistability" with two or more attractors,
- "oscillation" with a single attractor that oscillates,
- "equilibrium" with a single stable fixed point,
- "unbounded" when a path leaves `bound` or becomes non-finite,
- "undetermined" when neither a stable fixed point nor an oscillation was found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..errors import ConfigError
from .fixed_points import find_fixed_points

TwoParameterFamily = Callable[[Float[Array, " d"], Float[Array, " 2"]], Float[Array, " d"]]

REGIMES = ("equilibrium", "oscillation", "multistability", "unbounded", "undetermined")


@dataclass
class RegimeMap:
    """Regime labels on a grid: `labels[i][j]` at `(first[i], second[j])`, with the counts behind them."""

    first: np.ndarray
    second: np.ndarray
    labels: list[list[str]]
    n_stable: np.ndarray
    oscillating: np.ndarray

    def to_dict(self) -> dict:
        return {
            "first": self.first.tolist(), "second": self.second.tolist(), "labels": self.labels,
            "n_stable": self.n_stable.tolist(), "oscillating": self.oscillating.tolist(),
        }


@eqx.filter_jit
def _runge_kutta(family, parameters, starts, dt: float, n_steps: int):
    def field(x):
        return jax.vmap(lambda state: family(state, parameters))(x)

    def step(x, _):
        k1 = field(x)
        k2 = field(x + 0.5 * dt * k1)
        k3 = field(x + 0.5 * dt * k2)
        k4 = field(x + dt * k3)
        x = x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return x, x

    _, path = jax.lax.scan(step, starts, None, length=n_steps)
    return path.transpose(1, 0, 2)


def _oscillation(paths: np.ndarray, amplitude_tol: float, bound: float) -> tuple[bool, bool]:
    """Return (any path oscillates, any path is unbounded) from simulated paths (n, T, d).

    A path oscillates when, over the last third, its widest state swings by
    more than `amplitude_tol` and turns back at least twice. Its swing in the
    last sixth must also be at least 80% of that in the sixth before, so a
    decaying motion does not count.
    """
    unbounded = bool(np.any(~np.isfinite(paths)) or np.any(np.abs(paths) > bound))
    if unbounded:
        return False, True
    n_time = paths.shape[1]
    earlier, later = paths[:, 2 * n_time // 3 : 5 * n_time // 6], paths[:, 5 * n_time // 6 :]
    for path_earlier, path_later in zip(earlier, later):
        tail = np.concatenate([path_earlier, path_later])
        widest = int(np.argmax(np.ptp(tail, axis=0)))
        swing_earlier, swing_later = np.ptp(path_earlier[:, widest]), np.ptp(path_later[:, widest])
        steps = np.diff(tail[:, widest])
        turns = int(np.sum(np.sign(steps[1:]) * np.sign(steps[:-1]) < 0))
        if swing_later > amplitude_tol and swing_later >= 0.8 * swing_earlier and turns >= 2:
            return True, False
    return False, False


def _label(n_stable: int, oscillating: bool, unbounded: bool) -> str:
    if unbounded:
        return "unbounded"
    n_attractors = n_stable + int(oscillating)
    if n_attractors >= 2:
        return "multistability"
    if oscillating:
        return "oscillation"
    if n_stable == 1:
        return "equilibrium"
    return "undetermined"


def scan_regimes(
    family: TwoParameterFamily,
    first,
    second,
    starts,
    dt: float,
    duration: float,
    amplitude_tol: float = 1e-2,
    bound: float = 1e6,
    tol: float = 1e-8,
) -> RegimeMap:
    """Label each point of the grid `first x second` of the family `F(x, (a, b))`; see the module docstring.

    `starts` (n, d) serve both the fixed-point search and the simulations. The
    simulations run for `duration` with step `dt`, which must resolve the
    fastest time scale and be long against the slowest decay.
    NOTE: several limit cycles at one grid point count as one attractor, and a
    spiral that decays by less than 20% over a sixth of `duration` is taken for an oscillation.
    """
    first = np.atleast_1d(np.asarray(first, np.float64))
    second = np.atleast_1d(np.asarray(second, np.float64))
    starts = jnp.asarray(starts, jnp.float32)
    if first.ndim != 1 or second.ndim != 1 or first.size < 1 or second.size < 1:
        raise ConfigError(f"grid axes have shapes {first.shape} and {second.shape}; expected two non-empty 1-D arrays")
    if starts.ndim != 2:
        raise ConfigError(f"starts have shape {starts.shape}; expected (n_starts, latent size)")
    if not (dt > 0 and duration >= 3 * dt):
        raise ConfigError(f"dt is {dt} and duration {duration}; expected dt > 0 and duration >= 3 dt")
    n_steps = int(round(duration / dt))

    labels, n_stable, oscillating = [], np.zeros((first.size, second.size), int), np.zeros((first.size, second.size), bool)
    for i, a in enumerate(first):
        row = []
        for j, b in enumerate(second):
            parameters = jnp.asarray([a, b], jnp.float32)
            points = find_fixed_points(family, parameters, starts, tol=tol, keep_slow_points=False)
            n_stable[i, j] = sum(point.is_stable for point in points)
            paths = np.asarray(_runge_kutta(family, parameters, starts, float(dt), n_steps))
            oscillating[i, j], unbounded = _oscillation(paths, amplitude_tol, bound)
            row.append(_label(int(n_stable[i, j]), bool(oscillating[i, j]), unbounded))
        labels.append(row)
    return RegimeMap(first, second, labels, n_stable, oscillating)
