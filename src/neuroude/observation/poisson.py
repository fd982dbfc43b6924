"""Poisson spike counts from a linear readout of the latent state."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln
from jaxtyping import Array, Float, PRNGKeyArray

from ..errors import ConfigError

LINKS = ("exp", "softplus")


def linked_log_rate(drive: Float[Array, "T n"], link: str) -> Float[Array, "T n"]:
    """Return the log rate that the readout's `drive` gives through `link` ('exp' or 'softplus')."""
    if link == "exp":
        return drive
    return jnp.log(jax.nn.softplus(drive) + 1e-8)


class PoissonObservation(eqx.Module):
    """`y_tn ~ Poisson(lambda_tn)` with `lambda = link(C x_t + b)` expected counts per bin.

    `link="exp"` is the log-linear readout; `"softplus"` grows linearly for large
    drive, which keeps rates from exploding early in a fit.
    """

    # log_prob is a sum over bins, so the model may evaluate it segment by segment.
    time_separable = True

    readout: eqx.nn.Linear
    link: str = eqx.field(static=True)

    def __init__(self, latent_size: int, n_channels: int, link: str = "exp", mean_count: float = 0.1, *, key: PRNGKeyArray):
        if link not in LINKS:
            raise ConfigError(f"Poisson link is {link!r}; expected one of {LINKS}")
        if not mean_count > 0:
            raise ConfigError(f"mean_count is {mean_count}; expected a value > 0")
        readout = eqx.nn.Linear(latent_size, n_channels, key=key)
        # Start every channel at the data's mean count, so early gradients shape the dynamics instead of the offset.
        offset = jnp.log(mean_count) if link == "exp" else jnp.log(jnp.expm1(mean_count))
        self.readout = eqx.tree_at(lambda lin: lin.bias, readout, jnp.full((n_channels,), offset, jnp.float32))
        self.link = link

    def log_rate(self, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return linked_log_rate(jax.vmap(self.readout)(x), self.link)

    def mean(self, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        """Expected counts per bin."""
        return jnp.exp(self.log_rate(x))

    def log_prob(self, y: Float[Array, "T n"], x: Float[Array, "T d"], mask: Float[Array, "T n"]) -> Float[Array, ""]:
        log_rate = self.log_rate(x)
        terms = y * log_rate - jnp.exp(log_rate) - gammaln(y + 1.0)
        return jnp.sum(terms * mask)

    def sample(self, key: PRNGKeyArray, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return self.sample_around(key, self.mean(x))

    def sample_around(self, key: PRNGKeyArray, mean: Float[Array, "... n"]) -> Float[Array, "... n"]:
        """Draw counts with expectation `mean`."""
        return jax.random.poisson(key, mean).astype(jnp.float32)
