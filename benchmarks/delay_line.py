"""Time the fitting solver's delay line: interpolated fractional delays against delays rounded to steps.

The workload is the noise-free path of an 80-node Stuart-Landau network with
diffusive coupling and random fibre lengths of 10 to 150 mm at 10 m/s, which
gives delays of 1 to 15 ms. Heun integrates it at 0.5 ms steps over 200 bins
of 10 ms (4000 steps). Each call returns the squared path and its gradient
in the conduction speed and the global coupling. The rounded delays have no
gradient in the speed, so the coupling keeps a backward pass in both.

`DelayLine` interpolates between the two stored steps around each delay.
`RoundedDelayLine` is a copy of the delay line the solver used before
interpolation, which read one stored step at each delay rounded to steps.
The two run interleaved for `--rounds` rounds, and the script prints the
median seconds per call of each, with compilation excluded, and their ratio.

    python benchmarks/delay_line.py --rounds 5
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from neuroude.dynamics.mechanistic.network import BrainNetwork
from neuroude.solve import solve_fixed_step

N_NODES, BIN_WIDTH, N_SUBSTEPS, N_BINS, SPEED = 80, 0.01, 20, 200, 10.0


class RoundedDelayLine(eqx.Module):
    """The fitting solver's delay line before interpolation: an (L, N) ring buffer read at delays rounded to steps."""

    lags: jnp.ndarray
    length: int = eqx.field(static=True)
    n_nodes: int = eqx.field(static=True)
    local_state_size: int = eqx.field(static=True)
    coupling_variable: int = eqx.field(static=True)

    def sent(self, x):
        return x.reshape(self.n_nodes, self.local_state_size)[:, self.coupling_variable]

    def initial(self, x0):
        return jnp.broadcast_to(self.sent(x0), (self.length, self.n_nodes)), jnp.zeros((), jnp.int32)

    def push(self, state, x):
        buffer, pointer = state
        pointer = (pointer + 1) % self.length
        return buffer.at[pointer].set(self.sent(x)), pointer

    def read(self, state):
        buffer, pointer = state
        lags = jnp.clip(jnp.rint(self.lags), 0, self.length - 1).astype(jnp.int32)
        return buffer[(pointer - lags) % self.length, jnp.arange(self.n_nodes)[None, :]]


def build_network() -> BrainNetwork:
    rng = np.random.default_rng(0)
    connectivity = rng.uniform(0, 1, (N_NODES, N_NODES)) / N_NODES
    np.fill_diagonal(connectivity, 0.0)
    lengths = rng.uniform(10, 150, (N_NODES, N_NODES))
    return BrainNetwork.from_registry("stuart_landau", connectivity, 0, global_coupling=1.0,
                                      fibre_lengths=lengths, conduction_speed=SPEED)


def make_call(network: BrainNetwork, rounded: bool):
    x0 = jnp.asarray(np.random.default_rng(1).normal(size=network.state_size), jnp.float32)

    def path_norm(raws):
        moved = eqx.tree_at(lambda n: (n.conduction_speed.raw, n.global_coupling.raw), network, raws)
        line = moved.delay_line(BIN_WIDTH / N_SUBSTEPS)
        if rounded:
            line = RoundedDelayLine(line.lags, line.length, line.n_nodes, line.local_state_size, line.coupling_variable)

        def fields(t, x, k, frac, past):
            return moved.delayed(t, x, jnp.zeros(0), past), jnp.zeros_like(x), jnp.zeros(())

        path, _ = solve_fixed_step(fields, x0, 0.0, BIN_WIDTH, N_BINS, N_SUBSTEPS, None, "heun", history=line)
        return jnp.sum(path**2)

    return jax.jit(jax.value_and_grad(path_norm))


def time_call(call, raw, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call(raw))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of both variants")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per variant and round")
    arguments = parser.parse_args()

    network = build_network()
    raw = (network.conduction_speed.raw, network.global_coupling.raw)
    calls = {"interpolated": make_call(network, False), "rounded": make_call(network, True)}
    for call in calls.values():
        jax.block_until_ready(call(raw))

    medians = {name: [] for name in calls}
    for _ in range(arguments.rounds):
        for name, call in calls.items():
            medians[name].append(time_call(call, raw, arguments.repeats))

    for name, values in medians.items():
        print(f"{name:>12s}: {np.median(values):.3f} s per value and gradient (median of {len(values)} rounds)")
    ratios = np.array(medians["interpolated"]) / np.array(medians["rounded"])
    print(f"interpolated / rounded: {np.median(ratios):.2f} (median of per-round ratios)")


if __name__ == "__main__":
    main()
