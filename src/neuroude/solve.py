"""Integrate the latent SDE (or ODE) over a recording's time grid.

Two paths share one calling convention. The caller passes `fields(t, x, k, frac)`,
which returns `(drift, diffusion, kl_rate)` at time `t` inside data bin `k`
(`frac` in [0, 1) is the position within that bin, used to interpolate inputs).
`diffusion` is the diagonal noise scale and `kl_rate` the Girsanov integrand
`0.5 * |(f_posterior - f_prior) / sigma|^2`.

- `solve_fixed_step`: one `lax.scan` over all sub-steps with Brownian increments
  drawn once, accumulating the path KL as an extra state. Euler-Maruyama gives
  the Ito solution, Heun the Stratonovich one. The two agree for additive noise.
- With a `history` (a delay line such as `DelayLine`), the fixed-step scan also
  carries a ring buffer of past states, and `fields` takes a fifth argument,
  the delayed states that `history.read` returns (delay differential equations).
- `reversible.solve_reversible_heun` (`reversible_heun`): a fixed-step
  Stratonovich solver that can be run backwards, so its backward pass rebuilds
  the states instead of storing them.
- `solve_adaptive`: diffrax adaptive solvers (Tsit5, Dopri5) and a stiff one
  (Kvaerno5) for ODEs, with the adjoint chosen by name.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .errors import ConfigError

FIXED_STEP_METHODS = ("euler", "heun")
# Fixed step too, but integrated by `reversible.solve_reversible_heun` under a custom VJP, so it has no
# forward mode and no scan body for the delay line. `streaming` runs it window by window instead.
REVERSIBLE_METHODS = ("reversible_heun",)
ADAPTIVE_METHODS = ("tsit5", "dopri5", "kvaerno5")
ADJOINTS = ("checkpoint", "backsolve")

Fields = Callable[[Array, Array, Array, Array], tuple[Array, Array, Array]]


def check_method(method: str, is_ode: bool, adjoint: str = "checkpoint") -> None:
    """Raise ConfigError unless the solver can integrate this kind of process."""
    methods = FIXED_STEP_METHODS + REVERSIBLE_METHODS + ADAPTIVE_METHODS
    if method not in methods:
        raise ConfigError(f"solver method is {method!r}; expected one of {methods}")
    if method in ADAPTIVE_METHODS and not is_ode:
        raise ConfigError(
            f"solver method {method!r} integrates ODEs only, but the model has a diffusion; "
            f"use one of {FIXED_STEP_METHODS + REVERSIBLE_METHODS} for an SDE, or set the diffusion to 'none'"
        )
    if adjoint not in ADJOINTS:
        raise ConfigError(f"adjoint is {adjoint!r}; expected one of {ADJOINTS}")


def solve_fixed_step(
    fields: Fields,
    x0: Float[Array, " d"],
    t0: float,
    bin_width: float,
    n_bins: int,
    n_substeps: int,
    key: PRNGKeyArray | None,
    method: str = "euler",
    checkpoint_bins: int = 0,
    history=None,
    first_bin: int | Array = 0,
) -> tuple[Float[Array, "n_bins d"], Float[Array, ""]]:
    """Integrate from `x0` at `t0` to the end of `n_bins` bins; return the states at bin times and the path KL.

    `key=None` integrates without noise (an ODE, or the drift-only path).
    `first_bin` is the index of the first bin within the whole trial. The
    Brownian increments of bin `k` here are those of bin `first_bin + k` of a
    path started at the trial's first bin, so a path cut into pieces (multiple
    shooting) draws the same noise as the whole path.

    `history` (None for an SDE without delays) has `initial(x0)`, `push(state, x)`
    and `read(state)`. Its state is carried in the scan, so memory grows with
    its length (the longest delay in steps), not with the number of steps, and
    `fields(t, x, k, frac, history.read(state))` sees the delayed states.

    `checkpoint_bins > 0` cuts the path into segments of that many bins and
    recomputes each segment in the backward pass (`jax.checkpoint`), so reverse
    mode stores one state per segment plus one segment's steps instead of every
    step. Segments of about `sqrt(n_bins)` bins make that memory grow like
    `sqrt(n_bins)`. The values and gradients are those of the plain scan.
    """
    if method not in FIXED_STEP_METHODS:
        raise ConfigError(f"fixed-step method is {method!r}; expected one of {FIXED_STEP_METHODS}")
    if n_substeps < 1:
        raise ConfigError(f"n_substeps is {n_substeps}; expected an integer >= 1")
    if checkpoint_bins < 0:
        raise ConfigError(f"checkpoint_bins is {checkpoint_bins}; expected 0 (off) or a number of bins >= 1")

    step = bin_width / n_substeps
    n_steps = (n_bins - 1) * n_substeps
    if n_steps == 0:
        return x0[None], jnp.zeros((), x0.dtype)

    body = fixed_step_body(fields, t0, step, n_bins, n_substeps, method)
    carry0 = (x0, jnp.zeros((), x0.dtype))
    if history is not None:
        body = _delayed_step(fields, history, _step_position(t0, step, n_bins, n_substeps), step, method)
        carry0 = (*carry0, history.initial(x0))
    if checkpoint_bins:
        return _scan_checkpointed(body, carry0, key, step, n_steps, n_substeps, checkpoint_bins, first_bin)

    increments = brownian_increments(key, first_bin + jnp.arange(n_bins - 1), n_substeps, x0.shape[0], step, x0.dtype)
    carry, path = jax.lax.scan(body, carry0, (jnp.arange(n_steps), increments))
    at_bins = path[n_substeps - 1 :: n_substeps]
    return jnp.concatenate([x0[None], at_bins]), carry[1]


def fixed_step_body(fields: Fields, t0: float, step: float, n_bins: int, n_substeps: int, method: str) -> Callable:
    """Return the scan body of one fixed solver step: `((x, kl), (i, dw)) -> ((x, kl), x)`.

    Step `i` starts at `t0 + i * step` inside bin `min(i // n_substeps, n_bins - 1)`.
    `dw` is its Brownian increment and `kl` the path KL accumulated so far.
    """
    position = _step_position(t0, step, n_bins, n_substeps)

    def euler_step(carry, inputs):
        x, kl = carry
        i, dw = inputs
        t, k, frac = position(i)
        drift, diffusion, kl_rate = fields(t, x, k, frac)
        x = x + drift * step + diffusion * dw
        return (x, kl + kl_rate * step), x

    def heun_step(carry, inputs):
        x, kl = carry
        i, dw = inputs
        t, k, frac = position(i)
        drift, diffusion, kl_rate = fields(t, x, k, frac)
        predictor = x + drift * step + diffusion * dw

        t_next, k_next, frac_next = position(i + 1)
        drift_next, diffusion_next, kl_rate_next = fields(t_next, predictor, k_next, frac_next)
        x = x + 0.5 * (drift + drift_next) * step + 0.5 * (diffusion + diffusion_next) * dw
        return (x, kl + 0.5 * (kl_rate + kl_rate_next) * step), x

    return euler_step if method == "euler" else heun_step


def _step_position(t0: float, step: float, n_bins: int, n_substeps: int) -> Callable:
    """Return `i -> (t, k, frac)`: the time of step `i`, its bin and its fraction of the way through that bin."""

    def position(i):
        k = jnp.minimum(i // n_substeps, n_bins - 1)
        frac = (i % n_substeps) / n_substeps
        return t0 + i * step, k, frac

    return position


def _delayed_step(fields: Callable, history, position: Callable, step: float, method: str) -> Callable:
    """Return the scan body of Euler or Heun for a carry `(x, path KL, history state)`."""

    def fields_at(i, x, state):
        t, k, frac = position(i)
        return fields(t, x, k, frac, history.read(state))

    def euler_step(carry, inputs):
        x, kl, state = carry
        i, dw = inputs
        drift, diffusion, kl_rate = fields_at(i, x, state)
        x = x + drift * step + diffusion * dw
        return (x, kl + kl_rate * step, history.push(state, x)), x

    def heun_step(carry, inputs):
        x, kl, state = carry
        i, dw = inputs
        drift, diffusion, kl_rate = fields_at(i, x, state)
        predictor = x + drift * step + diffusion * dw

        # The corrector reads a history whose newest entry is the predictor, as zero-lag senders need.
        drift_next, diffusion_next, kl_rate_next = fields_at(i + 1, predictor, history.push(state, predictor))
        x = x + 0.5 * (drift + drift_next) * step + 0.5 * (diffusion + diffusion_next) * dw
        return (x, kl + 0.5 * (kl_rate + kl_rate_next) * step, history.push(state, x)), x

    return euler_step if method == "euler" else heun_step


def brownian_increments(
    key: PRNGKeyArray | None, bins: Array, n_substeps: int, size: int, step: float, dtype
) -> Float[Array, "steps size"]:
    """Return the Brownian increments of the solver steps inside `bins`, shape (len(bins) * n_substeps, size).

    Bin `k` draws from `fold_in(key, k)`, so a segment of bins can draw its own
    increments and get the values a whole-path draw would give. `key=None`
    gives zeros (no noise).
    """
    if key is None:
        return jnp.zeros((bins.shape[0] * n_substeps, size), dtype)

    def one_bin(k):
        return jax.random.normal(jax.random.fold_in(key, k), (n_substeps, size), dtype)

    return jax.vmap(one_bin)(bins).reshape(-1, size) * jnp.sqrt(step)


def _scan_checkpointed(
    body, carry0, key, step: float, n_steps: int, n_substeps: int, checkpoint_bins: int, first_bin: int | Array = 0
):
    """Run `body` over all steps in rematerialised segments of `checkpoint_bins` bins; return bin states and KL."""
    x0 = carry0[0]
    n_segments = -(-n_steps // (checkpoint_bins * n_substeps))

    def masked_step(carry, inputs):
        # Steps past the end (padding of the last segment) leave the carry unchanged.
        i, _ = inputs
        new_carry, _ = body(carry, inputs)
        carry = jax.tree_util.tree_map(lambda new, old: jnp.where(i < n_steps, new, old), new_carry, carry)
        return carry, carry[0]

    @jax.checkpoint
    def run_segment(carry, segment):
        # The increments are drawn inside the segment, so the backward pass stores none of them.
        bins = segment * checkpoint_bins + jnp.arange(checkpoint_bins)
        increments = brownian_increments(key, first_bin + bins, n_substeps, x0.shape[0], step, x0.dtype)
        steps = bins[0] * n_substeps + jnp.arange(checkpoint_bins * n_substeps)
        carry, states = jax.lax.scan(masked_step, carry, (steps, increments))
        return carry, states[n_substeps - 1 :: n_substeps]

    carry, at_bins = jax.lax.scan(run_segment, carry0, jnp.arange(n_segments))
    at_bins = at_bins.reshape(-1, x0.shape[0])[: n_steps // n_substeps]
    return jnp.concatenate([x0[None], at_bins]), carry[1]


def _diffrax_solver(method: str):
    return {"tsit5": diffrax.Tsit5(), "dopri5": diffrax.Dopri5(), "kvaerno5": diffrax.Kvaerno5()}[method]


def solve_adaptive(
    fields: Fields,
    x0: Float[Array, " d"],
    t0: float,
    bin_width: float,
    n_bins: int,
    method: str = "tsit5",
    adjoint: str = "checkpoint",
    rtol: float = 1e-4,
    atol: float = 1e-6,
    max_steps: int = 16384,
) -> tuple[Float[Array, "n_bins d"], Float[Array, ""]]:
    """Integrate the ODE `dx/dt = drift` with a diffrax adaptive solver; the path KL is 0.

    `fields` must be a PyTree (an `equinox.Module`), not a closure over arrays:
    it is passed to diffrax as `args`, which the backsolve adjoint differentiates.
    """
    check_method(method, is_ode=True, adjoint=adjoint)
    if n_bins == 1:
        return x0[None], jnp.zeros((), x0.dtype)

    ts = t0 + bin_width * jnp.arange(n_bins, dtype=x0.dtype)
    settings = (method, adjoint, rtol, atol, max_steps)
    ys = _adaptive_solve(fields, x0, t0, bin_width, n_bins, 0, ts, settings)
    return ys, jnp.zeros((), x0.dtype)


def solve_adaptive_segment(
    fields: Fields,
    x0: Float[Array, " d"],
    t0: float,
    bin_width: float,
    n_bins: int,
    first_bin: Int[Array, ""],
    segment: int,
    method: str = "tsit5",
    adjoint: str = "checkpoint",
    rtol: float = 1e-4,
    atol: float = 1e-6,
    max_steps: int = 16384,
) -> Float[Array, "segment d"]:
    """Integrate the ODE over bins `first_bin` to `first_bin + segment` of a trial of `n_bins` bins.

    `x0` is the state at bin `first_bin`, and the result contains the states
    one bin later for each of the segment's bins. `fields` reads drive rows counted
    from `first_bin` (`segment + 1` of them). Bins past the trial's last bin
    repeat its state. The solver restarts its step size at each segment, so the
    states agree with `solve_adaptive` on the whole trial to within the tolerances,
    not exactly.
    """
    check_method(method, is_ode=True, adjoint=adjoint)
    last = n_bins - 1
    ts = t0 + bin_width * jnp.minimum(first_bin + 1 + jnp.arange(segment), last).astype(x0.dtype)
    t_start = t0 + bin_width * jnp.minimum(first_bin, last).astype(x0.dtype)
    settings = (method, adjoint, rtol, atol, max_steps)
    return _adaptive_solve(fields, x0, t_start, bin_width, n_bins, first_bin, ts, settings, t_origin=t0)


def _adaptive_solve(fields, x0, t_start, bin_width, n_bins, first_bin, ts, settings, t_origin=None):
    """Solve from `t_start` to `ts[-1]` and return the states at `ts`.

    Bins are counted from `t_origin` (default `t_start`), and `fields` is read at
    bin index minus `first_bin`.
    """
    method, adjoint, rtol, atol, max_steps = settings
    t_origin = t_start if t_origin is None else t_origin

    def vector_field(t, x, args):
        fields, first_bin = args
        position = (t - t_origin) / bin_width
        k = jnp.clip(jnp.floor(position), 0, n_bins - 1).astype(jnp.int32)
        frac = jnp.clip(position - k, 0.0, 1.0)
        drift, _, _ = fields(t, x, k - first_bin, frac)
        return drift

    adjoint_object = diffrax.RecursiveCheckpointAdjoint() if adjoint == "checkpoint" else diffrax.BacksolveAdjoint()
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        _diffrax_solver(method),
        t0=t_start,
        t1=ts[-1],
        dt0=bin_width,
        y0=x0,
        args=(fields, first_bin),
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        adjoint=adjoint_object,
        max_steps=max_steps,
    )
    return solution.ys
