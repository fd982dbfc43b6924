"""Stimulus encoders: the recorded stimulus (time, k) becomes the drive u (time, m).

The encoded drive is known at the data bins. Between bins the solver reads it
through `input_at`, which either keeps the value of the current bin
(zero-order hold) or interpolates linearly to the next bin.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .errors import ConfigError

INTERPOLATIONS = ("hold", "linear")


class IdentityEncoder(eqx.Module):
    """Pass the stimulus through unchanged (m = k)."""

    output_size: int = eqx.field(static=True)

    def __init__(self, input_size: int):
        self.output_size = input_size

    def __call__(self, stimulus: Float[Array, "T k"]) -> Float[Array, "T k"]:
        return stimulus


class LinearEncoder(eqx.Module):
    """Affine map of the stimulus at each time bin: `u = W s + b`."""

    linear: eqx.nn.Linear
    output_size: int = eqx.field(static=True)

    def __init__(self, input_size: int, output_size: int, *, key: PRNGKeyArray):
        if input_size < 1 or output_size < 1:
            raise ConfigError(f"a linear encoder needs input_size and output_size >= 1; got {input_size}, {output_size}")
        self.linear = eqx.nn.Linear(input_size, output_size, key=key)
        self.output_size = output_size

    def __call__(self, stimulus: Float[Array, "T k"]) -> Float[Array, "T m"]:
        return jax.vmap(self.linear)(stimulus)


class MLPEncoder(eqx.Module):
    """A network applied to the stimulus at each time bin."""

    mlp: eqx.nn.MLP
    output_size: int = eqx.field(static=True)

    def __init__(self, input_size: int, output_size: int, width: int = 32, depth: int = 1, *, key: PRNGKeyArray):
        if input_size < 1 or output_size < 1:
            raise ConfigError(f"an MLP encoder needs input_size and output_size >= 1; got {input_size}, {output_size}")
        self.mlp = eqx.nn.MLP(input_size, output_size, width, depth, activation=jax.nn.softplus, key=key)
        self.output_size = output_size

    def __call__(self, stimulus: Float[Array, "T k"]) -> Float[Array, "T m"]:
        return jax.vmap(self.mlp)(stimulus)


def input_at(drive: Float[Array, "T m"], k: Array, frac: Array, interpolation: str) -> Float[Array, " m"]:
    """Return the drive inside bin `k` at fraction `frac` of the way to bin `k + 1`."""
    if interpolation == "hold":
        return drive[k]
    next_k = jnp.minimum(k + 1, drive.shape[0] - 1)
    return (1.0 - frac) * drive[k] + frac * drive[next_k]


def make_encoder(kind: str, input_size: int, output_size: int, width: int = 32, *, key: PRNGKeyArray):
    """Build the encoder named `kind` ("identity", "linear" or "mlp")."""
    if kind == "identity":
        return IdentityEncoder(input_size)
    if kind == "linear":
        return LinearEncoder(input_size, output_size, key=key)
    if kind == "mlp":
        return MLPEncoder(input_size, output_size, width, key=key)
    raise ConfigError(f"stimulus encoder is {kind!r}; expected 'identity', 'linear' or 'mlp'")
