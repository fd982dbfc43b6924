"""The ELBO of one trial, streamed over segments of bins so that the backward pass stores no full-length array.

With `solver.checkpoint_bins = L`, a trial of `T` bins is cut into
`S = ceil(T / L)` segments. Two scans over the segments compute the ELBO:

1. From the last segment to the first, the recognition GRU runs backwards
   and keeps only its state at each segment's right edge, `h_right[s]`, the
   summary of every bin after segment `s`. The window recognition model
   (`WindowRecognition`) needs no such pass: the context of a segment's bins
   depends only on the bins up to `window_bins - 1` after it.
2. From the first segment to the last, each segment starts the GRU again from
   `h_right[s]` and rebuilds its own context, drive and Brownian increments.
   It then integrates the posterior SDE over its bins and adds its bins' log
   likelihood, behaviour log likelihood and residual penalty to running sums.
   An observation model with a state across bins (the calcium trace, the
   hemodynamic state of BOLD) carries it from segment to segment
   (`neuroude.observation.windows`).

Both segment functions are under `jax.checkpoint`, so reverse mode stores the
segment inputs (one GRU state, and per sample one latent state, the observation
model's state and a few sums) and
recomputes a segment's per-bin arrays when the backward pass reaches it. With
reversible Heun the segments also pass on its second state `z`, and a
segment's backward pass rebuilds its solver steps instead of storing them. Memory
for the backward pass then grows like `S + L`, which is `2 sqrt(T)` for
`L = sqrt(T)`, instead of `T`. The values and gradients of the fixed-step
solvers equal the plain computation's up to the order of floating-point sums.

An ODE solved by an adaptive method (`tsit5`, `dopri5`, `kvaerno5`) streams
too: each segment is one diffrax solve from the state the segment before
ended in. The step size starts again at every segment, so the values agree
with a solve over the whole trial to within the solver's tolerances.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .dynamics.hybrid import ResidualDrift
from .observation.windows import can_run_windows, start_state, window_log_prob
from .recognition import initial_state_kl
from .reversible import reversible_heun_window
from .solve import (
    ADAPTIVE_METHODS,
    FIXED_STEP_METHODS,
    REVERSIBLE_METHODS,
    brownian_increments,
    fixed_step_body,
    solve_adaptive_segment,
)


def can_stream(model) -> bool:
    """Return True when `model`'s training loss can be streamed over segments of `checkpoint_bins` bins.

    That needs a fixed-step solver (or any solver for an ODE), a recognition
    model that can start its GRU at a window's right edge or whose context
    reads a bounded window of bins (`WindowRecognition`), an observation model
    whose likelihood can be computed window by window, and a time-separable
    behaviour head. A drift
    with conduction delays takes the checkpointed path instead, because the
    streamed segments do not carry its history buffer.
    """
    behaviour = model.behaviour
    return (
        model.checkpoint_bins > 0
        and getattr(model.sde.drift, "delays", None) is None
        and (model.method in FIXED_STEP_METHODS + REVERSIBLE_METHODS or model.sde.is_ode)
        and (hasattr(model.recognition, "run_window") or hasattr(model.recognition, "context_at"))
        and can_run_windows(model.observation)
        and (behaviour is None or getattr(behaviour, "time_separable", False))
    )


def _rows(array: Array, first, count: int, n_bins: int) -> Array:
    """Return rows `first, ..., first + count - 1` of `array`. Rows past the end repeat the last one."""
    return jnp.take(array, jnp.clip(first + jnp.arange(count), 0, n_bins - 1), axis=0)


def streamed_elbo_terms(
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
    """Return the ELBO terms of `LatentUDE.trial_elbo_terms`, computed segment by segment.

    The recognition model reads the entries of `input_mask` (`mask` when None) and the
    likelihood scores those of `mask`, as in `trial_elbo_terms`.
    """
    if behaviour is not None and behaviour_mask is None:
        behaviour_mask = jnp.ones_like(behaviour)
    n_bins = y.shape[0]
    segment = model.checkpoint_bins
    n_segments = -(-n_bins // segment)
    recognition = model.recognition

    readable = model.recognition_input(y, mask if input_mask is None else input_mask)

    def features(first, drive_rows):
        return jnp.concatenate([_rows(readable, first, drive_rows.shape[0], n_bins), drive_rows], axis=-1)

    # q(x0 | y) reads only the first bins, so it needs no streaming.
    n_init = min(recognition.n_init_bins, n_bins)
    drive_init = model.encode(stimulus[:n_init])
    mean0, std0 = recognition.initial_state(readable[:n_init], drive_init)
    kl_initial = initial_state_kl(recognition, mean0, std0)

    def one_start(sample_key):
        k_x0, k_noise = jax.random.split(sample_key)
        return mean0 + std0 * jax.random.normal(k_x0, mean0.shape, mean0.dtype), k_noise

    x0, noise_keys = jax.vmap(one_start)(jax.random.split(key, n_samples))
    observation_state0 = jax.vmap(lambda x: start_state(model.observation, model.observed(x[None])[0]))(x0)
    # Reversible Heun's second state `z` starts equal to the solution.
    carry0 = (x0, x0) if model.method in REVERSIBLE_METHODS else x0

    # An ODE reads no context, and the window recognition model rebuilds a segment's context from its own bins.
    if model.sde.is_ode or hasattr(recognition, "context_at"):
        right_states = jnp.zeros((n_segments, 0), y.dtype)
    else:
        right_states = _right_edge_states(model, y, stimulus, features, segment, n_segments)

    path_segment = _path_segment(
        model, y, stimulus, mask, (behaviour, behaviour_mask), features, noise_keys, t0, bin_width, segment
    )
    zero = jnp.zeros((n_samples,), y.dtype)
    sums0 = {"kl_path": zero, "log_likelihood": zero, "residual_penalty": zero, "behaviour_log_likelihood": zero}
    (_, _, sums), peaks = jax.lax.scan(
        jax.checkpoint(path_segment), (carry0, observation_state0, sums0), (jnp.arange(n_segments), right_states)
    )

    drift = model.sde.drift
    penalty_weight = drift.residual_penalty if isinstance(drift, ResidualDrift) else 0.0
    terms = {
        "log_likelihood": jnp.mean(sums["log_likelihood"]),
        "kl_initial": kl_initial,
        "kl_path": jnp.mean(sums["kl_path"]),
        "residual_penalty": penalty_weight * jnp.mean(sums["residual_penalty"]) / n_bins,
        "state_peak": peaks.reshape(-1)[:n_bins],
    }
    if model.behaviour is not None:
        terms["behaviour_log_likelihood"] = jnp.mean(sums["behaviour_log_likelihood"])
    return terms


def _right_edge_states(model, y, stimulus, features, segment: int, n_segments: int) -> Float[Array, "S h"]:
    """Run the recognition GRU backwards over all bins and return its state at each segment's right edge."""
    n_bins = y.shape[0]
    recognition = model.recognition

    @jax.checkpoint
    def one_segment(hidden, index):
        first = index * segment
        valid = first + jnp.arange(segment) < n_bins
        drive = model.encode(_rows(stimulus, first, segment, n_bins))
        window = features(first, drive)
        hidden_first, _ = recognition.run_window(hidden, window, valid)
        return hidden_first, hidden

    hidden0 = jnp.zeros(recognition.hidden_size, y.dtype)
    _, right_states = jax.lax.scan(one_segment, hidden0, jnp.arange(n_segments), reverse=True)
    return right_states


