"""Reversible Heun: a fixed-step SDE solver whose backward pass stores no solver steps.

The algebraically reversible Heun method (Kidger, Foster, Li and Lyons, 2021,
"Efficient and accurate gradients for neural SDEs") carries two states, `y`
(the solution) and `z` (the point where the fields are evaluated), plus the
fields at `z`. One step of size `h` with Brownian increment `dW` is

    z' = 2 y - z + f(z) h + g(z) dW
    y' = y + (f(z) + f(z')) h / 2 + (g(z) + g(z')) dW / 2

and it can be run backwards exactly in exact arithmetic:

    z = 2 y' - z' - f(z') h - g(z') dW
    y = y' - (f(z) + f(z')) h / 2 - (g(z) + g(z')) dW / 2

Like Heun, it converges to the Stratonovich solution. For additive noise, where
Ito and Stratonovich agree, it matches `euler` and `heun` as the step shrinks.

`solve_reversible_heun` wraps the whole integration in a custom VJP. The forward
pass keeps only the final state. The backward pass rebuilds each earlier state
from the next one with the inverse step, redraws that step's Brownian increment
from the per-bin key, and takes one VJP of the forward step there. So beyond
the per-bin outputs and the fields' own arrays, reverse mode stores a few
states, independent of the number of steps.

The gradients are those of the discretised forward pass up to rounding: the
rebuilt states differ from the forward ones by floating-point error only.

`reversible_heun_window` takes the same steps over a window of a trial's bins,
from and to a carry `(y, z, path KL)`, so the streamed loss
(`neuroude.streaming`) runs reversible Heun segment by segment.

NOTE: the method cannot damp a decaying solution. For dx/dt = -lam x a step is
linear in (y, z) with determinant -1, so a parasitic mode grows by
a + sqrt(1 + a^2) per step (a = lam h), about exp(lam t) over a time t for small a. With
10 ms steps, the error of dx/dt = -x reached 0.1 after 1890 steps, of
dx/dt = -10 x after 98 and of dx/dt = -50 x after 8. Use it only where the
fastest decay rate times the trial duration is small.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .errors import ConfigError
from .solve import REVERSIBLE_METHODS, Fields, brownian_increments


class _Steps(eqx.Module):
    """Forward and inverse reversible Heun steps on the state `(y, z, drift, diffusion, kl_rate, kl)`.

    `drift`, `diffusion` and `kl_rate` are the fields at `z`, cached so each
    forward step evaluates the fields once. `kl` is the path KL so far.
    Step `i` counts from the start of the integration, and `start` is the index
    of step 0 within the trial. A step's time is that of its trial-wide index,
    while `fields` reads bin `i // n_substeps`. With `limit`, steps whose
    trial-wide index is `limit` or more leave the state unchanged, as padding.
    """

    # Not static: a caller may pass the trial's start time as a JAX array (held-out ELBO in `neuroude.compare`).
    t0: float | Array
    step: float | Array
    n_substeps: int = eqx.field(static=True)
    n_bins: int = eqx.field(static=True)
    limit: int | None = eqx.field(static=True, default=None)

    def position(self, i, start):
        k = jnp.minimum(i // self.n_substeps, self.n_bins - 1)
        frac = (i % self.n_substeps) / self.n_substeps
        return self.t0 + (start + i) * self.step, k, frac

    def forward(self, fields, state, i, dw, start):
        y, z, drift, diffusion, rate, kl = state
        h = self.step
        t, k, frac = self.position(i + 1, start)
        z_next = 2 * y - z + drift * h + diffusion * dw
        drift_next, diffusion_next, rate_next = fields(t, z_next, k, frac)
        y_next = y + 0.5 * (drift + drift_next) * h + 0.5 * (diffusion + diffusion_next) * dw
        kl_next = kl + 0.5 * (rate + rate_next) * h
        return self._unless_padding((y_next, z_next, drift_next, diffusion_next, rate_next, kl_next), state, i, start)

    def inverse(self, fields, state_next, i, dw, start):
        y_next, z_next, drift_next, diffusion_next, rate_next, kl_next = state_next
        h = self.step
        t, k, frac = self.position(i, start)
        z = 2 * y_next - z_next - drift_next * h - diffusion_next * dw
        drift, diffusion, rate = fields(t, z, k, frac)
        y = y_next - 0.5 * (drift + drift_next) * h - 0.5 * (diffusion + diffusion_next) * dw
        kl = kl_next - 0.5 * (rate + rate_next) * h
        return self._unless_padding((y, z, drift, diffusion, rate, kl), state_next, i, start)

    def _unless_padding(self, new, old, i, start):
        if self.limit is None:
            return new
        return jax.tree_util.tree_map(lambda a, b: jnp.where(start + i < self.limit, a, b), new, old)


def solve_reversible_heun(
    fields: Fields,
    x0: Float[Array, " d"],
    t0: float,
    bin_width: float,
    n_bins: int,
    n_substeps: int,
    key: PRNGKeyArray | None,
    first_bin: int | Array = 0,
    reconstruct: bool = True,
) -> tuple[Float[Array, "n_bins d"], Float[Array, ""]]:
    """Integrate from `x0` at `t0` over `n_bins` bins by reversible Heun; return the states at bin times and the path KL.

    The arguments are those of `solve.solve_fixed_step`, and the Brownian
    increments are the same, so with one key `heun` and `reversible_heun`
    integrate the same noise. `fields` must be a PyTree (an `equinox.Module`)
    whose arrays are its leaves, not a closure over arrays that are
    differentiated, because the custom VJP returns gradients only for leaves
    (JAX raises UnexpectedTracerError for such a closure).
    The custom VJP has no forward-mode rule, so it supports reverse mode only.
    `reconstruct=False` skips it and differentiates straight through the scan,
    which stores every step but also supports forward mode.
    """
    if n_substeps < 1:
        raise ConfigError(f"n_substeps is {n_substeps}; expected an integer >= 1")
    if n_bins == 1:
        return x0[None], jnp.zeros((), x0.dtype)

    steps = _Steps(t0, bin_width / n_substeps, n_substeps, n_bins)
    state0 = _start_state(steps, fields, x0, x0, jnp.zeros((), x0.dtype), 0)

    integrate = _integrate if reconstruct else _run_forward
    at_bins, final = integrate((fields, state0), steps, n_bins, n_substeps, key, first_bin, 0)
    path_kl = final[5]
    return jnp.concatenate([x0[None], at_bins]), path_kl


def reversible_heun_window(
    fields: Fields,
    carry: tuple[Float[Array, " d"], Float[Array, " d"], Float[Array, ""]],
    t0: float,
    bin_width: float,
    n_bins: int,
    n_substeps: int,
    key: PRNGKeyArray | None,
    first_bin: int | Array,
    n_steps: int,
) -> tuple[Float[Array, "n_bins d"], tuple[Float[Array, " d"], Float[Array, " d"], Float[Array, ""]]]:
    """Integrate `n_bins` bins of a trial from bin `first_bin` on, by reversible Heun; return the states at their ends.

    `carry` is `(y, z, path KL)` at the window's first bin, and the second
    return value is the same triple at its end, ready for the next window. A
    trial integrated window by window this way takes the steps of
    `solve_reversible_heun` on the whole trial, with the same Brownian
    increments. `fields` reads bins counted from the window's first bin (`k = 0`
    there, up to `n_bins`), while its times are those of the trial (`t0` is the
    trial's start). Steps from the trial's `n_steps`-th on leave the state
    unchanged, so the last window may run past the trial's end.

    The fields at `z` are evaluated again at the window's start rather than
    carried, so a carry has `2 d + 1` numbers. The custom VJP of
    `solve_reversible_heun` covers the window, so reverse mode stores no step of
    it; `fields` must be a PyTree, as there.
    """
    y, z, kl = carry
    first_step = first_bin * n_substeps
    steps = _Steps(t0, bin_width / n_substeps, n_substeps, n_bins + 1, limit=n_steps)
    state0 = _start_state(steps, fields, y, z, kl, first_step)
    at_bins, final = _integrate((fields, state0), steps, n_bins + 1, n_substeps, key, first_bin, first_step)
    return at_bins, (final[0], final[1], final[5])


def _start_state(steps: _Steps, fields, y, z, kl, start):
    """Return the solver state `(y, z, fields at z, kl)` at step 0."""
    t, k, frac = steps.position(0, start)
    drift, diffusion, rate = fields(t, z, k, frac)
    return y, z, drift, diffusion, rate, kl


def _bin_increments(key, first_bin, b, n_substeps: int, step: float, like: Array) -> Array:
    """Return the `n_substeps` Brownian increments of bin `first_bin + b`, as `solve_fixed_step` draws them."""
    bins = jnp.reshape(first_bin + b, (1,))
    return brownian_increments(key, bins, n_substeps, like.shape[0], step, like.dtype)


def _run_forward(primals, steps: _Steps, n_bins: int, n_substeps: int, key, first_bin, first_step):
    """Run all steps forward; return `(states at bin ends, final state)`."""
    fields, state0 = primals

    def one_bin(state, b):
        increments = _bin_increments(key, first_bin, b, n_substeps, steps.step, state[0])

        def one_step(state, inputs):
            j, dw = inputs
            return steps.forward(fields, state, b * n_substeps + j, dw, first_step), None

        state, _ = jax.lax.scan(one_step, state, (jnp.arange(n_substeps), increments))
        return state, state[0]

    final, at_bins = jax.lax.scan(one_bin, state0, jnp.arange(n_bins - 1))
    return at_bins, final


_integrate = eqx.filter_custom_vjp(_run_forward)


@_integrate.def_fwd
def _integrate_fwd(perturbed, primals, steps, n_bins, n_substeps, key, first_bin, first_step):
    at_bins, final = _run_forward(primals, steps, n_bins, n_substeps, key, first_bin, first_step)
    # The final state is the only residual: the backward pass rebuilds every earlier one from it.
    return (at_bins, final), final


@_integrate.def_bwd
def _integrate_bwd(final, cotangents, perturbed, primals, steps, n_bins, n_substeps, key, first_bin, first_step):
    fields, _ = primals
    dynamic, static = eqx.partition(fields, eqx.is_inexact_array)
    at_bins_cotangent, final_cotangent = cotangents
    at_bins_cotangent = _zeros_if_none(at_bins_cotangent, (n_bins - 1, final[0].shape[0]), final[0].dtype)
    if final_cotangent is None:
        final_cotangent = jax.tree_util.tree_map(lambda _: None, final)
    state_cotangent = jax.tree_util.tree_map(
        lambda value, cotangent: jnp.zeros_like(value) if cotangent is None else cotangent,
        final, final_cotangent, is_leaf=lambda leaf: leaf is None,
    )
    fields_cotangent = jax.tree_util.tree_map(jnp.zeros_like, dynamic)

    def step_back(carry, inputs):
        state, state_cotangent, fields_cotangent = carry
        i, dw = inputs
        previous = steps.inverse(fields, state, i, dw, first_step)

        def forward(dynamic, state):
            return steps.forward(eqx.combine(dynamic, static), state, i, dw, first_step)

        _, pullback = jax.vjp(forward, dynamic, previous)
        dynamic_part, previous_cotangent = pullback(state_cotangent)
        fields_cotangent = jax.tree_util.tree_map(jnp.add, fields_cotangent, dynamic_part)
        return (previous, previous_cotangent, fields_cotangent), None

    def bin_back(carry, inputs):
        state, state_cotangent, fields_cotangent = carry
        b, y_cotangent = inputs
        # The output at the end of bin b is the solution `y` there, so its cotangent joins that of `y`.
        state_cotangent = (state_cotangent[0] + y_cotangent, *state_cotangent[1:])
        increments = _bin_increments(key, first_bin, b, n_substeps, steps.step, state[0])
        global_steps = b * n_substeps + jnp.arange(n_substeps)
        carry = (state, state_cotangent, fields_cotangent)
        carry, _ = jax.lax.scan(step_back, carry, (global_steps, increments), reverse=True)
        return carry, None

    carry = (final, state_cotangent, fields_cotangent)
    carry, _ = jax.lax.scan(bin_back, carry, (jnp.arange(n_bins - 1), at_bins_cotangent), reverse=True)
    _, state0_cotangent, fields_cotangent = carry
    return fields_cotangent, state0_cotangent


def _zeros_if_none(cotangent, shape, dtype):
    return jnp.zeros(shape, dtype) if cotangent is None else cotangent


def parasitic_growth(jacobian: Array, step: float, n_steps: int) -> tuple[float, float]:
    """Return the fastest decay rate of a drift with this Jacobian (1/s) and the growth of the parasitic mode over `n_steps`.

    For `dx/dt = -lam x` the parasitic mode grows by `a + sqrt(1 + a^2) = exp(asinh(a))`
    per step, `a = lam h`. `lam` is taken as minus the most negative real part of
    the Jacobian's eigenvalues.

    NOTE: an eigenvalue with an imaginary part (a damped oscillation) is treated
    as if it were real; its parasitic mode was not analysed.
    """
    eigenvalues = np.linalg.eigvals(np.asarray(jacobian, np.float64))
    rate = max(0.0, -float(np.min(eigenvalues.real))) if eigenvalues.size else 0.0
    return rate, math.exp(min(n_steps * math.asinh(rate * step), 700.0))


def stability_warning(model, n_bins: int, bin_width: float, limit: float = 10.0) -> str | None:
    """Return a warning when reversible Heun's parasitic mode can grow more than `limit` times over one trial, else None.

    The drift is linearised at the mean of the x0 prior with zero drive, as the
    model is before fitting. Fitting changes the drift and the states it visits,
    so this is a check of the starting point only.
    """
    if model.method not in REVERSIBLE_METHODS or n_bins < 2:
        return None
    location = getattr(model.recognition, "state_location", None)
    x = jnp.zeros(model.latent_size) if location is None else jnp.asarray(location, jnp.float32)
    drive = jnp.zeros(model.encoder.output_size)
    jacobian = jax.jacfwd(lambda x: model.sde.drift(0.0, x, drive))(x)
    step = bin_width / model.n_substeps
    rate, growth = parasitic_growth(jacobian, step, (n_bins - 1) * model.n_substeps)
    if growth <= limit:
        return None
    return (
        f"solver.method 'reversible_heun': the drift decays at up to {rate:.3g}/s at the initial state, and the "
        f"method cannot damp decay, so its parasitic mode can grow {growth:.3g} times over a trial of {n_bins} bins "
        f"(steps of {step:.3g} s); the path may blow up. Use 'heun' with solver.checkpoint_bins, or slower dynamics "
        "(for example a larger model.drift_time_constant)"
    )
