"""Design a bounded input that suppresses a Stuart-Landau oscillation.

The system is the Stuart-Landau oscillator (the normal form of a supercritical Hopf
bifurcation) with mu = 1 /s and omega = 2 pi 10 rad/s, so that without input every path
settles on the circle of radius sqrt(mu) = 1 and turns at 10 Hz. Additive process noise
of 0.05 keeps it stochastic. The input enters the first state's equation through a gain
of 1, bounded to [-20, 20].

`neuroude.control.design_open_loop` designs the whole input over 0.5 s (100 bins of 5 ms)
by gradient descent through the SDE on the cost

    mean |x(t)|^2 + energy * mean u(t)^2,

with a target of 0 for both states in every bin. The script prints the amplitude |x| over
the last 0.1 s with and without the designed input, averaged over fresh noise samples, and
writes them to FOLDER/control.json.

    python examples/control_stuart_landau.py [--iterations N] [--small] [--out FOLDER] [--seed N]

`--small` uses fewer noise samples per cost evaluation, for a quick check.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from neuroude.control import ControlledSystem, ControlSettings, design_open_loop
from neuroude.dynamics import AdditiveDiffusion
from neuroude.dynamics.mechanistic.stuart_landau import StuartLandau
from neuroude.runs import write_json

N_BINS = 100
BIN_WIDTH = 0.005  # seconds
PROCESS_NOISE = 0.05
INPUT_BOUND = 20.0
SCORED_BINS = 20  # the last 0.1 s


def free_amplitude(system: ControlledSystem, x0: np.ndarray, n_samples: int, key) -> float:
    """Return the mean |x| over the scored bins of `n_samples` noisy paths without input."""
    amplitudes = []
    for sample_key in jax.random.split(key, n_samples):
        path = system.simulate(jnp.asarray(x0), jnp.zeros((N_BINS, 1)), 0.0, BIN_WIDTH, sample_key)
        amplitudes.append(np.linalg.norm(np.asarray(path)[-SCORED_BINS:], axis=-1).mean())
    return float(np.mean(amplitudes))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200, help="Adam iterations of the input design (default 200)")
    parser.add_argument("--small", action="store_true", help="4 noise samples per cost instead of 16, for a quick check")
    parser.add_argument("--out", type=Path, default=Path("runs/control_stuart_landau"),
                        help="folder for control.json (default runs/control_stuart_landau)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise samples (default 0)")
    arguments = parser.parse_args(argv)
    if arguments.iterations < 1:
        parser.error(f"--iterations is {arguments.iterations}; expected a positive integer")

    system = ControlledSystem(StuartLandau(input_size=1), AdditiveDiffusion(2, PROCESS_NOISE), state_size=2,
                              input_size=1, n_substeps=4, method="heun")
    n_samples = 4 if arguments.small else 16
    settings = ControlSettings(u_min=-INPUT_BOUND, u_max=INPUT_BOUND, energy=1e-4, n_samples=n_samples,
                               n_iterations=arguments.iterations, learning_rate=0.5)
    x0 = np.array([1.0, 0.0], np.float32)  # on the limit cycle
    target = np.zeros((N_BINS, 2), np.float32)

    design_key, free_key = jax.random.split(jax.random.PRNGKey(arguments.seed))
    result = design_open_loop(system, x0, target, settings, 0.0, BIN_WIDTH, design_key)
    controlled = float(np.linalg.norm(result.paths[:, -SCORED_BINS:], axis=-1).mean())
    uncontrolled = free_amplitude(system, x0, n_samples, free_key)

    print(f"amplitude |x| over the last {SCORED_BINS * BIN_WIDTH:.2f} s: "
          f"without input {uncontrolled:.3f}, with the designed input {controlled:.3f}")
    print(f"cost {result.history[0]:.4f} -> {result.history[-1]:.4f} over {arguments.iterations} iterations; "
          f"max |u| {np.abs(result.input).max():.2f} (bound {INPUT_BOUND:g})")
    summary = {
        "uncontrolled_amplitude": uncontrolled,
        "controlled_amplitude": controlled,
        "limit_cycle_radius": 1.0,
        "first_cost": float(result.history[0]),
        "last_cost": float(result.history[-1]),
        "max_abs_input": float(np.abs(result.input).max()),
        "input_bound": INPUT_BOUND,
        "terms": result.terms,
        "iterations": arguments.iterations,
    }
    arguments.out.mkdir(parents=True, exist_ok=True)
    write_json(arguments.out / "control.json", summary)
    return summary


if __name__ == "__main__":
    main()
