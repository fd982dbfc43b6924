"""The ELBO of one trial in memory that does not grow with the number of bins.

With `solver.method: reversible_heun`, the solver's backward pass rebuilds its
states instead of storing them (`neuroude.reversible`). A training step still
stores arrays as long as the trial elsewhere: the recognition context, the
encoded drive, the latent path that the likelihood reads, and their
cotangents. `neuroude.streaming` cuts these into segments, which leaves one
GRU state and one solver carry per segment, so memory grows with the number
of segments.

Here nothing is kept per bin. Inside one reversible Heun integration, each
field evaluation encodes the stimulus of its own bin and, for an SDE, reads
the recognition context of that bin from the data window after it
(`WindowRecognition.context_at`). At the end of every bin the solver adds that
bin's log likelihood, behaviour log likelihood and residual penalty to running
sums. The backward pass starts from the final state, steps back bin by bin,
and at each bin takes the VJP of that bin's scores as well as of its solver
steps. Its memory is a few states and one copy of the parameters' cotangents,
whatever the number of bins. The data themselves are the only arrays as long
as the trial.

A backward GRU cannot be used this way: the context at a bin depends on every
later bin, and the gradient of that dependence flows in the direction opposite
to the solver's backward pass. So for an SDE the recognition model must be
`model.recognition: window`. An ODE has no context and works with either.

The values and gradients equal those of `solve_reversible_heun` on the whole
trial followed by the whole-trial likelihood, up to rounding
(`tests/test_fused.py`).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .dynamics.hybrid import ResidualDrift
from .recognition import initial_state_kl
from .reversible import _bin_increments, _start_state, _Steps
from .solve import REVERSIBLE_METHODS


class Trial(NamedTuple):
    """The arrays of one trial that the fused ELBO reads, none of them differentiated."""

    readable: Float[Array, "T r"]
    stimulus: Float[Array, "T k"]
    y: Float[Array, "T n"]
    mask: Float[Array, "T n"]
    behaviour: Float[Array, "T b"] | None
    behaviour_mask: Float[Array, "T b"] | None


def can_fuse(model) -> bool:
    """Return True when `model`'s training loss can run with no per-bin storage.

    That needs reversible Heun and a drift without conduction delays. For an SDE
    the recognition model's context must be local in time (an ODE reads no
    context). The observation model's and the behaviour head's log likelihoods
    must be sums over bins.
    """
    behaviour = model.behaviour
    return (
        model.method in REVERSIBLE_METHODS
        and (model.sde.is_ode or hasattr(model.recognition, "context_at"))
        and getattr(model.observation, "time_separable", False)
        and (behaviour is None or getattr(behaviour, "time_separable", False))
        and getattr(model.sde.drift, "delays", None) is None
    )


def fusion_warning(model, shooting: bool = False) -> str | None:
    """Return why a model set up for the fused loss (reversible Heun, window recognition) is not fused, else None.

    A user who chooses both expects memory flat in the bins. When the loss falls
    back to the streamed or plain computation instead, its memory grows, so the
    fit warns with this message.
    """
    if model.method not in REVERSIBLE_METHODS or not hasattr(model.recognition, "context_at"):
        return None
    reasons = []
    if shooting:
        reasons.append("solver.shooting_bins is set (multiple shooting integrates segments apart)")
    if not getattr(model.observation, "time_separable", False):
        reasons.append(
            f"the {type(model.observation).__name__} observation model carries a state across bins "
            "(calcium and bold do)"
        )
    if model.behaviour is not None and not getattr(model.behaviour, "time_separable", False):
        reasons.append("the behaviour head's log likelihood is not a sum over bins")
    if getattr(model.sde.drift, "delays", None) is not None:
        reasons.append("the drift has conduction delays")
    if not reasons:
        return None
    return (
        "solver.method 'reversible_heun' with model.recognition 'window' cannot run fused, so the training "
        f"step's memory grows with the bins: {'; '.join(reasons)}. solver.checkpoint_bins streams the loss in "
        "segments where the model allows it"
    )


def fused_elbo_terms(
    model,
    y: Float[Array, "T n"],
    stimulus: Float[Array, "T k"],
    mask: Float[Array, "T n"],
    t0: float,
    bin_width: float,
    key: PRNGKeyArray,
    n_samples: int = 1,
    behaviour: Float[Array, "T b"] | None = None,
    behaviour_mask: Float[Array, "T b"] | None = None,
    input_mask: Float[Array, "T n"] | None = None,
) -> dict[str, Float[Array, ""]]:
    """Return the ELBO terms of `LatentUDE.trial_elbo_terms`, with no array as long as the trial in the backward pass.

    `state_peak` has one entry per trial instead of one per bin: the largest
    |x| over the trial, with the bin where it occurred in `state_peak_bin`.
    """
    if behaviour is not None and behaviour_mask is None:
        behaviour_mask = jnp.ones_like(behaviour)
    n_bins = y.shape[0]
    readable = model.recognition_input(y, mask if input_mask is None else input_mask)
    trial = Trial(readable, stimulus, y, mask, behaviour, behaviour_mask)

    # q(x0 | y) reads only the first bins.
    n_init = min(model.recognition.n_init_bins, n_bins)
    mean0, std0 = model.recognition.initial_state(readable[:n_init], model.encode(stimulus[:n_init]))
    kl_initial = initial_state_kl(model.recognition, mean0, std0)
    steps = _Steps(t0, bin_width / model.n_substeps, model.n_substeps, n_bins)

    def one_sample(sample_key):
        k_x0, k_noise = jax.random.split(sample_key)
        x0 = mean0 + std0 * jax.random.normal(k_x0, mean0.shape, mean0.dtype)
        noise_key = None if model.sde.is_ode else k_noise
        fields = _BinFields(model, trial)
        state0 = _start_state(steps, fields, x0, x0, jnp.zeros((), x0.dtype), 0)
        sums, kl, peak, peak_bin = _integrate((model, state0), trial, steps, n_bins, model.n_substeps, noise_key)
        first_scores = _bin_scores(model, trial, 0, x0)
        first_peak = jnp.max(jnp.abs(x0))
        peak_bin = jnp.where(first_peak >= peak, 0, peak_bin)
        return sums + first_scores, kl, jnp.maximum(peak, first_peak), peak_bin

    sums, kl_path, peaks, peak_bins = jax.vmap(one_sample)(jax.random.split(key, n_samples))
    worst = jnp.argmax(peaks)

    drift = model.sde.drift
    penalty_weight = drift.residual_penalty if isinstance(drift, ResidualDrift) else 0.0
    terms = {
        "log_likelihood": jnp.mean(sums[:, 0]),
        "kl_initial": kl_initial,
        "kl_path": jnp.mean(kl_path),
        "residual_penalty": penalty_weight * jnp.mean(sums[:, 2]) / n_bins,
        "state_peak": peaks[worst][None],
        "state_peak_bin": peak_bins[worst][None],
    }
    if model.behaviour is not None:
        terms["behaviour_log_likelihood"] = jnp.mean(sums[:, 1])
    return terms


def _rows(array: Array, first, count: int) -> Array:
    """Return rows `first, ..., first + count - 1` of `array`; rows past the end repeat the last one."""
    return jnp.take(array, jnp.clip(first + jnp.arange(count), 0, array.shape[0] - 1), axis=0)


class _BinFields(eqx.Module):
    """The solver's fields at bin `k`, with the drive and context of that bin computed from the trial's data."""

    model: object
    trial: Trial

    def __call__(self, t, x, k, frac):
        # Imported here because `neuroude.model` imports this module.
        from .model import VectorFields

        model, trial = self.model, self.trial
        if model.sde.is_ode:
            return VectorFields(model, model.encode(_rows(trial.stimulus, k, 2)), None)(t, x, 0, frac)

        recognition = model.recognition
        n_rows = max(recognition.window_bins, 2)
        drive = model.encode(_rows(trial.stimulus, k, n_rows))
        # The window reads zeros past the trial's end, as `WindowRecognition.context` pads it.
        inside = (k + jnp.arange(recognition.window_bins) < trial.y.shape[0])[:, None]
        window = jnp.concatenate([_rows(trial.readable, k, recognition.window_bins), drive[: recognition.window_bins]], -1)
        context = recognition.context_at(jnp.where(inside, window, 0.0))
        return VectorFields(model, drive[:2], context[None])(t, x, 0, frac)


def _bin_scores(model, trial: Trial, k, x: Float[Array, " d"]) -> Float[Array, "3"]:
    """Return bin `k`'s log likelihood, behaviour log likelihood and squared residual, for latent state `x`."""
    y, mask = _rows(trial.y, k, 1), _rows(trial.mask, k, 1)
    log_likelihood = model.observation.log_prob(y, model.observed(x[None]), mask)

    behaviour = jnp.zeros((), x.dtype)
    if model.behaviour is not None and trial.behaviour is not None:
        observed = _rows(trial.behaviour_mask, k, 1)
        behaviour = model.behaviour.log_prob(_rows(trial.behaviour, k, 1), x[None], observed)

    residual = jnp.zeros((), x.dtype)
    drift = model.sde.drift
    if isinstance(drift, ResidualDrift) and drift.residual_penalty != 0.0:
        u = model.encode(_rows(trial.stimulus, k, 1))[0]
        residual = jnp.sum(drift.residual_term(0.0, x, u) ** 2)
    return jnp.stack([log_likelihood, behaviour, residual])


