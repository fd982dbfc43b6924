"""Held-out bits per spike of the default receptor-neuron fit over several train/validation/test splits.

Runs `neuroude fit` with the packaged default configuration once per seed (the seed sets the split,
the initialisation and the noise) and prints the test scores of the model and the baselines.

    python benchmarks/receptor_neuron_splits.py [--seeds 0 1 2 3 4] [--out runs/splits]
"""

import argparse
import logging
import statistics
from pathlib import Path

from neuroude import RunConfig, fit_run

COLUMNS = ("model", "glm_stimulus", "homogeneous_poisson", "glm_stimulus_and_spike_history_one_step_ahead")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", default="runs/splits", help="folder for one run folder per seed")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)

    rows = []
    for seed in arguments.seeds:
        config = RunConfig(seed=seed)
        run = fit_run(config, Path(arguments.out) / f"seed-{seed}", overwrite=True, quiet=True)
        rows.append([run.metrics["test"][name]["bits_per_spike"] for name in COLUMNS])
        print(f"seed {seed}: " + "  ".join(f"{name} {value:.4f}" for name, value in zip(COLUMNS, rows[-1])), flush=True)

    print("\n| seed | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for seed, row in zip(arguments.seeds, rows):
        print(f"| {seed} | " + " | ".join(f"{value:.3f}" for value in row) + " |")
    means = [statistics.mean(column) for column in zip(*rows)]
    print("| mean | " + " | ".join(f"{value:.3f}" for value in means) + " |")
    wins = sum(row[0] > row[1] for row in rows)
    print(f"\nmodel above the stimulus GLM on {wins} of {len(rows)} splits")


if __name__ == "__main__":
    main()
