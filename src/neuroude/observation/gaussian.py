"""Continuous traces: a Gaussian around a linear readout of the latent state."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


class GaussianObservation(eqx.Module):
    """`y_tn ~ Normal(C x_t + b, s_n^2)` with one learned variance per channel."""

    # log_prob is a sum over bins, so the model may evaluate it segment by segment.
    time_separable = True

    readout: eqx.nn.Linear
    log_std: Float[Array, " n"]

    def __init__(self, latent_size: int, n_channels: int, *, key: PRNGKeyArray):
        self.readout = eqx.nn.Linear(latent_size, n_channels, key=key)
        self.log_std = jnp.zeros((n_channels,), jnp.float32)

    def mean(self, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return jax.vmap(self.readout)(x)

    def log_prob(self, y: Float[Array, "T n"], x: Float[Array, "T d"], mask: Float[Array, "T n"]) -> Float[Array, ""]:
        residual = (y - self.mean(x)) / jnp.exp(self.log_std)
        terms = -0.5 * residual**2 - self.log_std - 0.5 * jnp.log(2.0 * jnp.pi)
        return jnp.sum(terms * mask)

    def sample(self, key: PRNGKeyArray, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return self.sample_around(key, self.mean(x))

    def sample_around(self, key: PRNGKeyArray, mean: Float[Array, "... n"]) -> Float[Array, "... n"]:
        """Add the Gaussian noise to expected values `mean`."""
        return mean + jnp.exp(self.log_std) * jax.random.normal(key, mean.shape, mean.dtype)