def _run_forward(primals, trial: Trial, steps: _Steps, n_bins: int, n_substeps: int, key):
    """Integrate the whole trial, adding each bin's scores; return the sums, path KL, peak |x| and its bin."""
    model, state0 = primals
    fields = _BinFields(model, trial)

    def one_bin(carry, _):
        b, state, sums, peak, peak_bin = carry
        increments = _bin_increments(key, 0, b, n_substeps, steps.step, state[0])

        def one_step(state, inputs):
            j, dw = inputs
            return steps.forward(fields, state, b * n_substeps + j, dw, 0), None

        state, _ = jax.lax.scan(one_step, state, (jnp.arange(n_substeps), increments))
        sums = sums + _bin_scores(model, trial, b + 1, state[0])
        bin_peak = jnp.max(jnp.abs(state[0]))
        # `~(<=)` is a strict `>` that is also True for NaN, so the first bin of the largest value, or of a NaN, is kept.
        higher = ~(bin_peak <= peak)
        return (b + 1, state, sums, jnp.where(higher, bin_peak, peak), jnp.where(higher, b + 1, peak_bin)), None

    # The bin index travels in the carry: an array of indices to scan over would be as long as the trial.
    zero = jnp.zeros((), state0[0].dtype)
    carry0 = (jnp.zeros((), jnp.int32), state0, jnp.zeros(3, zero.dtype), zero, jnp.zeros((), jnp.int32))
    (_, final, sums, peak, peak_bin), _ = jax.lax.scan(one_bin, carry0, None, length=n_bins - 1)
    return sums, final[5], peak, peak_bin, final


