"""Scans and sums over time in segments that the backward pass recomputes.

Reverse-mode differentiation of a scan over T steps stores every step's
intermediate values, so memory grows like T. Cutting the scan into segments
under `jax.checkpoint` stores one carry per segment and recomputes a segment's
steps when the backward pass reaches it. With segments of about sqrt(T) steps
the stored values grow like sqrt(T), for about one extra forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def _pad_time(tree, n_padded: int):
    """Pad every array in `tree` with zeros along its leading (time) axis up to `n_padded`."""
    return jax.tree_util.tree_map(
        lambda a: jnp.concatenate([a, jnp.zeros((n_padded - a.shape[0], *a.shape[1:]), a.dtype)]), tree
    )


def _split_segments(tree, n_segments: int, segment: int):
    return jax.tree_util.tree_map(lambda a: a.reshape(n_segments, segment, *a.shape[1:]), tree)


def checkpointed_scan(step: Callable, init, xs, segment: int):
    """Return `jax.lax.scan(step, init, xs)`, computed in checkpointed segments of `segment` steps.

    `segment <= 0`, or one at least as long as `xs`, runs the plain scan. The
    last segment is padded with steps that leave the carry unchanged, so the
    result equals the plain scan's.
    """
    n_steps = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if segment <= 0 or segment >= n_steps:
        return jax.lax.scan(step, init, xs)

    n_segments = -(-n_steps // segment)
    padded = _pad_time(xs, n_segments * segment)
    indices = jnp.arange(n_segments * segment)

    def masked_step(carry, inputs):
        i, x = inputs
        new_carry, y = step(carry, x)
        carry = jax.tree_util.tree_map(lambda new, old: jnp.where(i < n_steps, new, old), new_carry, carry)
        return carry, y

    @jax.checkpoint
    def run_segment(carry, inputs):
        return jax.lax.scan(masked_step, carry, inputs)

    segments = _split_segments((indices, padded), n_segments, segment)
    carry, ys = jax.lax.scan(run_segment, init, segments)
    ys = jax.tree_util.tree_map(lambda y: y.reshape(-1, *y.shape[2:])[:n_steps], ys)
    return carry, ys


def checkpointed_sum(term: Callable, arrays: tuple, segment: int):
    """Return `term(*arrays)` for a `term` that is a sum over time, computed segment by segment.

    `term` must be additive over the leading axis and give 0 on all-zero
    padding (for a likelihood, pass the mask among `arrays`). `segment <= 0`
    calls `term` once on the whole arrays.
    """
    n_steps = arrays[0].shape[0]
    if segment <= 0 or segment >= n_steps:
        return term(*arrays)

    n_segments = -(-n_steps // segment)
    segments = _split_segments(_pad_time(arrays, n_segments * segment), n_segments, segment)

    @jax.checkpoint
    def add_segment(total, pieces):
        return total + term(*pieces), None

    total0 = jnp.zeros((), arrays[0].dtype)
    total, _ = jax.lax.scan(add_segment, total0, segments)
    return total