def _path_segment(model, y, stimulus, mask, behaviour, features, noise_keys, t0: float, bin_width: float, segment: int):
    """Return the scan body that integrates and scores one segment of bins for every posterior sample."""
    n_bins = y.shape[0]
    behaviour, behaviour_mask = behaviour
    drift = model.sde.drift
    has_penalty = isinstance(drift, ResidualDrift) and drift.residual_penalty != 0.0

    def body(carry, inputs):
        x, observation_state, sums = carry
        index, right_state = inputs
        first = index * segment
        valid = (first + jnp.arange(segment) < n_bins).astype(y.dtype)

        # One row past the segment: Heun and linear interpolation read the drive and context of the next bin.
        drive = model.encode(_rows(stimulus, first, segment + 1, n_bins))
        y_rows = _rows(y, first, segment, n_bins)
        if model.sde.is_ode:
            context = None
        elif hasattr(model.recognition, "context_at"):
            context = _window_context(model, stimulus, features, first, segment, n_bins)
        else:
            _, hiddens = model.recognition.run_window(right_state, features(first, drive[:segment]), valid > 0)
            hiddens = jnp.concatenate([hiddens, right_state[None]])
            context = jax.vmap(model.recognition.to_context)(hiddens)

        fields = model._fields(drive, context)
        solve = _segment_solver(model, fields, first, t0, bin_width, n_bins, segment)

        observed_mask = _rows(mask, first, segment, n_bins) * valid[:, None]
        behaviour_rows = None if behaviour is None else _rows(behaviour, first, segment, n_bins)
        behaviour_observed = None if behaviour is None else _rows(behaviour_mask, first, segment, n_bins) * valid[:, None]

        def one_sample(x, observation_state, kl, noise_key):
            noise_key = None if model.sde.is_ode else noise_key
            x_next, kl, ends = solve(x, kl, noise_key)
            # The state at the segment's first bin is the carry, and the solver gives the states one bin later.
            path = jnp.concatenate([_solution(x)[None], ends[:-1]])

            terms = {"kl_path": kl}
            # Padding bins past the trial's end advance the observation state too, but no later segment reads it.
            observation_state, terms["log_likelihood"] = window_log_prob(
                model.observation, observation_state, y_rows, model.observed(path), observed_mask
            )
            terms["residual_penalty"] = (
                _penalty_sum(model, path, drive[:segment], valid) if has_penalty else jnp.zeros((), path.dtype)
            )
            terms["behaviour_log_likelihood"] = (
                jnp.zeros((), path.dtype) if behaviour_rows is None
                else model.behaviour.log_prob(behaviour_rows, path, behaviour_observed)
            )
            return x_next, observation_state, terms, jnp.max(jnp.abs(path), axis=1)

        x_next, observation_state, terms, peaks = jax.vmap(one_sample)(
            x, observation_state, sums["kl_path"], noise_keys
        )
        # The solver carries the path KL itself; the other terms are sums over segments.
        new_sums = {name: terms[name] if name == "kl_path" else value + terms[name] for name, value in sums.items()}
        return (x_next, observation_state, new_sums), jnp.max(peaks, axis=0)

    return body


