"""Score the model of a fitted co-smoothing run on its own, without fitting the baselines again.

Loads the best checkpoint of a run folder written by `cosmoothing_hippocampus.py` and prints
the model's co-smoothing bits per spike on the validation and test trials, and the R^2 of
position and speed decoded from its posterior mean latents. It draws the same random keys as
`neuroude evaluate`, so on a finished run it prints the figures of that run's `metrics.json`.
It is for runs whose GPFA baseline is too slow to wait for: GPFA takes the model's number of
latents, and its E-step inverts a (latents * bins)^2 matrix.

    python benchmarks/cosmoothing_model_scores.py /tmp/cosmoothing-wmaze
"""

from __future__ import annotations

import argparse

import jax

from neuroude.cosmoothing import _decode, heldout_bits_per_spike, posterior_rates
from neuroude.metrics import heldout_channel_split, score_window
from neuroude.workflow import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run folder with checkpoints/best.eqx")
    arguments = parser.parse_args()

    run = load_run(arguments.run_dir)
    config, recording = run.config, run.recording
    splits = {name: recording.select(run.split[name]) for name in ("train", "validation", "test")}

    # evaluate() passes fold_in(PRNGKey(seed + 1), 1) to the co-smoothing scores, which split it per split.
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), 1)
    keys = dict(zip(splits, jax.random.split(key, 3)))
    posterior = {
        name: posterior_rates(run.model, split, keys[name], config.evaluation.n_samples)
        for name, split in splits.items()
    }

    _, heldout = heldout_channel_split(config.data.heldout_neurons, recording.n_channels)
    skip = config.evaluation.skip_bins
    for name in ("validation", "test"):
        print(f"{name} co-bps: {heldout_bits_per_spike(splits[name], posterior[name][0], heldout, skip):.4f}")

    names = list(recording.metadata["behaviour_names"])
    behaviour = {name: score_window(split.behaviour, skip) for name, split in splits.items()}
    latents = {name: score_window(posterior[name][1], skip) for name in splits}
    observed = {
        name: None if split.behaviour_mask is None else score_window(split.behaviour_mask, skip)
        for name, split in splits.items()
    }
    decoding = _decode(latents, behaviour, names, observed)
    print(f"position R^2 (x, y mean): {(decoding['x_px'] + decoding['y_px']) / 2:.3f}; "
          f"speed R^2: {decoding['speed_px_per_s']:.3f}")


if __name__ == "__main__":
    main()
