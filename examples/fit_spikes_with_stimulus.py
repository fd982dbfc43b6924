"""Fit spikes recorded with a stimulus, compare the fit with baselines and write the run's report.

The data are the locust auditory receptor neuron recordings that ship with nitime
(Rokem et al. 2006, J Neurophysiol 95:2541): spikes binned at 5 ms, and the sound
level of a noise-modulated tone as the stimulus, cut into 1-second trials.

The script

1. loads the recording and prints its summary,
2. builds a configuration in Python (the same keys a YAML file would hold) and prints it,
3. fits the model, writing a run folder,
4. prints the model's summary and its held-out bits per spike beside the baselines,
5. writes `report.html` in the run folder, one page with every figure of the run.

    python examples/fit_spikes_with_stimulus.py [--out FOLDER] [--steps N] [--drift mlp|fitzhugh_nagumo]

`--drift fitzhugh_nagumo` replaces the network drift (black box) by a FitzHugh-Nagumo
model with learnable constants (white box) whose fast variable drives the spikes.
`--small` shrinks every network and the evaluation, for a quick check that the script runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import neuroude as nu


def make_config(drift: str, steps: int, small: bool, seed: int) -> nu.RunConfig:
    """Return the run configuration: the packaged recording, the chosen drift and `steps` training steps."""
    model = {"drift": drift}
    if drift == "fitzhugh_nagumo":
        # FitzHugh-Nagumo has two states (v, w). The readout reads only v, the membrane-potential-like one.
        model.update(latent_size=2, observed_states="model")
    raw = {"model": model, "training": {"steps": steps}, "seed": seed}
    if small:
        raw["model"].update(drift_width=8, drift_depth=1, encoder_size=2, recognition_hidden=8, context_size=4,
                            correction_width=8)
        raw["training"].update(batch_size=4, eval_every=steps, checkpoint_every=steps)
        raw["evaluation"] = {"n_samples": 4, "glm_lags": 5}
    return nu.config.parse_config(raw)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/spikes-with-stimulus", help="run folder to write (replaced if present)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    parser.add_argument("--drift", choices=("mlp", "fitzhugh_nagumo"), default="mlp", help="drift of the SDE")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the split, initialisation and noise")
    parser.add_argument("--small", action="store_true", help="tiny networks and evaluation, for a quick check")
    arguments = parser.parse_args(argv)

    # 1. The data: a Recording contains y (trials, time, channels), ts, the stimulus u and metadata.
    recording = nu.load_grasshopper(bin_width=0.005, trial_duration=1.0)
    print(recording.summary())

    # 2. The configuration: every key not set here keeps the default listed in the config reference.
    config = make_config(arguments.drift, arguments.steps, arguments.small, arguments.seed)
    print(config.summary())

    # 3. The fit writes config.yaml, history.csv, checkpoints/, metrics.json, figures/ and log.txt.
    run = nu.fit_run(config, arguments.out, overwrite=True, quiet=True)

    # 4. The fitted model and its held-out scores beside the baselines in metrics.json.
    print(run.model.summary())
    print(run.summary())

    # 5. One offline HTML page with the data, training curves, predictions, latents and metrics.
    report = nu.write_report(run.folder.root)
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    main()