def _window_context(model, stimulus, features, first, segment: int, n_bins: int) -> Float[Array, "L1 c"]:
    """Return the window recognition model's context at the segment's bins and the one after it.

    The windows of those bins reach `window_bins - 1` bins past the segment.
    Bins past the trial's end read as zeros, as in `WindowRecognition.context`
    over the whole trial.
    """
    recognition = model.recognition
    count = segment + recognition.window_bins
    drive = model.encode(_rows(stimulus, first, count, n_bins))
    rows = features(first, drive)
    rows = jnp.where((first + jnp.arange(count) < n_bins)[:, None], rows, 0.0)
    n_read = rows.shape[1] - drive.shape[1]
    return recognition.context(rows[:, :n_read], rows[:, n_read:])[: segment + 1]


def _segment_solver(model, fields, first, t0: float, bin_width: float, n_bins: int, segment: int):
    """Return `(x, kl, noise_key) -> (x, kl, states at the ends of the bins)` over one segment of `segment` bins.

    `x` is the latent state, or `(y, z)` for reversible Heun, whose second state
    joins the segments so that they take the steps of the unsegmented solver.
    """
    if model.method in ADAPTIVE_METHODS:

        def adaptive(x, kl, noise_key):
            ends = solve_adaptive_segment(
                fields, x, t0, bin_width, n_bins, first, segment, model.method, model.adjoint, model.rtol, model.atol
            )
            return ends[-1], kl, ends

        return adaptive

    n_substeps = model.n_substeps
    step = bin_width / n_substeps
    n_steps = (n_bins - 1) * n_substeps
    if model.method in REVERSIBLE_METHODS:

        def reversible(x, kl, noise_key):
            ends, (y, z, kl) = reversible_heun_window(
                fields, (*x, kl), t0, bin_width, segment, n_substeps, noise_key, first, n_steps
            )
            return (y, z), kl, ends

        return reversible

    # The segment's drive and context start at its first bin, so the solver's bin index is shifted.
    solver_step = fixed_step_body(
        lambda t, x, k, frac: fields(t, x, k - first, frac), t0, step, n_bins, n_substeps, model.method
    )

    def masked_step(carry, inputs):
        # Steps past the last bin (padding of the last segment) leave the carry unchanged.
        new_carry, _ = solver_step(carry, inputs)
        carry = jax.tree_util.tree_map(lambda new, old: jnp.where(inputs[0] < n_steps, new, old), new_carry, carry)
        return carry, carry[0]

    def fixed_step(x, kl, noise_key):
        bins = first + jnp.arange(segment)
        increments = brownian_increments(noise_key, bins, n_substeps, model.latent_size, step, x.dtype)
        steps = first * n_substeps + jnp.arange(segment * n_substeps)
        (x, kl), states = jax.lax.scan(masked_step, (x, kl), (steps, increments))
        return x, kl, states[n_substeps - 1 :: n_substeps]

    return fixed_step


def _solution(x):
    """Return the solution in a segment's carry: `y` of reversible Heun's `(y, z)`, else the state itself."""
    return x[0] if isinstance(x, tuple) else x


def _penalty_sum(model, path: Float[Array, "L d"], drive: Float[Array, "L m"], valid: Float[Array, " L"]):
    """Return the sum over the segment's bins of `|residual(x, u)|^2`, the residual drift penalty's integrand."""
    residuals = jax.vmap(lambda x, u: model.sde.drift.residual_term(0.0, x, u))(path, drive)
    return jnp.sum(jnp.sum(residuals**2, axis=-1) * valid)
