"""Time and memory of one training step as trials, bins and latents grow.

The workload is the one of `neuroude_step.py` (50 Poisson neurons, GRU
recognition, MLP drift, network diffusion, one Euler step per 0.01 s bin), with
one size changed at a time from 64 trials, 100 bins and 8 latents. For the bins
sweep each size is measured twice: storing every step for the backward pass,
and with `solver.checkpoint_bins` near `sqrt(bins)`, so that segments are
recomputed in the backward pass.

Memory is XLA's temporary buffer size of the compiled step
(`Compiled.memory_analysis().temp_size_in_bytes`), which the compiler fixes and
which does not depend on machine load. Time is the median over `--repeats`
steps after the compiling call, so load from other work shows up in it. The
growth exponent is the slope of log(value) against log(size) over the sweep.

    python benchmarks/scaling.py                       # every sweep, memory and time
    python benchmarks/scaling.py --sweep bins --no-time
    python benchmarks/scaling.py --sweep bins --sizes 100 1000 --repeats 10
    python benchmarks/scaling.py --paired --sizes 100 1000 --repeats 20
    python benchmarks/scaling.py --sweep ode_bins --no-time
    python benchmarks/scaling.py --sweep bins --no-time --observation calcium
    python benchmarks/scaling.py --paired --sizes 1000 --repeats 5 --observation bold
    python benchmarks/scaling.py --json scaling.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from neuroude.build import build_model
from neuroude.config import parse_config
from neuroude.dynamics import trainable_filter
from neuroude.train import make_optimizer, make_train_step

N_NEURONS = 50
BIN_WIDTH = 0.01
BASE = {"trials": 64, "bins": 100, "latents": 8}
SWEEPS = {
    "trials": [16, 64, 256, 1024],
    "bins": [100, 300, 1000, 3000, 10000],
    "latents": [2, 8, 32, 128],
    "ode_bins": [100, 300, 1000, 3000],
}
# The ode_bins sweep: an ODE (no diffusion) solved by Tsit5 with each adjoint, by Euler in streamed segments,
# and by reversible Heun with the whole step fused.
ODE_SOLVERS = {
    "tsit5-checkpoint": {"method": "tsit5", "adjoint": "checkpoint"},
    "tsit5-backsolve": {"method": "tsit5", "adjoint": "backsolve"},
    "euler-streamed": {"method": "euler", "n_substeps": 1},
    # An ODE reads no recognition context, so reversible Heun runs the whole step fused (`neuroude.fused`).
    "reversible_heun-fused": {"method": "reversible_heun", "n_substeps": 1},
    # Tsit5 streamed over fixed segments: each segment is one adaptive solve from the state the last one ended in.
    "tsit5-checkpoint-streamed-50": {"method": "tsit5", "adjoint": "checkpoint"},
    "tsit5-backsolve-streamed-50": {"method": "tsit5", "adjoint": "backsolve"},
}
# Bins per streamed segment of the ODE solvers that stream: "sqrt" for about sqrt(bins), or a number.
ODE_SEGMENTS = {"euler-streamed": "sqrt", "tsit5-checkpoint-streamed-50": 50, "tsit5-backsolve-streamed-50": 50}
# Set from --ode-solvers.
ODE_SELECTED = list(ODE_SOLVERS)


# Set from --observation. Calcium and bold read the Poisson counts below as fluorescence or BOLD values.
OBSERVATION = {"name": "poisson"}


def build_step(trials: int, bins: int, latents: int, checkpoint_bins: int, solver: dict | None = None):
    """Return the jitted training step and its arguments for one workload size.

    `solver` replaces the Euler SDE solver with these solver settings for an ODE (no diffusion).
    """
    solver_section = {"method": "euler", "n_substeps": 1, **(solver or {}), "checkpoint_bins": checkpoint_bins}
    config = parse_config({
        "model": {
            "latent_size": latents, "drift_width": 64, "drift_depth": 1,
            "diffusion": "network" if solver is None else "none",
            "recognition_hidden": 64, "context_size": 16, "correction_width": 64, "encoder": "identity",
            "interpolation": "hold", "observation": OBSERVATION["name"],
        },
        "solver": solver_section,
        "training": {"batch_size": trials},
    })
    model = build_model(
        config, n_channels=N_NEURONS, n_inputs=0, key=jax.random.PRNGKey(0), mean_count=0.3, bin_width=BIN_WIDTH
    )
    params, static = eqx.partition(model, trainable_filter(model))
    optimizer = make_optimizer(config.training)
    opt_state = optimizer.init(params)
    step = make_train_step(static, optimizer, t0=0.0, bin_width=BIN_WIDTH, n_samples=1)

    y = jax.random.poisson(jax.random.PRNGKey(1), 0.3, (trials, bins, N_NEURONS)).astype(jnp.float32)
    arguments = (params, opt_state, y, jnp.zeros((trials, bins, 0)), jnp.ones_like(y), jax.random.PRNGKey(2),
                 jnp.float32(1.0))
    return step, arguments


def measure(
    trials: int, bins: int, latents: int, checkpoint_bins: int, repeats: int, timed: bool, solver: str | None = None
) -> dict:
    """Return the temporary memory in MiB and, when `timed`, the median step time in seconds."""
    step, arguments = build_step(trials, bins, latents, checkpoint_bins, None if solver is None else ODE_SOLVERS[solver])
    # equinox wraps the compiled program, so its jax.stages.Compiled is one attribute down.
    compiled = step.lower(*arguments).compile().compiled
    memory = compiled.memory_analysis().temp_size_in_bytes / 2**20
    result = {"trials": trials, "bins": bins, "latents": latents, "checkpoint_bins": checkpoint_bins,
              "solver": solver or "euler-sde", "observation": OBSERVATION["name"], "temp_mib": memory}
    if not timed:
        return result

    result["median_s"] = median_seconds(step, arguments, repeats)
    return result


def median_seconds(step, arguments, repeats: int) -> float:
    """Return the median wall-clock seconds of `repeats` calls of `step` after a first, compiling call."""
    jax.block_until_ready(step(*arguments))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(*arguments))
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def paired_time_ratio(bins: int, repeats: int) -> dict:
    """Time the plain and the checkpointed step alternately at one length; return medians and the median ratio.

    Alternating the two steps exposes both to the same machine load, which
    timing one after the other does not.
    """
    segment = max(1, round(math.sqrt(bins)))
    steps = [build_step(BASE["trials"], bins, BASE["latents"], checkpoint_bins) for checkpoint_bins in (0, segment)]
    for step, arguments in steps:
        jax.block_until_ready(step(*arguments))

    seconds = [[], []]
    for _ in range(repeats):
        for side, (step, arguments) in enumerate(steps):
            start = time.perf_counter()
            jax.block_until_ready(step(*arguments))
            seconds[side].append(time.perf_counter() - start)
    ratios = [streamed / plain for plain, streamed in zip(*seconds)]
    return {"bins": bins, "checkpoint_bins": segment, "observation": OBSERVATION["name"],
            "plain_median_s": statistics.median(seconds[0]),
            "checkpointed_median_s": statistics.median(seconds[1]), "median_ratio": statistics.median(ratios)}


def growth_exponent(sizes, values) -> float:
    """Return the least-squares slope of log(values) against log(sizes)."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def run_sweep(name: str, repeats: int, timed: bool, sizes: list[int] | None = None) -> list[dict]:
    """Measure every size of one sweep (or only `sizes`); the bins sweep also runs with checkpointed segments."""
    rows = []
    if name == "ode_bins":
        return run_ode_sweep(repeats, timed, sizes)
    for size in sizes or SWEEPS[name]:
        sizes = {**BASE, name: size}
        rows.append(measure(**sizes, checkpoint_bins=0, repeats=repeats, timed=timed))
        print(json.dumps(rows[-1]), flush=True)
        if name == "bins":
            segment = max(1, round(math.sqrt(size)))
            rows.append(measure(**sizes, checkpoint_bins=segment, repeats=repeats, timed=timed))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def run_ode_sweep(repeats: int, timed: bool, sizes: list[int] | None = None) -> list[dict]:
    """Measure the ODE model over bins with every solver of `ODE_SOLVERS`."""
    rows = []
    for size in sizes or SWEEPS["ode_bins"]:
        for solver in ODE_SELECTED:
            rule = ODE_SEGMENTS.get(solver, 0)
            segment = max(1, round(math.sqrt(size))) if rule == "sqrt" else min(rule, size)
            sizes = {**BASE, "bins": size}
            rows.append(measure(**sizes, checkpoint_bins=segment, repeats=repeats, timed=timed, solver=solver))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def summarise(name: str, rows: list[dict], timed: bool) -> None:
    """Print the sweep as a table with growth exponents."""
    print(f"\n{name} sweep")
    if name == "ode_bins":
        size_key = "bins"
        groups = {solver: [row for row in rows if row["solver"] == solver] for solver in ODE_SELECTED}
    else:
        size_key = name
        groups = {"checkpoint_bins=0": [row for row in rows if row["checkpoint_bins"] == 0]}
        if name == "bins":
            groups["checkpoint_bins=sqrt"] = [row for row in rows if row["checkpoint_bins"] > 0]

    for label, group in groups.items():
        sizes = [row[size_key] for row in group]
        memory = [row["temp_mib"] for row in group]
        line = f"  {label}: memory exponent {growth_exponent(sizes, memory):.2f}"
        if timed:
            line += f", time exponent {growth_exponent(sizes, [row['median_s'] for row in group]):.2f}"
        print(line)
        for row in group:
            time_text = f"  {row['median_s'] * 1e3:9.1f} ms" if timed else ""
            print(f"    {size_key}={row[size_key]:6d}  {row['temp_mib']:9.1f} MiB{time_text}")

    if name == "bins" and timed:
        pairs = zip(groups["checkpoint_bins=0"], groups["checkpoint_bins=sqrt"])
        ratios = [streamed["median_s"] / plain["median_s"] for plain, streamed in pairs]
        print(f"  time with checkpointing / without: median {statistics.median(ratios):.2f}, "
              f"per size {', '.join(f'{ratio:.2f}' for ratio in ratios)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", choices=sorted(SWEEPS), action="append", help="sweep to run (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per size (default 5)")
    parser.add_argument("--no-time", action="store_true", help="measure memory only")
    parser.add_argument("--sizes", type=int, nargs="+", help="sizes to measure instead of the sweep's own")
    parser.add_argument("--json", help="also write every row to this JSON file")
    parser.add_argument("--paired", action="store_true",
                        help="only time the plain and the checkpointed step alternately at each --sizes bins")
    parser.add_argument("--observation", default="poisson",
                        choices=["poisson", "gaussian", "negative_binomial", "calcium", "bold"],
                        help="observation model of the 50 channels (default poisson)")
    parser.add_argument("--ode-solvers", nargs="+", choices=list(ODE_SOLVERS),
                        help="solvers of the ode_bins sweep (default: all)")
    arguments = parser.parse_args()
    OBSERVATION["name"] = arguments.observation
    ODE_SELECTED[:] = arguments.ode_solvers or list(ODE_SOLVERS)

    if arguments.paired:
        for bins in arguments.sizes or [100, 1000]:
            print(json.dumps(paired_time_ratio(bins, arguments.repeats)), flush=True)
        return

    timed = not arguments.no_time
    results = {}
    for name in arguments.sweep or sorted(SWEEPS):
        results[name] = run_sweep(name, arguments.repeats, timed, arguments.sizes)
    for name, rows in results.items():
        summarise(name, rows, timed)

    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