def _outputs(primals, trial, steps, n_bins, n_substeps, key):
    sums, kl, peak, peak_bin, _ = _run_forward(primals, trial, steps, n_bins, n_substeps, key)
    return sums, kl, peak, peak_bin


_integrate = eqx.filter_custom_vjp(_outputs)


@_integrate.def_fwd
def _integrate_fwd(perturbed, primals, trial, steps, n_bins, n_substeps, key):
    sums, kl, peak, peak_bin, final = _run_forward(primals, trial, steps, n_bins, n_substeps, key)
    # The final solver state is the only residual. The backward pass rebuilds every earlier one from it.
    return (sums, kl, peak, peak_bin), final


@_integrate.def_bwd
def _integrate_bwd(final, cotangents, perturbed, primals, trial, steps, n_bins, n_substeps, key):
    model, _ = primals
    dynamic, static = eqx.partition(model, eqx.is_inexact_array)
    sums_cotangent, kl_cotangent = cotangents[0], cotangents[1]
    sums_cotangent = jnp.zeros(3, final[0].dtype) if sums_cotangent is None else sums_cotangent
    kl_cotangent = jnp.zeros((), final[0].dtype) if kl_cotangent is None else kl_cotangent
    # Only the path KL of the final state is an output. Its other parts reach the loss through the scores.
    state_cotangent = (*jax.tree_util.tree_map(jnp.zeros_like, final[:5]), kl_cotangent)
    model_cotangent = jax.tree_util.tree_map(jnp.zeros_like, dynamic)

    def step_back():
        def one_step(carry, inputs):
            state, state_cotangent, model_cotangent = carry
            i, dw = inputs
            previous = steps.inverse(_BinFields(model, trial), state, i, dw, 0)

            def forward(dynamic, state):
                return steps.forward(_BinFields(eqx.combine(dynamic, static), trial), state, i, dw, 0)

            _, pullback = jax.vjp(forward, dynamic, previous)
            model_part, previous_cotangent = pullback(state_cotangent)
            return (previous, previous_cotangent, _add(model_cotangent, model_part)), None

        return one_step

    def bin_back(carry, _):
        b, state, state_cotangent, model_cotangent = carry
        # The state here is the one at the end of bin b, which bin b + 1's scores read.
        _, pullback = jax.vjp(lambda dynamic, x: _bin_scores(eqx.combine(dynamic, static), trial, b + 1, x),
                              dynamic, state[0])
        model_part, x_cotangent = pullback(sums_cotangent)
        state_cotangent = (state_cotangent[0] + x_cotangent, *state_cotangent[1:])
        model_cotangent = _add(model_cotangent, model_part)

        increments = _bin_increments(key, 0, b, n_substeps, steps.step, state[0])
        indices = b * n_substeps + jnp.arange(n_substeps)
        carry = (state, state_cotangent, model_cotangent)
        carry, _ = jax.lax.scan(step_back(), carry, (indices, increments), reverse=True)
        return (b - 1, *carry), None

    carry = (jnp.asarray(n_bins - 2, jnp.int32), final, state_cotangent, model_cotangent)
    (_, _, state0_cotangent, model_cotangent), _ = jax.lax.scan(bin_back, carry, None, length=n_bins - 1)
    return model_cotangent, state0_cotangent


def _add(total, part):
    return jax.tree_util.tree_map(jnp.add, total, part)
