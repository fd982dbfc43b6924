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
}


def build_step(trials: int, bins: int, latents: int, checkpoint_bins: int):
    """Return the jitted training step and its arguments for one workload size."""
    config = parse_config({
        "model": {
            "latent_size": latents, "drift_width": 64, "drift_depth": 1, "diffusion": "network",
            "recognition_hidden": 64, "context_size": 16, "correction_width": 64, "encoder": "identity",
            "interpolation": "hold",
        },
        "solver": {"method": "euler", "n_substeps": 1, "checkpoint_bins": checkpoint_bins},
        "training": {"batch_size": trials},
    })
    model = build_model(config, n_channels=N_NEURONS, n_inputs=0, key=jax.random.PRNGKey(0), mean_count=0.3)
    params, static = eqx.partition(model, trainable_filter(model))
    optimizer = make_optimizer(config.training)
    opt_state = optimizer.init(params)
    step = make_train_step(static, optimizer, t0=0.0, bin_width=BIN_WIDTH, n_samples=1)

    y = jax.random.poisson(jax.random.PRNGKey(1), 0.3, (trials, bins, N_NEURONS)).astype(jnp.float32)
    arguments = (params, opt_state, y, jnp.zeros((trials, bins, 0)), jnp.ones_like(y), jax.random.PRNGKey(2),
                 jnp.float32(1.0))
    return step, arguments


def measure(trials: int, bins: int, latents: int, checkpoint_bins: int, repeats: int, timed: bool) -> dict:
    """Return the temporary memory in MiB and, when `timed`, the median step time in seconds."""
    step, arguments = build_step(trials, bins, latents, checkpoint_bins)
    # equinox wraps the compiled program, so its jax.stages.Compiled is one attribute down.
    compiled = step.lower(*arguments).compile().compiled
    memory = compiled.memory_analysis().temp_size_in_bytes / 2**20
    result = {"trials": trials, "bins": bins, "latents": latents, "checkpoint_bins": checkpoint_bins,
              "temp_mib": memory}
    if not timed:
        return result

    jax.block_until_ready(step(*arguments))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(*arguments))
        seconds.append(time.perf_counter() - start)
    result["median_s"] = statistics.median(seconds)
    return result


def growth_exponent(sizes, values) -> float:
    """Return the least-squares slope of log(values) against log(sizes)."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def run_sweep(name: str, repeats: int, timed: bool) -> list[dict]:
    """Measure every size of one sweep; the bins sweep also runs with checkpointed segments."""
    rows = []
    for size in SWEEPS[name]:
        sizes = {**BASE, name: size}
        rows.append(measure(**sizes, checkpoint_bins=0, repeats=repeats, timed=timed))
        if name == "bins":
            segment = max(1, round(math.sqrt(size)))
            rows.append(measure(**sizes, checkpoint_bins=segment, repeats=repeats, timed=timed))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def summarise(name: str, rows: list[dict], timed: bool) -> None:
    """Print the sweep as a table with growth exponents."""
    print(f"\n{name} sweep")
    groups = {0: [row for row in rows if row["checkpoint_bins"] == 0]}
    if name == "bins":
        groups["sqrt"] = [row for row in rows if row["checkpoint_bins"] > 0]

    for label, group in groups.items():
        sizes = [row[name] for row in group]
        memory = [row["temp_mib"] for row in group]
        line = f"  checkpoint_bins={label}: memory exponent {growth_exponent(sizes, memory):.2f}"
        if timed:
            line += f", time exponent {growth_exponent(sizes, [row['median_s'] for row in group]):.2f}"
        print(line)
        for row in group:
            time_text = f"  {row['median_s'] * 1e3:9.1f} ms" if timed else ""
            print(f"    {name}={row[name]:6d}  {row['temp_mib']:9.1f} MiB{time_text}")

    if name == "bins" and timed:
        ratios = [b["median_s"] / a["median_s"] for a, b in zip(groups[0], groups["sqrt"])]
        print(f"  time with checkpointing / without: median {statistics.median(ratios):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", choices=sorted(SWEEPS), action="append", help="sweep to run (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per size (default 5)")
    parser.add_argument("--no-time", action="store_true", help="measure memory only")
    parser.add_argument("--json", help="also write every row to this JSON file")
    arguments = parser.parse_args()

    timed = not arguments.no_time
    results = {}
    for name in arguments.sweep or sorted(SWEEPS):
        results[name] = run_sweep(name, arguments.repeats, timed)
    for name, rows in results.items():
        summarise(name, rows, timed)

    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
