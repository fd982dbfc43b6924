"""Time the gradient of an adaptive ODE solve with each of diffrax's adjoints.

The ODE is the prior drift of the scaling benchmark's model (8 latents, an MLP
of width 64, no stimulus). Tsit5 solves it from a random initial state over
one trial of 10 ms bins and saves the states at every bin. The loss is the
sum of the squared states, and the gradient is taken with respect to every
parameter of the drift. Each row prints the median seconds of `--repeats`
gradient calls after a first, compiling call.

    python benchmarks/adjoint_speed.py
    python benchmarks/adjoint_speed.py --sizes 100 300 1000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp

from neuroude.build import build_model
from neuroude.config import parse_config
from neuroude.solve import solve_adaptive

BIN_WIDTH, LATENTS = 0.01, 8


def drift_fields(bins: int):
    """Return the prior vector fields of a Tsit5 ODE model over `bins` bins without stimulus."""
    config = parse_config({
        "model": {"latent_size": LATENTS, "drift_width": 64, "drift_depth": 1, "diffusion": "none",
                  "encoder": "identity", "interpolation": "hold"},
        "solver": {"method": "tsit5"},
    })
    model = build_model(config, n_channels=50, n_inputs=0, key=jax.random.PRNGKey(0), mean_count=0.3,
                        bin_width=BIN_WIDTH)
    return model._fields(jnp.zeros((bins, 0)), None)


def gradient_seconds(adjoint: str, bins: int, repeats: int) -> float:
    """Return the median seconds of one gradient of the solve with `adjoint`."""
    fields = drift_fields(bins)
    x0 = jax.random.normal(jax.random.PRNGKey(1), (LATENTS,))

    @eqx.filter_jit
    def gradient(fields, x0):
        def loss(fields):
            path, _ = solve_adaptive(fields, x0, 0.0, BIN_WIDTH, bins, "tsit5", adjoint)
            return jnp.sum(path**2)

        return eqx.filter_grad(loss)(fields)

    jax.block_until_ready(gradient(fields, x0))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(gradient(fields, x0))
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300], help="bins per trial")
    parser.add_argument("--repeats", type=int, default=5, help="timed gradient calls per row (default 5)")
    arguments = parser.parse_args()

    for bins in arguments.sizes:
        row = {"bins": bins}
        for adjoint in ("checkpoint", "backsolve"):
            row[f"{adjoint}_s"] = gradient_seconds(adjoint, bins, arguments.repeats)
        row["backsolve_over_checkpoint"] = row["backsolve_s"] / row["checkpoint_s"]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
