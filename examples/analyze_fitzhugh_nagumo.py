"""Analyse the FitzHugh-Nagumo model: fixed points, phase portraits and continuation in the input current.

The drift is the FitzHugh-Nagumo model with its published constants a = 0.7, b = 0.8,
tau = 12.5 and time_scale 10 /s, driven by an external current I:

    dv/dt = time_scale (v - v^3/3 - w + I)
    dw/dt = time_scale (v + a - b w) / tau

The script

1. finds the fixed points at a few current levels from random starts in a box
   (`analysis.fixed_points.find_fixed_points`) and classifies them by the eigenvalues of
   the Jacobian;
2. draws a phase portrait with nullclines and noisy sample paths at each level
   (`analysis.phase.plot_phase_portrait`);
3. follows the equilibrium from I = 0 to I = 1.6 by pseudo-arclength continuation
   (`analysis.continuation.continue_equilibria`) and reports its Hopf points.

The Hopf currents are known in closed form. At the equilibrium the trace of the Jacobian,
`time_scale (1 - v^2 - b / tau)`, vanishes at `v = -sqrt(1 - b / tau)` and at
`v = +sqrt(1 - b / tau)`, and the current there is `I = (v + a) / b - v + v^3 / 3`: 0.3313
and 1.4187. The script prints both beside the values found by continuation and writes the
results to FOLDER/analysis.json, with the figures in FOLDER.

    python examples/analyze_fitzhugh_nagumo.py [--small] [--out FOLDER]

`--small` uses 16 starts and 4 sample paths instead of 64 and 16.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from neuroude.analysis.continuation import HOPF, constant_family, continue_equilibria
from neuroude.analysis.fixed_points import autonomous, box_starts, find_fixed_points
from neuroude.analysis.noise import simulate
from neuroude.analysis.phase import plot_branches, plot_phase_portrait
from neuroude.dynamics.mechanistic.fitzhugh_nagumo import FitzHughNagumo
from neuroude.runs import write_json

CONSTANTS = {"a": 0.7, "b": 0.8, "tau": 12.5, "time_scale": 10.0}
CURRENTS = (0.0, 0.5, 1.6)  # below, between and above the two Hopf currents
CONTINUATION = (0.0, 1.6)
BOX = ([-2.5, -1.0], [2.5, 2.0])  # (v, w) box of the random starts
PROCESS_NOISE = 0.05


def analytic_hopf_currents(a: float, b: float, tau: float) -> list[float]:
    """Return the two currents where the trace of the Jacobian at the equilibrium is zero."""
    currents = []
    for v in (-math.sqrt(1.0 - b / tau), math.sqrt(1.0 - b / tau)):
        currents.append((v + a) / b - v + v**3 / 3.0)
    return currents


def fixed_points_at(current: float, n_starts: int, key) -> tuple:
    """Return the drift with `i_ext` set to `current` and its equilibria (no stimulus)."""
    drift = autonomous(FitzHughNagumo(input_size=1, i_ext=current, **CONSTANTS))
    return drift, find_fixed_points(drift, jnp.zeros(1), box_starts(*BOX, n_starts, key))


def additive_noise(x, u):
    """Return the diagonal of sigma: the same noise on both states."""
    return jnp.full_like(x, PROCESS_NOISE)


def sample_paths(drift, n_paths: int, key) -> np.ndarray:
    """Return `n_paths` noisy paths (n, T, 2) of 2 s from random starts in the box."""
    starts = box_starts(*BOX, n_paths, key)
    return np.asarray(simulate(drift, additive_noise, jnp.zeros(1), starts, dt=1e-3, duration=2.0,
                               key=jax.random.fold_in(key, 1), record_every=10))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="16 starts and 4 sample paths, for a quick check")
    parser.add_argument("--out", type=Path, default=Path("runs/analyze_fitzhugh_nagumo"),
                        help="folder for analysis.json and the figures (default runs/analyze_fitzhugh_nagumo)")
    arguments = parser.parse_args(argv)
    n_starts, n_paths = (16, 4) if arguments.small else (64, 16)
    arguments.out.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(0)

    levels = []
    for current, level_key in zip(CURRENTS, jax.random.split(key, len(CURRENTS))):
        drift, points = fixed_points_at(current, n_starts, level_key)
        figure = arguments.out / f"phase_portrait_I{current:g}.png"
        plot_phase_portrait(drift, jnp.zeros(1), figure, points, sample_paths(drift, n_paths, level_key),
                            limits=[[-2.5, 2.5], [-1.0, 2.0]], title=f"FitzHugh-Nagumo, I = {current:g}")
        levels.append({"current": current, "points": [point.to_dict() for point in points], "figure": figure.name})
        for point in points:
            v, w = point.state
            print(f"I = {current:<4g} {point.kind} at v = {v:+.4f}, w = {w:+.4f}: {point.stability}")

    family = constant_family(FitzHughNagumo(input_size=1, **CONSTANTS), "i_ext", [0.0])
    branch = continue_equilibria(family, [-1.2, -0.6], *CONTINUATION, step=0.02)
    plot_branches([branch], arguments.out / "continuation.png", parameter_name="I (i_ext)",
                  title="FitzHugh-Nagumo equilibrium against the current")
    hopf = [point for point in branch.bifurcations if point.kind == HOPF]
    expected = analytic_hopf_currents(CONSTANTS["a"], CONSTANTS["b"], CONSTANTS["tau"])
    for point, current in zip(hopf, expected):
        print(f"Hopf point: continuation I = {point.parameter:.5f}, closed form I = {current:.5f}, "
              f"frequency {point.frequency / (2.0 * math.pi):.3f} Hz")

    result = {
        "constants": CONSTANTS,
        "levels": levels,
        "continuation": branch.to_dict() | {"figure": "continuation.png"},
        "hopf_currents": [point.parameter for point in hopf],
        "analytic_hopf_currents": expected,
    }
    write_json(arguments.out / "analysis.json", result)
    return result


if __name__ == "__main__":
    main()
