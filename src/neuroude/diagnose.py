"""Find which of the four modules first produced a non-finite value in a training step.

The fitting loop calls `locate_nonfinite` only when it stops after too many
non-finite steps, so none of this runs in the jitted step. It replays the
failing step's forward pass trial by trial, in pipeline order (stimulus
encoder, recognition model, process model, observation model), with the same
random keys as the step, and reports the first output that is not finite.
When every module's output is finite, it checks the loss terms (likelihoods,
KL terms, penalties) and their batch means before it blames the backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .model import LatentUDE
from .recognition import initial_state_kl

# Top-level fields of LatentUDE and the module each belongs to.
MODULE_OF_FIELD = {
    "encoder": "stimulus encoder",
    "recognition": "recognition model",
    "sde": "process model",
    "correction": "process model",
    "observation": "observation model",
}


@dataclass(frozen=True)
class Diagnosis:
    """Location of the first non-finite value.

    `trial` is the index within the batch, or None when the fault is in the
    parameters or the gradient. `time` is in seconds, or None when the faulty
    output has no time axis.
    """

    module: str
    detail: str
    trial: int | None = None
    time: float | None = None


def _first_bad_bin(values: np.ndarray, bound: float = np.inf) -> int | None:
    """Return the first index along axis 0 where any entry is non-finite or has |value| > bound."""
    values = np.asarray(values, dtype=np.float64).reshape(values.shape[0], -1)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(values) <= bound)
    rows = np.flatnonzero(bad.any(axis=1))
    return int(rows[0]) if rows.size else None


def _nonfinite_parameters(model: LatentUDE) -> list[str]:
    modules = []
    for name, module in MODULE_OF_FIELD.items():
        leaves = [leaf for leaf in jax.tree_util.tree_leaves(getattr(model, name)) if eqx.is_inexact_array(leaf)]
        if any(not bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves) and module not in modules:
            modules.append(module)
    return modules


@eqx.filter_jit
def _stage_outputs(model: LatentUDE, y, stimulus, mask, t0, bin_width, keys, n_samples, behaviour) -> dict:
    """Return every module's output and loss term for each trial of the batch, computed as `LatentUDE.trial_elbo_terms` does."""

    def one_trial(y, stimulus, mask, key, behaviour_values, behaviour_mask):
        drive = model.encode(stimulus)
        readable = model.recognition_input(y, mask)
        mean0, std0 = model.recognition.initial_state(readable, drive)
        context = None if model.sde.is_ode else model.recognition.context(readable, drive)
        fields = model._fields(drive, context)
        paths, kl_path = model._sample_paths(fields, mean0, std0, t0, bin_width, y.shape[0], key, n_samples)
        log_likelihood = jax.vmap(lambda path: model.observation.log_prob(y, model.observed(path), mask))(paths)
        outputs = {
            "drive": drive,
            "initial": jnp.concatenate([mean0, std0]),
            "context": drive[:, :0] if context is None else context,
            "paths": jnp.moveaxis(paths, 1, 0),
            "kl_initial": initial_state_kl(model.recognition, mean0, std0),
            "kl_path": kl_path,
            "log_likelihood": log_likelihood,
            "residual_penalty": jax.vmap(lambda path: model._residual_penalty(path, drive))(paths),
        }
        if model.behaviour is not None and behaviour_values.shape[-1] > 0:
            outputs["behaviour_log_likelihood"] = model._behaviour_log_likelihood(paths, behaviour_values, behaviour_mask)
        return outputs

    return jax.vmap(one_trial)(y, stimulus, mask, keys, *behaviour)


BEHAVIOUR_HINT = (
    "; behaviour on a large scale (raw pixels, for example) can overflow it, so check the behaviour units "
    "or set model.behaviour.standardize: true"
)

# Stages in pipeline order: output name, module, description, whether the output has a time axis.
STAGES = (
    ("drive", "stimulus encoder", "its output, the drive u, is non-finite", True),
    ("initial", "recognition model", "the mean or scale of the initial state q(x0 | y) is non-finite", False),
    ("context", "recognition model", "its context sequence is non-finite", True),
    ("paths", "process model", "the solver's latent path is non-finite or beyond solver.max_state = {bound:g}", True),
    ("kl_initial", "recognition model", "the initial-state KL is non-finite", False),
    ("kl_path", "process model", "the path KL is non-finite", False),
    ("log_likelihood", "observation model", "the log-likelihood of the recording is non-finite", False),
    ("residual_penalty", "process model", "the residual penalty of the grey-box drift is non-finite", False),
    ("behaviour_log_likelihood", "behaviour head", "the behaviour log-likelihood is non-finite" + BEHAVIOUR_HINT, False),
)

