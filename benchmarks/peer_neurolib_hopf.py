"""Peer side of benchmarks/whole_brain.py: neurolib's Hopf (Stuart-Landau) network with BOLD.

Run by whole_brain.py with the Python of a separate virtual environment that has neurolib
(`python3 -m venv /tmp/peer-neurolib && /tmp/peer-neurolib/bin/pip install neurolib`). It
needs only numpy and neurolib, never neuroude or JAX. It reads the connectome from an NPZ
file (`connectivity`, `lengths` in mm, `x0`, `y0`), compiles neurolib's numba kernels with a
short run, then reads one command per line on stdin and writes one JSON line per command
on stdout:

- `time DELAYS SECONDS`: wall time (`seconds`) and CPU time of this process (`cpu_seconds`) of
  `model.run(bold=True)` for SECONDS of simulated time, with conduction delays from the fibre
  lengths when DELAYS is `delays`, else without;
- `trace DELAYS MILLISECONDS PATH`: a noise-free run from (x0, y0), its x written to PATH
  (.npy), used to check that both sides integrate the same equations;
- `quit`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from neurolib.models.hopf import HopfModel


def make_model(arrays, delays: bool, args) -> HopfModel:
    lengths = arrays["lengths"] if delays else np.zeros_like(arrays["lengths"])
    model = HopfModel(Cmat=arrays["connectivity"], Dmat=lengths, seed=args.seed)
    model.params["dt"] = args.dt
    model.params["K_gl"] = args.coupling
    model.params["a"] = args.a
    model.params["w"] = args.w
    model.params["signalV"] = args.speed
    model.params["sigma_ou"] = args.sigma
    model.params["xs_init"] = arrays["x0"][:, None]
    model.params["ys_init"] = arrays["y0"][:, None]
    return model


def timed_run(model: HopfModel, seconds: float) -> dict:
    """Run `seconds` of simulated time; return its wall and CPU time in seconds."""
    model.params["duration"] = seconds * 1000.0
    start, start_cpu = time.perf_counter(), time.process_time()
    model.run(bold=True)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - start_cpu}


def trace(model: HopfModel, milliseconds: float, path: str) -> None:
    model.params["duration"] = milliseconds
    model.params["sigma_ou"] = 0.0
    model.run()
    np.save(path, np.asarray(model.x), allow_pickle=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--dt", type=float, required=True, help="Euler step in ms")
    parser.add_argument("--coupling", type=float, required=True, help="global coupling K_gl in 1/ms")
    parser.add_argument("--a", type=float, required=True, help="Hopf bifurcation parameter a in 1/ms")
    parser.add_argument("--w", type=float, required=True, help="angular frequency w in rad/ms")
    parser.add_argument("--speed", type=float, required=True, help="conduction speed in m/s")
    parser.add_argument("--sigma", type=float, required=True, help="sigma_ou, the Ornstein-Uhlenbeck input noise")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with np.load(args.data, allow_pickle=False) as loaded:
        arrays = {name: loaded[name] for name in loaded.files}
    models = {name: make_model(arrays, name == "delays", args) for name in ("delays", "none")}
    for model in models.values():
        # numba compiles the integration and BOLD kernels on the first call; 2 s is one BOLD sample.
        timed_run(model, 2.0)
    print(json.dumps({"ready": True}), flush=True)

    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        if command[0] == "time":
            print(json.dumps(timed_run(models[command[1]], float(command[2]))), flush=True)
        elif command[0] == "trace":
            trace(make_model(arrays, command[1] == "delays", args), float(command[2]), command[3])
            print(json.dumps({"written": command[3]}), flush=True)
        else:
            print(json.dumps({"error": f"unknown command {command[0]!r}"}), flush=True)


if __name__ == "__main__":
    main()
