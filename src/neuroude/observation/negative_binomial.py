"""Overdispersed spike counts: a negative binomial around a linear readout of the latent state."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln
from jaxtyping import Array, Float, PRNGKeyArray

from ..errors import ConfigError
from .poisson import LINKS, linked_log_rate


class NegativeBinomialObservation(eqx.Module):
    """`y_tn ~ NB(mean mu_tn, dispersion a_n)` with `mu = link(C x_t + b)` expected counts per bin.

    The variance is `mu + a_n mu^2`, so `a_n -> 0` is the Poisson model. In
    scipy's terms `y ~ nbinom(n=r, p=r / (r + mu))` with `r = 1 / a_n`. The
    dispersion is learned per channel as `a_n = exp(log_dispersion_n) > 0`.
    """

    # log_prob is a sum over bins, so the model may evaluate it segment by segment.
    time_separable = True

    readout: eqx.nn.Linear
    log_dispersion: Float[Array, " n"]
    link: str = eqx.field(static=True)

    def __init__(
        self,
        latent_size: int,
        n_channels: int,
        link: str = "exp",
        mean_count: float = 0.1,
        dispersion: float = 0.1,
        *,
        key: PRNGKeyArray,
    ):
        if link not in LINKS:
            raise ConfigError(f"negative binomial link is {link!r}; expected one of {LINKS}")
        if not mean_count > 0:
            raise ConfigError(f"mean_count is {mean_count}; expected a value > 0")
        if not dispersion > 0:
            raise ConfigError(f"dispersion is {dispersion}; expected a value > 0")
        readout = eqx.nn.Linear(latent_size, n_channels, key=key)
        offset = jnp.log(mean_count) if link == "exp" else jnp.log(jnp.expm1(mean_count))
        self.readout = eqx.tree_at(lambda lin: lin.bias, readout, jnp.full((n_channels,), offset, jnp.float32))
        self.log_dispersion = jnp.full((n_channels,), jnp.log(dispersion), jnp.float32)
        self.link = link

    @property
    def dispersion(self) -> Float[Array, " n"]:
        return jnp.exp(self.log_dispersion)

    def log_rate(self, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return linked_log_rate(jax.vmap(self.readout)(x), self.link)

    def mean(self, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        """Expected counts per bin."""
        return jnp.exp(self.log_rate(x))

    def log_prob(self, y: Float[Array, "T n"], x: Float[Array, "T d"], mask: Float[Array, "T n"]) -> Float[Array, ""]:
        """Sum over observed entries of `log G(y + r) - log G(r) - log y! + r log(r / (r + mu)) + y log(mu / (r + mu))`."""
        log_mean = self.log_rate(x)
        log_r = -self.log_dispersion
        r = jnp.exp(log_r)
        # log(r + mu) from the logs, so a large mean cannot overflow.
        log_total = jnp.logaddexp(log_r, log_mean)
        terms = (
            gammaln(y + r) - gammaln(r) - gammaln(y + 1.0)
            + r * (log_r - log_total)
            + y * (log_mean - log_total)
        )
        return jnp.sum(jnp.where(mask > 0, terms, 0.0))

    def sample(self, key: PRNGKeyArray, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return self.sample_around(key, self.mean(x))

    def sample_around(self, key: PRNGKeyArray, mean: Float[Array, "... n"]) -> Float[Array, "... n"]:
        """Draw counts with expectation `mean` as a gamma-Poisson mixture."""
        key_rate, key_count = jax.random.split(key)
        r = 1.0 / self.dispersion
        rate = jax.random.gamma(key_rate, jnp.broadcast_to(r, mean.shape), mean.shape, mean.dtype) * mean / r
        return jax.random.poisson(key_count, rate).astype(jnp.float32)