# Batch-mean loss terms and the module each comes from, in the order `LatentUDE.loss` adds them.
LOSS_TERMS = (
    ("log_likelihood", "observation model", "log-likelihood"),
    ("kl_initial", "recognition model", "initial-state KL"),
    ("kl_path", "process model", "path KL"),
    ("residual_penalty", "process model", "residual penalty"),
    ("behaviour_log_likelihood", "behaviour head", "behaviour log-likelihood"),
)


def _loss_diagnosis(model: LatentUDE, outputs: dict, dtype) -> Diagnosis | None:
    """Return where the batch-mean loss overflows although every trial's terms are finite, or None.

    The means and the weighted sum are taken in the training dtype, as in
    `LatentUDE.loss`, because a sum of large finite terms can overflow it.
    """
    means = {}
    for name, module, label in LOSS_TERMS:
        if name not in outputs:
            continue
        mean = jnp.mean(jnp.asarray(outputs[name], dtype))
        if not bool(jnp.isfinite(mean)):
            hint = BEHAVIOUR_HINT if name == "behaviour_log_likelihood" else ""
            detail = f"the batch mean of the {label} overflows {jnp.dtype(dtype).name} (it is {float(mean)}){hint}"
            return Diagnosis(module, detail)
        means[name] = mean

    loss = -means["log_likelihood"] + means["kl_initial"] + means["kl_path"] + means["residual_penalty"]
    if "behaviour_log_likelihood" in means:
        loss = loss - model.behaviour_weight * means["behaviour_log_likelihood"]
    if not bool(jnp.isfinite(loss)):
        terms = ", ".join(f"{label} {float(means[name]):.3g}" for name, _, label in LOSS_TERMS if name in means)
        return Diagnosis("sum of the loss terms", f"each term is finite but their sum overflows {jnp.dtype(dtype).name} ({terms})")
    return None


def locate_nonfinite(
    model: LatentUDE,
    y,
    stimulus,
    mask,
    t0: float,
    bin_width: float,
    key,
    n_samples: int,
    max_state: float = np.inf,
    behaviour=None,
) -> Diagnosis:
    """Replay one training step's forward pass and return where a non-finite value first appeared.

    `y`, `stimulus`, `mask` are the batch (B, T, channels) and `key` the step's
    key, split over trials as `LatentUDE.loss` splits it. `behaviour` is None or
    the pair (values, mask) of arrays (B, T, b) that the training step received.
    The stages are checked in pipeline order, and within a stage the first trial
    and bin win. The batch-mean loss terms are checked last.
    """
    broken = _nonfinite_parameters(model)
    if broken:
        return Diagnosis(broken[0], f"the parameters of the {', '.join(broken)} are non-finite")

    behaviour = _behaviour_pair(model, y, behaviour)
    keys = jax.random.split(key, y.shape[0])
    outputs = _stage_outputs(model, y, stimulus, mask, float(t0), float(bin_width), keys, n_samples, behaviour)
    for name, module, detail, timed in STAGES:
        if name not in outputs:
            continue
        bound = max_state if name == "paths" else np.inf
        for trial, values in enumerate(np.asarray(outputs[name])):
            values = values[None] if values.ndim == 0 else values
            bad = _first_bad_bin(values, bound)
            if bad is None:
                continue
            time = t0 + bad * bin_width if timed else None
            return Diagnosis(module, detail.format(bound=max_state), trial, time)

    overflow = _loss_diagnosis(model, outputs, jnp.asarray(y).dtype)
    if overflow is not None:
        return overflow

    return Diagnosis(
        "gradient",
        "every module's forward output and every loss term was finite, so the gradient (backward pass) "
        "became non-finite; lower training.clip_norm or training.learning_rate",
    )


def _behaviour_pair(model: LatentUDE, y, behaviour):
    """Return the (values, mask) pair for the replay: empty arrays when the model has no behaviour head."""
    if model.behaviour is None or behaviour is None:
        empty = jnp.zeros(y.shape[:2] + (0,), jnp.asarray(y).dtype)
        return empty, empty
    values, behaviour_mask = behaviour
    if behaviour_mask is None:
        behaviour_mask = jnp.ones_like(values)
    return jnp.asarray(values), jnp.asarray(behaviour_mask)
