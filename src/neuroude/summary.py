"""Readable summaries of a model, a configuration and a run, for the terminal, notebooks and the report."""

from __future__ import annotations

import dataclasses
import sys

import equinox as eqx
import jax
import numpy as np

from .dynamics.hybrid import NeuralClosure, ResidualDrift
from .dynamics.mechanistic.network import FixedMatrix
from .dynamics.neural import NeuralDrift
from .dynamics.parameters import Constant, trainable_filter
from .stimulus import IdentityEncoder, LinearEncoder, MLPEncoder

MODULE_NAMES = (
    "encoder", "recognition", "sde.drift", "sde.diffusion", "correction", "observation", "behaviour",
    "constant_posterior",
)


def count_parameters(tree) -> tuple[int, int]:
    """Return the number of floating-point values in `tree` and how many of them the optimiser may change."""
    if tree is None:
        return 0, 0
    arrays = [leaf for leaf in jax.tree_util.tree_leaves(tree) if eqx.is_inexact_array(leaf)]
    marks = jax.tree_util.tree_leaves(trainable_filter(tree))
    leaves = jax.tree_util.tree_leaves(tree)
    trainable = sum(int(np.size(leaf)) for leaf, mark in zip(leaves, marks) if mark is True and eqx.is_inexact_array(leaf))
    return sum(int(np.size(leaf)) for leaf in arrays), trainable


def _submodule(model, dotted: str):
    value = model
    for part in dotted.split("."):
        value = getattr(value, part, None)
    return value


def drift_kind(drift) -> str:
    """Name the drift's box colour: black box (network), grey box (mechanistic plus network) or white box."""
    if isinstance(drift, NeuralDrift):
        return "black box (neural network)"
    if isinstance(drift, ResidualDrift):
        return f"grey box ({type(drift.mechanistic).__name__} plus a residual network)"
    if isinstance(drift, NeuralClosure):
        return f"grey box ({type(drift.mechanistic).__name__} with its {drift.term!r} term replaced by a network)"
    if find_constants(drift):
        return f"white box (mechanistic {type(drift).__name__})"
    return type(drift).__name__


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def describe_encoder(encoder) -> str:
    """Name the stimulus encoder a model was built with, with its stimulus and drive sizes.

    The name is the `model.encoder` choice that builds it. A recording without a stimulus gets the
    identity encoder whatever the configuration chose, so the configured name can be wrong.
    """
    if isinstance(encoder, IdentityEncoder):
        if encoder.output_size == 0:
            return "identity encoder (the recording has no stimulus)"
        return f"identity encoder (the drive is the stimulus itself, {_count(encoder.output_size, 'channel')})"
    if isinstance(encoder, LinearEncoder):
        sizes = encoder.linear.in_features, encoder.output_size
        kind = "linear"
    elif isinstance(encoder, MLPEncoder):
        sizes = encoder.mlp.in_size, encoder.output_size
        kind = "mlp"
    else:
        return f"{type(encoder).__name__} encoder"
    return f"{kind} encoder from {_count(sizes[0], 'stimulus channel')} to {_count(sizes[1], 'drive channel')}"


def find_constants(module, prefix: str = "") -> list[tuple[str, type, str, Constant]]:
    """Return every mechanistic `Constant` inside `module` as (dotted path, owning class, field name, constant).

    Fixed matrices (a network's connectivity) are constants in form only and are left out.
    """
    found = []
    if not dataclasses.is_dataclass(module):
        return found
    for field in dataclasses.fields(module):
        value = getattr(module, field.name, None)
        path = f"{prefix}{field.name}"
        if isinstance(value, FixedMatrix):
            continue
        if isinstance(value, Constant):
            found.append((path, type(module), field.name, value))
        elif isinstance(value, eqx.Module):
            found.extend(find_constants(value, path + "."))
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                if isinstance(item, eqx.Module):
                    found.extend(find_constants(item, f"{path}[{index}]."))
    return found


