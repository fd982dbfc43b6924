"""The behaviour head: a Gaussian readout of behaviour from the latent path, fitted on standardised values.

Behaviour comes in the user's units (pixels, pixels per second, degrees), often far from unit
scale. The head starts at unit noise and a readout of order one, so on such a scale its early
residuals are huge and the fit can diverge. The head therefore fits

    (b_t - m) / s ~ Normal(C x_t + c, sigma^2)

per behaviour variable, with `m` and `s` the mean and standard deviation of the observed
training entries (`behaviour_statistics`). `log_prob` is the log-density of the standardised
values, so the weight of the behaviour term does not depend on the units. `mean` and
`noise_std` are in the original units, and so is every prediction and figure.

`m` and `s` are static fields: they are not trained and not written to checkpoints. A run
rebuilds them from its recording and split when it is loaded, which gives the same values.
"""

from __future__ import annotations

import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..errors import DataError

logger = logging.getLogger("neuroude")


class BehaviourHead(eqx.Module):
    """`(b_t - offset) / scale ~ Normal(C x_t + c, exp(log_std)^2)` per behaviour variable."""

    # log_prob is a sum over bins, so the model may evaluate it segment by segment.
    time_separable = True

    readout: eqx.nn.Linear
    log_std: Float[Array, " b"]
    offset: tuple[float, ...] = eqx.field(static=True)
    scale: tuple[float, ...] = eqx.field(static=True)

    def __init__(self, latent_size: int, n_behaviour: int, statistics=None, *, key: PRNGKeyArray):
        """`statistics` is the pair (offset, scale) of per-variable sequences; None leaves the values as they are."""
        self.readout = eqx.nn.Linear(latent_size, n_behaviour, key=key)
        self.log_std = jnp.zeros((n_behaviour,), jnp.float32)
        offset, scale = ((0.0,) * n_behaviour, (1.0,) * n_behaviour) if statistics is None else statistics
        if len(offset) != n_behaviour or len(scale) != n_behaviour:
            raise DataError(
                f"the behaviour statistics have {len(offset)} means and {len(scale)} standard deviations; "
                f"expected one of each per behaviour variable ({n_behaviour})"
            )
        self.offset = tuple(float(value) for value in offset)
        self.scale = tuple(float(value) for value in scale)

    @property
    def standardised(self) -> bool:
        """True when the head fits values other than the raw ones."""
        return any(value != 0.0 for value in self.offset) or any(value != 1.0 for value in self.scale)

    def standardised_mean(self, x: Float[Array, "T d"]) -> Float[Array, "T b"]:
        """Return the expected standardised behaviour."""
        return jax.vmap(self.readout)(x)

    def mean(self, x: Float[Array, "T d"]) -> Float[Array, "T b"]:
        """Return the expected behaviour in the recording's units."""
        standard = self.standardised_mean(x)
        return jnp.asarray(self.offset, standard.dtype) + jnp.asarray(self.scale, standard.dtype) * standard

    def noise_std(self) -> np.ndarray:
        """Return the fitted noise standard deviation of each variable in the recording's units."""
        return np.exp(np.asarray(self.log_std, np.float64)) * np.asarray(self.scale, np.float64)

    def log_prob(self, y: Float[Array, "T b"], x: Float[Array, "T d"], mask: Float[Array, "T b"]) -> Float[Array, ""]:
        """Return the log-density of the standardised behaviour, summed over the entries where `mask` is 1."""
        standard = (y - jnp.asarray(self.offset, y.dtype)) / jnp.asarray(self.scale, y.dtype)
        residual = (standard - self.standardised_mean(x)) / jnp.exp(self.log_std)
        terms = -0.5 * residual**2 - self.log_std - 0.5 * jnp.log(2.0 * jnp.pi)
        return jnp.sum(terms * mask)

    def sample_around(self, key: PRNGKeyArray, mean: Float[Array, "... b"]) -> Float[Array, "... b"]:
        """Add the Gaussian noise, in the recording's units, to expected values `mean`."""
        std = jnp.exp(self.log_std) * jnp.asarray(self.scale, mean.dtype)
        return mean + std * jax.random.normal(key, mean.shape, mean.dtype)


def behaviour_statistics(behaviour: np.ndarray, observed: np.ndarray, names=None) -> tuple[tuple, tuple]:
    """Return the mean and standard deviation of each behaviour variable over its observed entries.

    `behaviour` and `observed` are (trials, time, b) arrays of the training trials. A
    variable with no observed entry raises DataError. A constant variable (standard
    deviation 0) keeps scale 1, so the head only centres it, and a warning is logged.
    """
    means, stds = [], []
    for index in range(behaviour.shape[-1]):
        name = names[index] if names is not None and index < len(names) else f"behaviour_{index}"
        values = np.asarray(behaviour[..., index], np.float64)[np.asarray(observed[..., index], bool)]
        if values.size == 0:
            raise DataError(
                f"behaviour {name} has no observed entry in the training trials, so it cannot be standardised; "
                "expected at least one entry where Recording.behaviour_mask is True, or drop the variable"
            )
        std = float(np.std(values))
        if not std > 0.0:
            logger.warning(
                "behaviour %s is constant (%.6g) on the training trials; the behaviour head centres it but "
                "cannot scale it, and it carries nothing to fit", name, values[0],
            )
            std = 1.0
        means.append(float(np.mean(values)))
        stds.append(std)
    return tuple(means), tuple(stds)
