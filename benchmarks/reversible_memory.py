"""Backward-pass memory of the SDE solvers as the number of bins grows.

Two workloads, each with 64 trials, 8 latents, a network diffusion and one
solver step per 0.01 s bin, measured for `heun` (every step stored),
`heun` with `solver.checkpoint_bins` near sqrt(bins), `reversible_heun`, and,
for the training step, `reversible_heun` streamed over segments of about
sqrt(bins) bins or of 100 bins, and `reversible_heun` with the window
recognition model (`model.recognition: window`), whose step is fused into one
reversible integration (`neuroude.fused`). The settings ending in `-50` stream
`euler` or `heun` over segments of 50 bins, which stores a few states per
segment and nothing per bin:

- `solver`: the gradient of a loss of the latent path and path KL with respect
  to the model parameters, the recognition context and x0, through the solver
  alone. The context (trials x bins x 16) is an input and the path
  (trials x bins x 8) an output of the solver, so both are T long whatever the
  solver does. Their sizes are printed next to the memory.
- `step`: the whole training step of `scaling.py` (50 Poisson neurons, GRU
  recognition), which also stores the recognition and observation activations
  of every bin.

Memory is XLA's temporary buffer size of the compiled program
(`Compiled.memory_analysis().temp_size_in_bytes`), fixed by the compiler and
independent of machine load. The growth exponent is the slope of log(memory)
against log(bins).

    python benchmarks/reversible_memory.py
    python benchmarks/reversible_memory.py --workload solver --sizes 100 1000 10000
    python benchmarks/reversible_memory.py --workload step --solvers reversible_heun-streamed-100 --sizes 300 1000
    python benchmarks/reversible_memory.py --workload step --solvers heun reversible_heun-window --sizes 1000 --time 5
    python benchmarks/reversible_memory.py --workload step --solvers heun-window-streamed-50 --sizes 100 10000

`beyond` is the temporary memory less one path and one context. For the
solver workload these are the T-long buffers a reverse pass cannot avoid:
the path it returns and the context gradient it accumulates. `data` is the
size of the counts and their mask (trials x bins x 50, twice), arguments of
the step that are not counted in its temporary memory, given for scale.
"""

from __future__ import annotations

import argparse
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from neuroude.build import build_model
from neuroude.config import parse_config
from neuroude.dynamics import trainable_filter
from neuroude.train import make_optimizer, make_train_step
from scaling import median_seconds

TRIALS, LATENTS, CONTEXT, N_NEURONS, BIN_WIDTH = 64, 8, 16, 50, 0.01
SIZES = [100, 300, 1000, 3000, 10000]
# Solver setting -> (method, bins per streamed segment: "sqrt" for about sqrt(bins), a number, or 0 for none).
SETTINGS = {
    "heun": ("heun", 0),
    "heun-checkpointed": ("heun", "sqrt"),
    "reversible_heun": ("reversible_heun", 0),
    "reversible_heun-streamed": ("reversible_heun", "sqrt"),
    "reversible_heun-streamed-100": ("reversible_heun", 100),
    "heun-streamed-50": ("heun", 50),
    # The window recognition model lets the whole step run fused, with nothing stored per bin.
    "reversible_heun-window": ("reversible_heun", 0),
    "heun-window-streamed": ("heun", "sqrt"),
    "heun-window": ("heun", 0),
    # Fixed segments: only one latent state per segment is stored, so memory grows by a few KiB per segment.
    "heun-window-streamed-50": ("heun", 50),
    "euler-window-streamed-50": ("euler", 50),
}
WINDOW_SETTINGS = ("reversible_heun-window", "heun-window-streamed", "heun-window", "heun-window-streamed-50", "euler-window-streamed-50")
SOLVERS = tuple(SETTINGS)
# The solver workload calls the solver directly, where checkpoint_bins does nothing for reversible Heun.
SOLVER_WORKLOAD = ("heun", "heun-checkpointed", "reversible_heun")


def segment_bins(rule, bins: int) -> int:
    return max(1, round(math.sqrt(bins))) if rule == "sqrt" else min(rule, bins)


def build(solver: str, bins: int):
    """Return the model and config of one solver setting."""
    method, rule = SETTINGS[solver]
    checkpoint_bins = segment_bins(rule, bins)
    config = parse_config({
        "model": {
            "latent_size": LATENTS, "drift_width": 64, "drift_depth": 1, "diffusion": "network",
            "recognition_hidden": 64, "context_size": CONTEXT, "correction_width": 64, "encoder": "identity",
            "interpolation": "hold", "recognition": "window" if solver in WINDOW_SETTINGS else "gru",
        },
        "solver": {"method": method, "n_substeps": 1, "checkpoint_bins": checkpoint_bins},
        "training": {"batch_size": TRIALS},
    })
    model = build_model(config, n_channels=N_NEURONS, n_inputs=0, key=jax.random.PRNGKey(0), mean_count=0.3)
    return model, config