def published_default(owner: type, name: str) -> float | None:
    """Return the default value of constant `name` listed in the `CONSTANTS` table of `owner`'s module, or None."""
    specs = getattr(sys.modules.get(owner.__module__), "CONSTANTS", {})
    spec = specs.get(name)
    return None if spec is None else float(spec.value)


def _format_value(value) -> str:
    array = np.asarray(value)
    if array.size == 1:
        return f"{float(array):.4g}"
    return f"{array.size} values, {array.min():.4g} to {array.max():.4g}"


def describe_model(model) -> str:
    """Describe a LatentUDE on several lines: modules with parameter counts, sizes, solver and constants."""
    total, trainable = count_parameters(model)
    diffusion = model.sde.diffusion
    lines = [
        f"LatentUDE with {model.latent_size} latent states, {total} parameters ({trainable} trainable)",
        f"  drift: {drift_kind(model.sde.drift)}",
        f"  diffusion: {'none (an ODE)' if diffusion is None else type(diffusion).__name__}",
        f"  observation: {type(model.observation).__name__}, reads "
        f"{'all latent states' if model.observed_states is None else f'latent states {list(model.observed_states)}'}",
        f"  stimulus: {describe_encoder(model.encoder)}",
        f"  solver: {model.method}, {model.n_substeps} steps per bin, {model.interpolation} input interpolation, "
        f"{model.adjoint} adjoint",
        "  parameters per module:",
    ]
    for name in MODULE_NAMES:
        module = _submodule(model, name)
        if module is None:
            continue
        count, learnable = count_parameters(module)
        lines.append(f"    {name:<14s} {type(module).__name__:<24s} {count:>8d} ({learnable} trainable)")

    constants = find_constants(model.sde.drift)
    if constants:
        lines.append("  mechanistic constants:")
        for path, _, _, constant in constants:
            state = "" if constant.learnable else ", frozen"
            lines.append(f"    {path:<24s} {_format_value(constant.value)} ({constant.transform}{state})")
    return "\n".join(lines)


def describe_config(config, built_model=None) -> str:
    """Describe a RunConfig on a few lines: data, model, solver, training and evaluation choices.

    With `built_model`, the LatentUDE made from `config`, the encoder named is the one actually built.
    """
    data, model, solver, training = config.data, config.model, config.solver, config.training
    source = data.path if data.source == "npz" else "the packaged receptor-neuron recording"
    drift = model.drift + (" + residual network" if model.residual else "")
    if model.closure:
        drift += f" with a neural closure of {model.closure!r}"
    if built_model is not None:
        encoder = describe_encoder(built_model.encoder)
    elif model.encoder == "identity":
        encoder = "identity encoder"
    else:
        encoder = f"{model.encoder} encoder (identity when the recording has no stimulus)"
    return "\n".join([
        f"RunConfig (seed {config.seed})",
        f"  data: {source}, split {tuple(data.split)} (train, validation, test)",
        f"  model: {model.latent_size} latents, drift {drift}, diffusion {model.diffusion}, "
        f"{model.observation} observation, {encoder}",
        f"  solver: {solver.method}, {solver.n_substeps} steps per bin, {solver.adjoint} adjoint",
        f"  training: {training.steps} steps, batch {training.batch_size}, learning rate {training.learning_rate:g} "
        f"({training.lr_schedule}), KL schedule {training.kl_schedule} over {training.kl_warmup_steps} steps",
        f"  evaluation: {config.evaluation.n_samples} prior samples per trial, first {config.evaluation.skip_bins} "
        "bins not scored",
    ])


def describe_metrics(metrics: dict | None) -> str:
    """Describe the held-out scores of `metrics.json`: the model's and each baseline's."""
    if not metrics:
        return "no metrics.json yet"
    key = "bits_per_spike" if metrics.get("observation") == "poisson" else "r_squared"
    lines = [f"held-out test {key.replace('_', ' ')}:"]
    for name, scores in metrics.get("test", {}).items():
        value = scores.get(key)
        lines.append(f"  {name:<48s} {'n/a' if value is None else f'{value:.4f}'}")
    return "\n".join(lines)
