"""Time how long `neuroude fit` takes to start training, cold and with the compilation cache filled.

Runs `neuroude --log-level info fit CONFIG --steps 2` several times in child
processes that share one fresh cache folder (`NEUROUDE_COMPILATION_CACHE`). The
first run compiles from nothing and fills the cache; later runs read it. Each
line the child logs is stamped with the seconds since the child was started,
and the script reports, per run:

- `fitting`: launch to the "fitting ..." line (imports, data loading, model build);
- `step 2`: launch to the "step 2:" line (two training steps and one validation
  evaluation, each compiled or read from the cache);
- `training`: the difference, the time spent compiling and running the steps.

    python benchmarks/warm_start.py [--config configs/receptor-neuron.yaml] [--runs 4]

Needs the `neuroude` command on PATH (or `--neuroude PATH`). Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def time_one_run(neuroude: str, config: Path, out: Path, cache: Path) -> dict[str, float]:
    """Run one two-step fit and return the seconds from launch to its `fitting` and `step 2` log lines."""
    environment = {**os.environ, "NEUROUDE_COMPILATION_CACHE": str(cache)}
    command = [neuroude, "--log-level", "info", "fit", str(config), "--steps", "2", "--out", str(out)]
    marks: dict[str, float] = {}

    start = time.perf_counter()
    with subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as child:
        for line in child.stdout:
            now = time.perf_counter() - start
            if "INFO: fitting" in line and "fitting" not in marks:
                marks["fitting"] = now
            if "INFO: step 2:" in line and "step 2" not in marks:
                marks["step 2"] = now
    if child.returncode != 0 or len(marks) != 2:
        raise SystemExit(f"{' '.join(command)} failed (exit status {child.returncode}) or logged no training lines")

    marks["training"] = marks["step 2"] - marks["fitting"]
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "receptor-neuron.yaml",
                        help="run configuration to fit (default configs/receptor-neuron.yaml)")
    parser.add_argument("--runs", type=int, default=4, help="runs on one cache; the first is cold (default 4)")
    parser.add_argument("--neuroude", default="neuroude", help="the neuroude command (default: from PATH)")
    arguments = parser.parse_args()
    if arguments.runs < 2:
        parser.error(f"--runs is {arguments.runs}; expected at least 2 (one cold run and one warm run)")

    with tempfile.TemporaryDirectory(prefix="neuroude-warm-start-") as folder:
        folder = Path(folder)
        runs = [
            time_one_run(arguments.neuroude, arguments.config.resolve(), folder / f"run{index}", folder / "cache")
            for index in range(arguments.runs)
        ]

    print(f"{'run':<6} {'fitting (s)':>12} {'step 2 (s)':>11} {'training (s)':>13}")
    for index, marks in enumerate(runs):
        label = "cold" if index == 0 else f"warm{index}"
        print(f"{label:<6} {marks['fitting']:>12.2f} {marks['step 2']:>11.2f} {marks['training']:>13.2f}")
    warm = runs[1:]
    print(f"warm median: launch to step 2 {statistics.median(m['step 2'] for m in warm):.2f} s, "
          f"training part {statistics.median(m['training'] for m in warm):.2f} s "
          f"(cold {runs[0]['training']:.2f} s)")


if __name__ == "__main__":
    main()
