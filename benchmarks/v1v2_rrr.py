"""V2 from V1 on macaque residuals: a Gaussian latent SDE against reduced-rank regression.

Fits the latent SDE of `configs/v1-v2-residuals.yaml` with the 31 V2 channels held out,
so the recognition model reads only the 110 V1 channels, while the Gaussian observation
model is fitted to all 141 channels on the training trials. The score is the variance
explained (R^2, averaged over the V2 channels) of the V2 residuals on test trials, which
training never uses. It is computed for the model's posterior mean given V1 and for
reduced-rank regression from the V1 channels of the same bin, whose ridge and rank are
chosen by cross-validation over the training trials. Early stopping uses the held-out R^2 on the
validation trials. For reference it also fits reduced-rank regression from the 79 V1
source units alone, the predictor population of the communication-subspace analysis,
and from the V1 channels of the bins t - 1, t and t + 1, since the model reads V1 over
the whole trial while plain reduced-rank regression reads only bin t.

Run by hand, never in CI; the recording is not part of the package:

    python benchmarks/v1v2_rrr.py --steps 3000 --out /tmp/v1v2-rrr
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np

from neuroude import fit_run
from neuroude.baselines import fit_reduced_rank_by_cross_validation
from neuroude.config import load_config, parse_config
from neuroude.cosmoothing import heldout_r_squared

REPOSITORY = Path(__file__).resolve().parents[1]
CONFIG = REPOSITORY / "configs" / "v1-v2-residuals.yaml"
V1_SOURCE = list(range(0, 79))  # channel_role 0: the V1 source population
V1 = list(range(0, 110))  # channel_area 0: the V1 source and V1 target populations
V2 = list(range(110, 141))  # channel_role 2: the V2 target population


def make_config(arguments):
    """Return the run configuration: the packaged V1/V2 config with V2 held out and the given settings."""
    raw = load_config(CONFIG).model_dump(mode="json")
    if arguments.data is not None:
        raw["data"]["path"] = str(arguments.data.resolve())
    raw["data"]["heldout_neurons"] = V2
    raw["model"].update({
        "latent_size": arguments.latent_size, "drift_time_constant": arguments.time_constant,
        "diffusion_scale": arguments.diffusion_scale,
    })
    raw["training"].update({
        "steps": arguments.steps, "kl_warmup_steps": min(raw["training"]["kl_warmup_steps"], arguments.steps // 3),
    })
    raw["seed"] = arguments.seed
    return parse_config(raw)


def best_validation_score(run_folder: Path) -> float:
    """Return the highest validation metric (held-out R^2) logged during training."""
    with open(run_folder / "history.csv", newline="") as file:
        values = [float(row["validation_metric"]) for row in csv.DictReader(file) if row["validation_metric"]]
    return max(values)


def neighbouring_bins(y: np.ndarray) -> np.ndarray:
    """Return (trials, time, 3 channels) with the values at bins t - 1, t and t + 1, zero outside the trial."""
    previous = np.pad(y[:, :-1], ((0, 0), (1, 0), (0, 0)))
    following = np.pad(y[:, 1:], ((0, 0), (0, 1), (0, 0)))
    return np.concatenate([previous, y, following], axis=-1)


def regression_score(run, sources, skip_bins: int) -> tuple[float, dict]:
    """Return the test R^2 of V2 from `sources(y)` by cross-validated reduced-rank regression, and its settings."""
    train = run.recording.select(run.split["train"])
    test = run.recording.select(run.split["test"])
    regression, settings = fit_reduced_rank_by_cross_validation(
        sources(train.y), train.y[:, :, V2], seed=run.config.seed
    )
    prediction = np.zeros(test.y.shape)
    prediction[:, :, V2] = regression.predict(sources(test.y))
    return heldout_r_squared(test, prediction, V2, skip_bins), settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="recording.npz (default: the path in the config)")
    parser.add_argument("--steps", type=int, default=3000, help="training steps")
    parser.add_argument("--latent-size", type=int, default=6)
    parser.add_argument("--time-constant", type=float, default=0.1, help="seconds; time scale of the drift network")
    parser.add_argument("--diffusion-scale", type=float, default=0.3, help="initial scale of the additive diffusion")
    parser.add_argument("--seed", type=int, default=0, help="sets the trial split, initialisation and noise")
    parser.add_argument("--out", type=Path, default=Path("runs/v1v2-rrr"), help="run folder")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)  # the run's log.txt keeps the progress messages

    config = make_config(arguments)
    run = fit_run(config, arguments.out, overwrite=True, quiet=True)
    scores = run.metrics["test"]["co_smoothing"]
    settings = scores["reduced_rank_regression_settings"]
    training = run.metrics["training"]
    skip = config.evaluation.skip_bins
    source_score, source_settings = regression_score(run, lambda y: y[:, :, V1_SOURCE], skip)
    context_score, context_settings = regression_score(run, lambda y: neighbouring_bins(y[:, :, V1]), skip)

    print(f"data: {config.data.path}")
    print(f"trials: train {len(run.split['train'])}, validation {len(run.split['validation'])}, "
          f"test {len(run.split['test'])}; first {config.evaluation.skip_bins} bins of each trial not scored")
    print(f"training: {training['steps_run']} steps, best at step {training['best_step']}, {training['seconds']} s; "
          f"best validation V2 R^2 {best_validation_score(arguments.out):.4f}")
    print("\n| method | predictors | test V2 R^2 | rank | ridge |")
    print("|---|---|---|---|---|")
    print(f"| latent SDE ({config.model.latent_size} latents) | V1, whole trial | {scores['model']:.4f} | | |")
    print(f"| reduced-rank regression | V1, same bin | {scores['reduced_rank_regression']:.4f} | "
          f"{settings['rank']} | {settings['ridge']} |")
    print(f"| reduced-rank regression | V1 source units, same bin | {source_score:.4f} | "
          f"{source_settings['rank']} | {source_settings['ridge']} |")
    print(f"| reduced-rank regression | V1, bins t - 1, t, t + 1 | {context_score:.4f} | "
          f"{context_settings['rank']} | {context_settings['ridge']} |")
    curve = ", ".join(f"{rank}: {score:.4f}" for rank, score in settings["cross_validated_r_squared"].items())
    print(f"\ncross-validated R^2 of reduced-rank regression from V1 by rank (training trials): {curve}")


if __name__ == "__main__":
    main()
