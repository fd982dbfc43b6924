"""Held-out R^2 of the behaviour head that is fitted jointly with the neural data (`model.behaviour`).

The head maps the latent path to the expected behaviour, `E[b(t)] = W x(t) + c`. On the
test trials it is scored on two paths:

- `posterior`: the mean over posterior paths given the trial's neural data, so the
  score measures how well the fitted latent decodes behaviour from the recording;
- `prediction`: the mean over prior paths sampled from the inferred `x0` and the
  stimulus, the same paths that give the neural predictions in metrics.json.

Each is `1 - SSE / SST` per behaviour variable over the scored bins (after
`evaluation.skip_bins`, and only bins where the behaviour is observed: `behaviour_mask`, or
without it the bins where the neural data are observed), with the mean over variables.
"""

from __future__ import annotations

import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .errors import DataError
from .metrics import r_squared, score_window

logger = logging.getLogger("neuroude")


@eqx.filter_jit
def _posterior_behaviour(model, y, stimulus, mask, t0, bin_width, key, n_samples):
    keys = jax.random.split(key, y.shape[0])

    def one_trial(yi, si, mi, ki):
        paths = model.posterior_paths(yi, si, t0, bin_width, ki, n_samples, mask=mi)
        return jax.vmap(model.behaviour.mean)(paths).mean(axis=0)

    return jax.vmap(one_trial)(y, stimulus, mask, keys)


@eqx.filter_jit
def _head_on_paths(model, paths):
    return jax.vmap(jax.vmap(model.behaviour.mean))(paths).mean(axis=1)


def behaviour_scores(model, recording, prior_paths: np.ndarray, skip_bins: int, key, n_samples: int) -> dict:
    """Return the behaviour head's test R^2 on posterior and prior paths, per variable and mean.

    `prior_paths` is (trials, samples, time, latents) from `evaluate.predict_recording`.
    """
    stimulus = recording.u if recording.u is not None else np.zeros(recording.y.shape[:2] + (0,), np.float32)
    posterior = _posterior_behaviour(
        model, jnp.asarray(recording.y), jnp.asarray(stimulus), jnp.asarray(recording.observed),
        float(recording.ts[0]), float(recording.dt), key, n_samples,
    )
    prediction = _head_on_paths(model, jnp.asarray(prior_paths))

    names = recording.metadata.get("behaviour_names") or [
        f"behaviour_{index}" for index in range(recording.behaviour.shape[2])
    ]
    observed = _observed_bins(recording)
    return {
        "posterior": _r_squared_per_variable(recording.behaviour, np.asarray(posterior), observed, skip_bins, names),
        "prediction": _r_squared_per_variable(recording.behaviour, np.asarray(prediction), observed, skip_bins, names),
    }


def _observed_bins(recording) -> np.ndarray:
    """Return (trials, time, behaviour) True where the behaviour is scored.

    With `behaviour_mask` that is where behaviour was sampled. Without it, it is where any
    neural channel is observed, which leaves out the padding of trials of different lengths.
    """
    shape = recording.behaviour.shape
    if recording.behaviour_mask is not None:
        return recording.behaviour_mask
    if recording.mask is None:
        return np.ones(shape, bool)
    return np.broadcast_to(recording.mask.any(axis=2, keepdims=True), shape)


def _r_squared_per_variable(behaviour, prediction, observed, skip_bins: int, names: list[str]) -> dict:
    behaviour, prediction, observed = (score_window(array, skip_bins) for array in (behaviour, prediction, observed))
    if not np.all(np.isfinite(prediction)):
        logger.warning("the behaviour head's prediction has NaN or infinite values (a sample path diverged)")
        return {**{name: None for name in names}, "mean": None}

    scores = {}
    for index, name in enumerate(names):
        try:
            scores[name] = float(
                r_squared(behaviour[..., index : index + 1], prediction[..., index : index + 1],
                          observed[..., index : index + 1])
            )
        except DataError:
            # A variable that is constant over the test bins has no variance to explain, so R^2 is undefined.
            logger.warning("behaviour variable %s is constant on the test trials; its R^2 is left out", name)
            scores[name] = None
    defined = [value for value in scores.values() if value is not None]
    scores["mean"] = float(np.mean(defined)) if defined else None
    return scores
