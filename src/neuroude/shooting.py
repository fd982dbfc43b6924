"""Multiple shooting: a trial's latent path integrated as independent segments joined by a penalty.

A trial of `T` bins is cut into `n = T / L` segments of `L` bins. Segment `i`
starts at bin `s_i = i L` from its own state `z_i` and is integrated one bin
past its end, to bin `s_{i+1}`, where it meets the start of the next segment.
The segments are integrated in parallel (`vmap`), so the gradient of the loss
with respect to a constant travels through at most `L` bins instead of `T`.
Small errors in a constant then change the loss smoothly, where one long path
can drift a whole period away and leave the loss flat or full of local minima.
The penalty

    C = w * sum_{i=1}^{n-1} |x_{i-1}(s_i) - z_i|^2

(`w` is `training.shooting_penalty`, `x_{i-1}(s_i)` the end of segment `i - 1`)
pulls the pieces together, so the fitted dynamics join them into one path.

The segment starts come from the recognition model. `z_0` is the sampled
`x0 ~ q(x0 | y)`, exactly as in the single path, so it keeps its KL term.
For `i >= 1`, `z_i` is the mean of the recognition model applied to the
bins of segment `i`, the same amortised map that infers `x0`. Free per-segment
states would be per-trial parameters, which an amortised model does not have
and which held-out trials could not use. The later starts are auxiliary
shooting variables, not random variables of the generative model, so they get
no KL term.

Multiple shooting only changes the training objective. Evaluation, prediction
and posterior sampling integrate one continuous path from `x0`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .errors import ConfigError


class MultipleShooting(eqx.Module):
    """Segment length `bins` (data bins) and continuity penalty weight `penalty` of multiple shooting."""

    bins: int = eqx.field(static=True)
    penalty: float = eqx.field(static=True)

    def __check_init__(self):
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 2:
            raise ConfigError(
                f"solver.shooting_bins is {self.bins!r}; expected an integer >= 2 bins per segment, "
                "or None to integrate each trial as one path"
            )
        if not self.penalty >= 0:
            raise ConfigError(f"training.shooting_penalty is {self.penalty!r}; expected a number >= 0")

    def n_segments(self, n_bins: int) -> int:
        """Return the number of segments of a trial of `n_bins` bins; raise ConfigError unless `bins` divides it."""
        if n_bins % self.bins:
            lower = n_bins // self.bins * self.bins
            raise ConfigError(
                f"solver.shooting_bins is {self.bins}, which does not divide the trial length of {n_bins} bins; "
                f"expected a divisor of {n_bins} (there is no padding of the last segment), or cut the trials "
                f"to {lower or self.bins} bins"
            )
        return n_bins // self.bins


def continuity_penalty(
    ends: Float[Array, "n1 d"], starts: Float[Array, "n1 d"], weight: float
) -> Float[Array, ""]:
    """Return `weight * sum |ends - starts|^2`: the gaps between each segment's end and the next one's start."""
    return weight * jnp.sum((ends - starts) ** 2)


def _windows(array: Float[Array, "T c"], first_bins: Array, length: int) -> Float[Array, "k length c"]:
    """Return the rows `first_bins[j] : first_bins[j] + length` of `array`, one window per start."""
    return array[first_bins[:, None] + jnp.arange(length)[None, :]]


def integrate_segments(
    model,
    drive: Float[Array, "T m"],
    context: Float[Array, "T c"] | None,
    starts: Float[Array, "n d"],
    t0: float,
    bin_width: float,
    key: PRNGKeyArray | None,
) -> tuple[Float[Array, "T d"], Float[Array, ""], Float[Array, "n1 d"]]:
    """Integrate `model`'s vector fields from each segment start; return the joined path, path KL and segment ends.

    `starts[i]` is the state at bin `i * L` with `L = T / n`. Segments `0 .. n-2`
    are integrated over `L + 1` bins in parallel, and their last states are
    the returned `ends` (shape (n - 1, d)). The last segment is integrated over
    its `L` bins only, so the path KL covers the trial's `T - 1` bin intervals
    exactly once. Every segment draws the Brownian increments of its own bins
    from `key`, so with `starts` on a continuous path the result is that path.
    """
    n_bins = drive.shape[0]
    n_segments = starts.shape[0]
    length = n_bins // n_segments

    def one_segment(x_start, first_bin, n_segment_bins):
        window = lambda array: jax.lax.dynamic_slice_in_dim(array, first_bin, n_segment_bins)
        fields = model._fields(window(drive), None if context is None else window(context))
        return model._integrate(
            fields, x_start, t0 + first_bin * bin_width, bin_width, n_segment_bins, key, first_bin=first_bin
        )

    last_first_bin = (n_segments - 1) * length
    last_path, last_kl = one_segment(starts[-1], last_first_bin, length)
    if n_segments == 1:
        return last_path, last_kl, jnp.zeros((0, starts.shape[1]), starts.dtype)

    first_bins = jnp.arange(n_segments - 1) * length
    head_paths, head_kls = jax.vmap(lambda x, first: one_segment(x, first, length + 1))(starts[:-1], first_bins)
    path = jnp.concatenate([head_paths[:, :length].reshape(-1, starts.shape[1]), last_path])
    return path, jnp.sum(head_kls) + last_kl, head_paths[:, length]


def segment_starts(
    model, y: Float[Array, "T r"], drive: Float[Array, "T m"], n_segments: int
) -> Float[Array, "n d"]:
    """Return the recognition model's mean state at each segment's first bin, from that segment's bins.

    Row 0 is included for the shapes and replaced by the sampled `x0` by the caller.
    """
    length = drive.shape[0] // n_segments
    first_bins = jnp.arange(n_segments) * length
    y_windows, drive_windows = _windows(y, first_bins, length), _windows(drive, first_bins, length)
    means, _ = jax.vmap(model.recognition.initial_state)(y_windows, drive_windows)
    return means


def shooting_paths(
    model,
    shooting: MultipleShooting,
    y: Float[Array, "T r"],
    drive: Float[Array, "T m"],
    context: Float[Array, "T c"] | None,
    mean0: Float[Array, " d"],
    std0: Float[Array, " d"],
    t0: float,
    bin_width: float,
    key: PRNGKeyArray,
    n_samples: int,
) -> tuple[Float[Array, "S T d"], Float[Array, " S"], Float[Array, " S"]]:
    """Sample `n_samples` multiple-shooting paths; return the joined paths, their path KLs and continuity penalties.

    `y` is what the recognition model reads. Each sample draws `x0` and the noise
    from its key as `LatentUDE._sample_paths` does, so one segment gives the single path.
    """
    n_segments = shooting.n_segments(drive.shape[0])
    later_starts = segment_starts(model, y, drive, n_segments)[1:]

    def one_path(sample_key):
        k_x0, k_noise = jax.random.split(sample_key)
        x0 = mean0 + std0 * jax.random.normal(k_x0, mean0.shape, mean0.dtype)
        starts = jnp.concatenate([x0[None], later_starts])
        path, kl_path, ends = integrate_segments(model, drive, context, starts, t0, bin_width, k_noise)
        return path, kl_path, continuity_penalty(ends, later_starts, shooting.penalty)

    return jax.vmap(one_path)(jax.random.split(key, n_samples))
