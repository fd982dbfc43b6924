"""Co-smoothing on rat hippocampus recordings: a latent SDE against spike smoothing and GPFA.

Fits a black-box latent SDE with 20 % of the units held out (a fixed draw), so the
recognition model reads only the held-in units. On test trials, which training never
uses, it reports co-smoothing bits per spike of the held-out units for the model, the
spike-smoothing baseline and GPFA (both with their settings chosen on validation trials),
and the R^2 of the animal's position decoded by ridge regression from the model's
posterior latents, the smoothed held-in spikes and the GPFA latents.

Run by hand, never in CI; the recordings are not part of the package:

    python benchmarks/cosmoothing_hippocampus.py --data ../shared/data/hippocampus-wmaze/recording.npz \\
        --steps 1500 --out /tmp/cosmoothing-wmaze
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
from pathlib import Path

from neuroude import fit_run
from neuroude.config import parse_config
from neuroude.data import load_npz, save_npz

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPOSITORY.parent / "shared" / "data" / "hippocampus-wmaze" / "recording.npz"
POSITION = ("x_px", "y_px")  # behaviour channels of the hippocampus recordings that hold the position


def make_config(
    data: Path, steps: int, latent_size: int, seed: int, time_constant: float, diffusion_scale: float,
    behaviour_weight: float | None = None, coordinated_dropout: float = 0.0, kl_weight_max: float = 1.0,
):
    """Return the run configuration of the comparison.

    Bins are 50 ms. Two Euler steps per bin keep the integration stable for drift time
    constants of a few bins or more. With `behaviour_weight`, a behaviour head reads
    position and speed (standardised on the training windows) from the latent path and is
    fitted jointly with the spikes, its log-likelihood weighted by `behaviour_weight`.
    """
    behaviour = None if behaviour_weight is None else {"weight": behaviour_weight, "standardize": True}
    return parse_config({
        "data": {"source": "npz", "path": str(data), "heldout_neurons": 0.2},
        "model": {
            "latent_size": latent_size, "drift": "mlp", "drift_width": 64, "drift_time_constant": time_constant,
            "diffusion": "additive", "diffusion_scale": diffusion_scale, "encoder": "identity", "n_init_bins": 10,
            "observation": "poisson", "recognition_hidden": 64, "context_size": 16, "behaviour": behaviour,
        },
        "solver": {"method": "euler", "n_substeps": 2},
        "training": {
            "steps": steps, "batch_size": 16, "learning_rate": 3e-3, "kl_warmup_steps": steps // 3,
            "eval_every": max(steps // 15, 1), "patience": 6, "checkpoint_every": max(steps // 5, 1),
            "coordinated_dropout": coordinated_dropout, "kl_weight_max": kl_weight_max,
        },
        "evaluation": {"n_samples": 8, "skip_bins": 10},
        "seed": seed,
    })


def keep_behaviour(data: Path, names: list[str], target: Path) -> Path:
    """Write a copy of the recording at `data` with only the behaviour variables `names`, so the head fits only those."""
    recording = load_npz(data)
    available = list(recording.metadata["behaviour_names"])
    missing = [name for name in names if name not in available]
    if missing:
        raise SystemExit(f"--behaviour-variables names {missing}, which the recording lacks; it has {available}")
    columns = [available.index(name) for name in names]
    selected = dataclasses.replace(
        recording, behaviour=recording.behaviour[..., columns],
        behaviour_mask=None if recording.behaviour_mask is None else recording.behaviour_mask[..., columns],
        metadata={**recording.metadata, "behaviour_names": list(names)},
    )
    save_npz(selected, target)
    return target


def best_validation_score(run_folder: Path) -> float:
    """Return the highest validation co-bps logged during training, the score that picks the kept model."""
    with open(run_folder / "history.csv", newline="") as file:
        values = [float(row["validation_metric"]) for row in csv.DictReader(file) if row["validation_metric"]]
    return max(values)


def position_r_squared(decoding: dict) -> float:
    return sum(decoding[name] for name in POSITION) / len(POSITION)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="recording.npz of a hippocampus recording")
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--latent-size", type=int, default=8)
    parser.add_argument("--time-constant", type=float, default=0.5, help="seconds; time scale of the drift network")
    parser.add_argument("--diffusion-scale", type=float, default=0.3, help="initial scale of the additive diffusion")
    parser.add_argument("--seed", type=int, default=0, help="sets the trial split, initialisation and noise")
    parser.add_argument("--behaviour-weight", type=float, default=None,
                        help="fit a behaviour head (position and speed) jointly, with this weight; off by default")
    parser.add_argument("--behaviour-variables", nargs="+", default=None,
                        help="behaviour variables the head fits and the decoders score (default: all); "
                             "the others are dropped from a copy of the recording written beside --out")
    parser.add_argument("--coordinated-dropout", type=float, default=0.0,
                        help="training.coordinated_dropout: fraction of held-in entries hidden from the recognition "
                        "model in each training step")
    parser.add_argument("--kl-weight-max", type=float, default=1.0,
                        help="training.kl_weight_max: the weight of the KL after the warm-up")
    parser.add_argument("--out", type=Path, default=Path("runs/cosmoothing-hippocampus"), help="run folder")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)  # the run's log.txt keeps the progress messages

    data = arguments.data.resolve()
    if arguments.behaviour_variables:
        data = keep_behaviour(data, arguments.behaviour_variables, arguments.out.with_name(arguments.out.name + ".npz"))
    config = make_config(
        data, arguments.steps, arguments.latent_size, arguments.seed,
        arguments.time_constant, arguments.diffusion_scale, arguments.behaviour_weight,
        arguments.coordinated_dropout, arguments.kl_weight_max,
    )
    run = fit_run(config, arguments.out, overwrite=True, quiet=True)
    scores = run.metrics["test"]["co_smoothing"]
    training = run.metrics["training"]
    decoding = scores["behaviour_decoding_r_squared"]

    print(f"data: {arguments.data}")
    print(f"held-out units: {scores['heldout_channels']}; test trials: {len(run.split['test'])}")
    print(f"training: {training['steps_run']} steps, best at step {training['best_step']}, {training['seconds']} s; "
          f"best validation co-bps {best_validation_score(arguments.out):.4f}")
    print("\n| method | test co-bps | position R^2 (x, y mean) | speed R^2 |")
    print("|---|---|---|---|")
    rows = (("latent SDE", "model", "model_latents"), ("spike smoothing", "spike_smoothing", "smoothed_spikes"),
            ("GPFA", "gpfa", "gpfa_latents"))
    for label, score_name, decoding_name in rows:
        position = position_r_squared(decoding[decoding_name])
        speed = decoding[decoding_name].get("speed_px_per_s", float("nan"))
        print(f"| {label} | {scores[score_name]:.4f} | {position:.3f} | {speed:.3f} |")
    print(f"\nbaseline settings chosen on validation trials: smoothing {scores['spike_smoothing_settings']}, "
          f"GPFA {scores['gpfa_settings']}")


if __name__ == "__main__":
    main()
