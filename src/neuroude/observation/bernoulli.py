"""Binary bins (spike or no spike): a Bernoulli with a logit link on a linear readout of the latent state."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..errors import ConfigError


class BernoulliObservation(eqx.Module):
    """`y_tn ~ Bernoulli(p_tn)` with `logit(p) = C x_t + b`.

    `log p(y | x) = y log sigmoid(eta) + (1 - y) log sigmoid(-eta)` with `eta = C x_t + b`.
    """

    # log_prob is a sum over bins, so the model may evaluate it segment by segment.
    time_separable = True

    readout: eqx.nn.Linear

    def __init__(self, latent_size: int, n_channels: int, mean_probability: float = 0.1, *, key: PRNGKeyArray):
        if not 0 < mean_probability < 1:
            raise ConfigError(f"mean_probability is {mean_probability}; expected a value strictly between 0 and 1")
        readout = eqx.nn.Linear(latent_size, n_channels, key=key)
        # Start every channel at the data's fraction of ones, as the Poisson readout starts at the mean count.
        offset = jnp.log(mean_probability) - jnp.log1p(-mean_probability)
        self.readout = eqx.tree_at(lambda lin: lin.bias, readout, jnp.full((n_channels,), offset, jnp.float32))

    def logits(self, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return jax.vmap(self.readout)(x)

    def mean(self, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        """Probability of a 1 in each bin."""
        return jax.nn.sigmoid(self.logits(x))

    def log_prob(self, y: Float[Array, "T n"], x: Float[Array, "T d"], mask: Float[Array, "T n"]) -> Float[Array, ""]:
        logits = self.logits(x)
        terms = y * jax.nn.log_sigmoid(logits) + (1.0 - y) * jax.nn.log_sigmoid(-logits)
        return jnp.sum(jnp.where(mask > 0, terms, 0.0))

    def sample(self, key: PRNGKeyArray, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return self.sample_around(key, self.mean(x))

    def sample_around(self, key: PRNGKeyArray, mean: Float[Array, "... n"]) -> Float[Array, "... n"]:
        """Draw 0/1 bins with probability `mean`."""
        return jax.random.bernoulli(key, mean).astype(jnp.float32)
