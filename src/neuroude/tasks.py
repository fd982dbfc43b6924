"""Normative models: train a UDE to perform a task, with no recorded data.

A task generator returns inputs (trials, time, inputs), targets (trials,
time, outputs) and a mask (1 where the output is scored). A `TaskModel` is an
SDE whose drift is a rate network or a neural network, read out linearly,

    dx = f(x, u) dt + sigma dW,   z_k = C x(t_k) + c,

trained by Adam on the masked mean squared error `sum mask (z - target)^2 / sum mask`
averaged over noise, so the dynamics that solve the task are found by
optimisation rather than fitted to recordings.

Tasks (each trial is independent, with an explicit seed):

- `flip_flop`: N channels each receive rare +1/-1 pulses. Output n must hold
  the sign of the last pulse on channel n (the N-bit memory of Sussillo and
  Barak 2013, Neural Comput 25:626-649). Scored from the first pulse on.
- `delayed_response`: a +1/-1 cue, a delay of random length, then a go signal.
  During the response period the output must report the cue's sign, and it
  must stay at 0 before it.
- `evidence_integration`: noisy evidence with a small mean of random sign,
  then a go signal. During the response period the output must report the
  sign of the mean (a random-dot motion task).

Accuracy is the fraction of decision bins where the output has the target's
sign. The targets are +1 and -1 with equal probability, so chance is 0.5.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .dynamics.mechanistic.rate_network import RateNetwork
from .dynamics.neural import NeuralDrift
from .errors import ConfigError
from .solve import solve_fixed_step

logger = logging.getLogger("neuroude")

DRIFTS = ("rate_network", "mlp")


@dataclass
class TaskBatch:
    """A batch of task trials: `inputs` (B, T, k), `targets` (B, T, o), `mask` (B, T, o), bins of `bin_width` seconds.

    `mask` weighs the training loss. `decision_mask` marks the bins where the
    output's sign is the model's report and must equal the target's sign.
    """

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    decision_mask: np.ndarray
    bin_width: float


def _check_trials(n_trials: int, n_bins: int, minimum_bins: int) -> None:
    if not (isinstance(n_trials, int) and n_trials >= 1):
        raise ConfigError(f"n_trials is {n_trials!r}; expected an integer >= 1")
    if not (isinstance(n_bins, int) and n_bins >= minimum_bins):
        raise ConfigError(f"n_bins is {n_bins!r}; this task needs at least {minimum_bins} bins")


def flip_flop(
    n_trials: int, n_bins: int = 60, n_bits: int = 3, pulse_probability: float = 0.05, bin_width: float = 0.01,
    seed: int = 0,
) -> TaskBatch:
    """Generate N-bit flip-flop trials: output n keeps the sign of the last pulse on input n.

    Each bin of each channel carries a pulse with `pulse_probability`, of random
    sign. The first bin of every channel carries a pulse, so every bit is set
    from the start. Every bin is a decision except the first two and the bin of
    each later pulse and the one after it, where the output is still flipping.
    """
    _check_trials(n_trials, n_bins, 4)
    if not (isinstance(n_bits, int) and n_bits >= 1):
        raise ConfigError(f"n_bits is {n_bits!r}; expected an integer >= 1")
    if not 0 < pulse_probability < 1:
        raise ConfigError(f"pulse_probability is {pulse_probability}; expected a value between 0 and 1")
    rng = np.random.default_rng(seed)
    pulses = rng.random((n_trials, n_bins, n_bits)) < pulse_probability
    pulses[:, 0] = True
    signs = np.where(rng.random((n_trials, n_bins, n_bits)) < 0.5, -1.0, 1.0)
    inputs = np.where(pulses, signs, 0.0).astype(np.float32)

    targets = np.zeros_like(inputs)
    state = np.zeros((n_trials, n_bits), np.float32)
    for k in range(n_bins):
        state = np.where(pulses[:, k], signs[:, k], state)
        targets[:, k] = state
    mask = np.ones_like(inputs)
    mask[pulses] = 0.0
    mask[:, 1:][pulses[:, :-1]] = 0.0
    mask[:, :2] = 0.0
    return TaskBatch(inputs, targets, mask, mask.copy(), bin_width)


def delayed_response(
    n_trials: int, n_bins: int = 60, cue_bins: int = 5, min_delay: int = 10, max_delay: int = 30,
    response_bins: int = 10, bin_width: float = 0.01, seed: int = 0,
) -> TaskBatch:
    """Generate delayed-response trials: inputs (cue, go), one output that reports the cue's sign after the go signal.

    The cue (+1 or -1 on input 0) starts at bin 2 and lasts `cue_bins`. After a
    delay of `min_delay` to `max_delay` bins, input 1 is 1 for the
    `response_bins` of the response period, where the target is the cue's sign.
    Before the response the target is 0. Bins after the response are unscored.
    """
    _check_trials(n_trials, n_bins, 2 + cue_bins + max_delay + response_bins)
    if not 0 <= min_delay <= max_delay:
        raise ConfigError(f"delays are {min_delay} to {max_delay} bins; expected 0 <= min_delay <= max_delay")
    rng = np.random.default_rng(seed)
    cues = np.where(rng.random(n_trials) < 0.5, -1.0, 1.0).astype(np.float32)
    delays = rng.integers(min_delay, max_delay + 1, n_trials)

    inputs = np.zeros((n_trials, n_bins, 2), np.float32)
    targets = np.zeros((n_trials, n_bins, 1), np.float32)
    mask = np.zeros((n_trials, n_bins, 1), np.float32)
    decision_mask = np.zeros_like(mask)
    for trial in range(n_trials):
        go = 2 + cue_bins + delays[trial]
        inputs[trial, 2 : 2 + cue_bins, 0] = cues[trial]
        inputs[trial, go : go + response_bins, 1] = 1.0
        targets[trial, go : go + response_bins, 0] = cues[trial]
        mask[trial, : go + response_bins] = 1.0
        decision_mask[trial, go + response_bins // 2 : go + response_bins] = 1.0
    return TaskBatch(inputs, targets, mask, decision_mask, bin_width)


def evidence_integration(
    n_trials: int, n_bins: int = 60, stimulus_bins: int = 40, response_bins: int = 10,
    coherences: tuple[float, ...] = (0.1, 0.2, 0.4), noise: float = 1.0, bin_width: float = 0.01, seed: int = 0,
) -> TaskBatch:
    """Generate evidence-integration trials: inputs (evidence, go), one output that reports the sign of the mean evidence.

    Evidence in bins 0 to `stimulus_bins` is `c + noise * N(0, 1)` with `c` of
    random sign and magnitude drawn from `coherences`. Then input 1 is 1 for
    `response_bins`, where the target is `sign(c)`. Before it the target is 0.
    """
    _check_trials(n_trials, n_bins, stimulus_bins + response_bins)
    if not coherences or min(coherences) <= 0:
        raise ConfigError(f"coherences are {coherences}; expected one or more values > 0")
    rng = np.random.default_rng(seed)
    signs = np.where(rng.random(n_trials) < 0.5, -1.0, 1.0)
    coherence = signs * rng.choice(np.asarray(coherences), n_trials)

    inputs = np.zeros((n_trials, n_bins, 2), np.float32)
    inputs[:, :stimulus_bins, 0] = coherence[:, None] + noise * rng.standard_normal((n_trials, stimulus_bins))
    inputs[:, stimulus_bins : stimulus_bins + response_bins, 1] = 1.0
    targets = np.zeros((n_trials, n_bins, 1), np.float32)
    targets[:, stimulus_bins : stimulus_bins + response_bins, 0] = signs[:, None]
    mask = np.zeros_like(targets)
    mask[:, : stimulus_bins + response_bins] = 1.0
    decision_mask = np.zeros_like(targets)
    decision_mask[:, stimulus_bins + response_bins // 2 : stimulus_bins + response_bins] = 1.0
    return TaskBatch(inputs, targets, mask, decision_mask, bin_width)


TASKS = {"flip_flop": flip_flop, "delayed_response": delayed_response, "evidence_integration": evidence_integration}


class TaskModel(eqx.Module):
    """An SDE `dx = f(x, u) dt + sigma dW` from a learned `x0`, read out as `z = C x + c` at each bin.

    `sigma` (additive, fixed) makes the solution robust to noise in the state.
    """

    drift: eqx.Module
    readout: eqx.nn.Linear
    x0: Float[Array, " d"]
    noise: float = eqx.field(static=True)
    n_substeps: int = eqx.field(static=True)

    def __init__(
        self, input_size: int, output_size: int, state_size: int = 32, drift: str = "rate_network",
        noise: float = 0.05, time_constant: float = 0.02, n_substeps: int = 1, *, key: PRNGKeyArray,
    ):
        if drift not in DRIFTS:
            raise ConfigError(f"drift is {drift!r}; expected one of {DRIFTS}")
        if noise < 0:
            raise ConfigError(f"noise is {noise}; expected a standard deviation >= 0")
        key_drift, key_readout = jax.random.split(key)
        if drift == "rate_network":
            self.drift = RateNetwork(input_size, state_size, key_drift, gain=0.9, tau=time_constant)
        else:
            self.drift = NeuralDrift(state_size, input_size, 64, 1, time_constant, key=key_drift)
        self.readout = eqx.nn.Linear(state_size, output_size, key=key_readout)
        self.x0 = jnp.zeros(state_size, jnp.float32)
        self.noise = float(noise)
        self.n_substeps = n_substeps

    def __call__(self, inputs: Float[Array, "T k"], bin_width: float, key: PRNGKeyArray | None) -> Float[Array, "T o"]:
        def fields(t, x, k, frac):
            drift = self.drift(t, x, inputs[k])
            return drift, jnp.full_like(x, self.noise), jnp.zeros((), x.dtype)

        noise_key = key if self.noise > 0 else None
        path, _ = solve_fixed_step(fields, self.x0, 0.0, bin_width, inputs.shape[0] + 1, self.n_substeps, noise_key)
        # The state after bin k's input has acted is read out at bin k.
        return jax.vmap(self.readout)(path[1:])


def task_loss(model: TaskModel, inputs, targets, mask, bin_width: float, key) -> Float[Array, ""]:
    """Return the masked mean squared error over a batch."""
    keys = jax.random.split(key, inputs.shape[0])
    outputs = jax.vmap(lambda u, k: model(u, bin_width, k))(inputs, keys)
    return jnp.sum(mask * (outputs - targets) ** 2) / jnp.maximum(jnp.sum(mask), 1.0)


def train_task(
    model: TaskModel, task, steps: int = 500, batch_size: int = 32, learning_rate: float = 3e-3, seed: int = 0,
) -> tuple[TaskModel, np.ndarray]:
    """Train `model` with Adam on fresh trials of `task` (a function of `n_trials` and `seed`); return it and the losses."""
    if not (isinstance(steps, int) and steps >= 1):
        raise ConfigError(f"steps is {steps!r}; expected an integer >= 1")
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)

    @eqx.filter_jit
    def step(params, opt_state, inputs, targets, mask, key, bin_width):
        def loss_of(trainable):
            return task_loss(eqx.combine(trainable, static), inputs, targets, mask, bin_width, key)

        loss, gradient = jax.value_and_grad(loss_of)(params)
        updates, opt_state = optimizer.update(gradient, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state, loss

    losses = np.zeros(steps, np.float32)
    base_key = jax.random.PRNGKey(seed)
    for index in range(steps):
        batch = task(batch_size, seed=seed * 1_000_003 + index + 1)
        params, opt_state, loss = step(params, opt_state, batch.inputs, batch.targets, batch.mask,
                                       jax.random.fold_in(base_key, index), batch.bin_width)
        losses[index] = float(loss)
        if index % 100 == 0:
            logger.info("task training step %d: loss %.4f", index, losses[index])
    return eqx.combine(params, static), losses


def task_accuracy(model: TaskModel, batch: TaskBatch, key: PRNGKeyArray) -> float:
    """Return the fraction of decision bins where the output has the sign of the target."""
    keys = jax.random.split(key, batch.inputs.shape[0])
    outputs = np.asarray(_run_batch(model, jnp.asarray(batch.inputs), batch.bin_width, keys))
    correct = np.sign(outputs) == np.sign(batch.targets)
    return float(np.sum(correct * batch.decision_mask) / np.sum(batch.decision_mask))


@eqx.filter_jit
def _run_batch(model, inputs, bin_width, keys):
    return jax.vmap(lambda u, k: model(u, bin_width, k))(inputs, keys)
