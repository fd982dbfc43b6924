"""Compare one neuroude training step with the peer scripts on the same latent-SDE workload.

Run by hand, never in CI. Each round runs, one after another in separate
processes: neuroude (`neuroude_step.py`), the hand-fused `jax.lax.scan` step
(`peer_diffrax.py scan`), the diffrax step (`peer_diffrax.py diffrax`) and the
torchsde step (`peer_torchsde.py`). Interleaving the sides spreads any load
from other work on the machine over all of them. Each process prints its
median seconds per step with compilation excluded. This script reports the
median over rounds of each side, the ratios computed per round with their
medians, the first-call (compile) time and each process's peak resident set
size, read with `os.wait4` when the process exits.

Nothing here asserts a time: the targets are printed next to the measured ratios.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_PEER_DIR = REPO_ROOT.parent / "shared" / "bench"
DEFAULT_PEER_JAX_PYTHON = Path("/tmp/peer-jax/bin/python")
DEFAULT_PEER_TORCH_PYTHON = Path("/tmp/peer-torch/bin/python")

# Targets of the performance goals (at most 1.1 times the hand-fused scan, at least 15 times faster than
# torchsde), printed next to the measured ratios and never asserted.
TARGET_MAX_NEUROUDE_OVER_SCAN = 1.1
TARGET_MIN_TORCHSDE_OVER_NEUROUDE = 15.0

PEER_MEDIAN = re.compile(r"step seconds \(median of (\d+)\): ([0-9.]+)")
PEER_FIRST_CALL = re.compile(r"first call incl\. compile: ([0-9.]+)s")


@dataclass
class Side:
    """One contender: the command that measures it and what each round measured."""

    name: str
    command: list[str]
    medians: list[float] = field(default_factory=list)
    first_call_s: list[float] = field(default_factory=list)
    peak_rss_mib: list[float] = field(default_factory=list)
    details: list[dict] = field(default_factory=list)


class ChildError(RuntimeError):
    """A measuring process failed or printed no median."""


def run_child(command: list[str]) -> tuple[str, float]:
    """Run `command` to completion; return its stdout and its peak resident set size in MiB.

    `os.wait4` returns the resource usage of that one process, so the peak is
    not mixed with earlier children as `RUSAGE_CHILDREN` would be.
    """
    with tempfile.TemporaryFile(mode="w+") as stderr_file:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr_file, text=True, cwd=REPO_ROOT)
        stdout = process.stdout.read()
        process.stdout.close()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            stderr_file.seek(0)
            stderr_tail = stderr_file.read()[-3000:]
            raise ChildError(
                f"command failed with exit status {process.returncode}: {shlex.join(command)}\n{stderr_tail}"
            )
    # Linux reports ru_maxrss in KiB.
    return stdout, usage.ru_maxrss / 1024


def measure_neuroude(side: Side) -> None:
    stdout, peak_mib = run_child(side.command)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ChildError(f"no JSON result in the output of {shlex.join(side.command)}:\n{stdout[-2000:]}")
    result = json.loads(lines[-1])
    side.medians.append(result["median_s"])
    side.first_call_s.append(result["first_call_s"])
    side.peak_rss_mib.append(peak_mib)
    side.details.append(result)


def measure_peer(side: Side) -> None:
    stdout, peak_mib = run_child(side.command)
    median = PEER_MEDIAN.search(stdout)
    if median is None:
        raise ChildError(f"no 'step seconds (median of N): S' line in the output of {shlex.join(side.command)}:\n{stdout}")
    side.medians.append(float(median.group(2)))
    first_call = PEER_FIRST_CALL.search(stdout)
    if first_call is not None:
        side.first_call_s.append(float(first_call.group(1)))
    side.peak_rss_mib.append(peak_mib)
    side.details.append({"output": stdout.strip(), "median_of": int(median.group(1))})


def describe_machine() -> dict:
    cpu_model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all sides (default 3)")
    parser.add_argument("--steps", type=int, default=10, help="timed neuroude steps per round after the first call (default 10)")
    parser.add_argument("--skip-torch", action="store_true", help="leave out peer_torchsde.py, which takes about a minute per round")
    parser.add_argument(
        "--torch-threads", type=int, metavar="N",
        help="torch threads for peer_torchsde.py (default: the script's own, 2); on a loaded machine 1 can be several times faster",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write all figures and raw outputs to this JSON file")
    parser.add_argument(
        "--variants", default="",
        help="comma-separated neuroude_step.py variants (monkeypatches) to run in every round next to the baseline",
    )
    parser.add_argument("--peer-dir", type=Path, default=DEFAULT_PEER_DIR, help=f"folder of the peer scripts (default {DEFAULT_PEER_DIR})")
    parser.add_argument("--peer-jax-python", type=Path, default=DEFAULT_PEER_JAX_PYTHON, help="Python of the venv with jax, diffrax, equinox, optax, lineax")
    parser.add_argument("--peer-torch-python", type=Path, default=DEFAULT_PEER_TORCH_PYTHON, help="Python of the venv with torch and torchsde")
    parser.add_argument("--python", type=Path, default=Path(sys.executable), help="Python with neuroude installed (default: this one)")
    args = parser.parse_args(argv)

    if args.rounds < 1:
        parser.error(f"--rounds is {args.rounds}; expected an integer >= 1")
    if args.torch_threads is not None and args.torch_threads < 1:
        parser.error(f"--torch-threads is {args.torch_threads}; expected an integer >= 1")
    if args.steps < 10:
        parser.error(f"--steps is {args.steps}; expected an integer >= 10, so the median is taken over enough steps")
    args.variants = [name for name in args.variants.split(",") if name]

    required = [args.peer_dir / "peer_diffrax.py", args.peer_jax_python]
    if not args.skip_torch:
        required += [args.peer_dir / "peer_torchsde.py", args.peer_torch_python]
    missing = [str(path) for path in required if not path.exists()]
    if missing:
        parser.error(
            f"not found: {', '.join(missing)}. Pass --peer-dir, --peer-jax-python or --peer-torch-python, "
            "or create the peer venvs as benchmarks/README.md describes"
        )
    return args


def build_sides(args: argparse.Namespace) -> tuple[list[Side], list[Side]]:
    """Return the sides in the order each round runs them, and the neuroude variant sides."""
    neuroude_command = [str(args.python), str(BENCH_DIR / "neuroude_step.py"), "--steps", str(args.steps)]
    sides = [
        Side("neuroude", neuroude_command),
        Side("jax scan (peer)", [str(args.peer_jax_python), str(args.peer_dir / "peer_diffrax.py"), "scan"]),
        Side("diffrax (peer)", [str(args.peer_jax_python), str(args.peer_dir / "peer_diffrax.py"), "diffrax"]),
    ]
    if not args.skip_torch:
        torch_command = [str(args.peer_torch_python), str(args.peer_dir / "peer_torchsde.py")]
        if args.torch_threads is not None:
            # The script reads the thread count as its second argument; any first argument but "adjoint" selects sdeint.
            torch_command += ["sdeint", str(args.torch_threads)]
        sides.append(Side("torchsde (peer)", torch_command))
    variants = [Side(f"neuroude {name}", neuroude_command + ["--variant", name]) for name in args.variants]
    return sides, variants


def per_round_ratios(numerator: Side, denominator: Side) -> list[float]:
    return [top / bottom for top, bottom in zip(numerator.medians, denominator.medians)]


def format_seconds(values: list[float]) -> str:
    return " ".join(f"{value:.4f}" for value in values)


def print_report(sides: list[Side], variants: list[Side], ratios: list[dict], header: dict) -> None:
    print()
    print(f"{header['date']}  nproc {header['machine']['nproc']}  {header['machine']['cpu_model']}")
    print(f"command: {header['command']}")
    print(f"load average before / after: {header['load_before']} / {header['load_after']}")
    for side in sides + variants:
        print(f"  {side.name}: {shlex.join(side.command)}")
    print()
    print(f"{'side':<26} {'median s/step':>13}  {'first call s':>12}  {'peak RSS MiB':>12}  per-round medians (s)")
    for side in sides + variants:
        first_call = f"{statistics.median(side.first_call_s):.1f}" if side.first_call_s else "-"
        print(
            f"{side.name:<26} {statistics.median(side.medians):>13.4f}  {first_call:>12}  "
            f"{statistics.median(side.peak_rss_mib):>12.0f}  {format_seconds(side.medians)}"
        )
    print()
    print(f"{'ratio':<34} {'median':>7}  {'target':>8}  {'met':>4}  per round")
    for ratio in ratios:
        target = ratio.get("target", "")
        met = {True: "yes", False: "no", None: ""}[ratio.get("met")]
        per_round = " ".join(f"{value:.3f}" for value in ratio["per_round"])
        print(f"{ratio['name']:<34} {ratio['median']:>7.3f}  {target:>8}  {met:>4}  {per_round}")

    neuroude = sides[0]
    recompiles = [detail["recompiles_in_timed_steps"] for detail in neuroude.details]
    if any(recompiles):
        recompile_s = statistics.median(detail["recompile_s"] for detail in neuroude.details)
        print()
        print(
            f"neuroude recompiled during the timed steps in {sum(1 for n in recompiles if n)} of {len(recompiles)} rounds "
            f"(median {recompile_s:.1f} s of compilation); the median step time is not affected, a fit pays it once."
        )


def compute_ratios(sides: list[Side], variants: list[Side]) -> list[dict]:
    by_name = {side.name: side for side in sides}
    neuroude = by_name["neuroude"]
    ratios = []

    def add(name, numerator, denominator, target=None, passes=None):
        per_round = per_round_ratios(numerator, denominator)
        median = statistics.median(per_round)
        entry = {"name": name, "per_round": per_round, "median": median}
        if target is not None:
            entry["target"] = target
            entry["met"] = passes(median)
        ratios.append(entry)

    add("neuroude / jax scan", neuroude, by_name["jax scan (peer)"],
        f"<= {TARGET_MAX_NEUROUDE_OVER_SCAN}", lambda value: value <= TARGET_MAX_NEUROUDE_OVER_SCAN)
    add("neuroude / diffrax", neuroude, by_name["diffrax (peer)"])
    if "torchsde (peer)" in by_name:
        add("torchsde / neuroude", by_name["torchsde (peer)"], neuroude,
            f">= {TARGET_MIN_TORCHSDE_OVER_NEUROUDE:g}", lambda value: value >= TARGET_MIN_TORCHSDE_OVER_NEUROUDE)
    for variant in variants:
        add(f"{variant.name} / neuroude", variant, neuroude)
    return ratios


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sides, variants = build_sides(args)
    header = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/bench_training_step.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": describe_machine(),
        "load_before": " ".join(f"{load:.2f}" for load in os.getloadavg()),
        "rounds": args.rounds,
        "steps": args.steps,
    }

    for round_index in range(args.rounds):
        for side in sides + variants:
            print(f"round {round_index + 1}/{args.rounds}: {side.name} ...", end=" ", flush=True, file=sys.stderr)
            if side.name.startswith("neuroude"):
                measure_neuroude(side)
            else:
                measure_peer(side)
            print(f"{side.medians[-1]:.4f} s/step", file=sys.stderr)

    header["load_after"] = " ".join(f"{load:.2f}" for load in os.getloadavg())
    ratios = compute_ratios(sides, variants)
    print_report(sides, variants, ratios, header)

    if args.json is not None:
        result = {
            **header,
            "sides": [
                {
                    "name": side.name,
                    "command": shlex.join(side.command),
                    "median_s": statistics.median(side.medians),
                    "per_round_median_s": side.medians,
                    "first_call_s": side.first_call_s,
                    "peak_rss_mib": side.peak_rss_mib,
                    "details": side.details,
                }
                for side in sides + variants
            ],
            "ratios": ratios,
        }
        temporary = args.json.with_name(args.json.name + ".tmp")
        temporary.write_text(json.dumps(result, indent=2) + "\n")
        temporary.replace(args.json)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