def compiled_solver_gradient(solver: str, bins: int):
    """Compile the gradient of a path loss through the solver alone, for a batch of trials."""
    model, _ = build(solver, bins)
    params, static = eqx.partition(model, trainable_filter(model))

    def loss(params, context, x0, keys):
        model = eqx.combine(params, static)

        def one_trial(context, x0, key):
            fields = model._fields(jnp.zeros((bins, 0)), context)
            path, path_kl = model._integrate(fields, x0, 0.0, BIN_WIDTH, bins, key)
            return jnp.sum(jnp.sin(path)) + path_kl

        return jnp.sum(jax.vmap(one_trial)(context, x0, keys))

    arguments = (params, jnp.zeros((TRIALS, bins, CONTEXT)), jnp.zeros((TRIALS, LATENTS)),
                 jax.random.split(jax.random.PRNGKey(1), TRIALS))
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(*arguments).compile()


def training_step(solver: str, bins: int):
    """Return the whole training step, as `scaling.py` builds it, with this solver, and its arguments."""
    model, config = build(solver, bins)
    params, static = eqx.partition(model, trainable_filter(model))
    optimizer = make_optimizer(config.training)
    opt_state = optimizer.init(params)
    step = make_train_step(static, optimizer, t0=0.0, bin_width=BIN_WIDTH, n_samples=1)
    y = jnp.zeros((TRIALS, bins, N_NEURONS))
    arguments = (params, opt_state, y, jnp.zeros((TRIALS, bins, 0)), jnp.ones_like(y), jax.random.PRNGKey(2),
                 jnp.float32(1.0))
    return step, arguments


def compiled_training_step(solver: str, bins: int):
    """Compile the whole training step with this solver."""
    step, arguments = training_step(solver, bins)
    # equinox wraps the compiled program, so its jax.stages.Compiled is one attribute down.
    return step.lower(*arguments).compile().compiled


def measure(workload: str, solver: str, bins: int, repeats: int = 0) -> dict:
    compile_program = compiled_solver_gradient if workload == "solver" else compiled_training_step
    memory = compile_program(solver, bins).memory_analysis()
    mib = 2**20
    row = {
        "workload": workload, "solver": solver, "bins": bins, "segment": segment_bins(SETTINGS[solver][1], bins),
        "temp_mib": memory.temp_size_in_bytes / mib, "data_mib": 2 * TRIALS * bins * N_NEURONS * 4 / mib,
        "path_mib": TRIALS * bins * LATENTS * 4 / mib, "context_mib": TRIALS * bins * CONTEXT * 4 / mib,
    }
    if repeats and workload == "step":
        row["median_s"] = median_seconds(*training_step(solver, bins), repeats)
    return row


def growth_exponent(sizes, values) -> float:
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def summarise(workload: str, rows: list[dict]) -> None:
    """Print memory by bins, and what remains after taking off one path and one context (T-long arrays)."""
    print(f"\n{workload}: temporary memory (MiB) by bins")
    for solver in SOLVERS:
        group = [row for row in rows if row["solver"] == solver]
        if len(group) < 2:
            continue
        bins = [row["bins"] for row in group]
        beyond = [row["temp_mib"] - row["path_mib"] - row["context_mib"] for row in group]
        line = f"  {solver}: exponent {growth_exponent(bins, [row['temp_mib'] for row in group]):.2f}"
        if min(beyond) > 0:
            line += f", beyond path and context {growth_exponent(bins, beyond):.2f}"
        print(line)
        for row, rest in zip(group, beyond):
            timing = f"  step {row['median_s'] * 1e3:8.1f} ms" if "median_s" in row else ""
            print(f"    bins={row['bins']:6d}  segment {row['segment']:4d}  temp {row['temp_mib']:9.1f}  "
                  f"path {row['path_mib']:7.1f}  context {row['context_mib']:7.1f}  beyond {rest:9.1f}  "
                  f"data {row['data_mib']:7.1f}{timing}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("solver", "step"), action="append", help="default: both")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="numbers of bins")
    parser.add_argument("--solvers", nargs="+", choices=SOLVERS, help="default: all that apply to the workload")
    parser.add_argument("--json", help="also write every row to this JSON file")
    parser.add_argument("--time", type=int, default=0, metavar="REPEATS",
                        help="also time this many training steps per row of the step workload (median)")
    arguments = parser.parse_args()

    results = {}
    for workload in arguments.workload or ["solver", "step"]:
        rows = []
        for bins in arguments.sizes:
            for solver in arguments.solvers or (SOLVER_WORKLOAD if workload == "solver" else SOLVERS):
                if workload == "solver" and solver not in SOLVER_WORKLOAD:
                    continue
                rows.append(measure(workload, solver, bins, arguments.time))
                print(json.dumps(rows[-1]), flush=True)
        results[workload] = rows
    for workload, rows in results.items():
        summarise(workload, rows)

    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
