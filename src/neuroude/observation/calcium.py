"""Calcium imaging: fluorescence as an exponentially decaying trace of latent-driven spiking rates."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..errors import ConfigError


class CalciumObservation(eqx.Module):
    """Fluorescence `F` of each channel from an AR(1) calcium trace driven by a spiking rate.

        rate_t = softplus(C x_t + b)                  spikes per second
        c_t    = gamma c_{t-1} + rate_t dt            calcium, in spikes
        F_t    = alpha c_t + baseline + eps_t         eps_t ~ N(0, s^2)
        gamma  = exp(-dt / tau)

    `dt` is the bin width in seconds. Each channel learns its decay time
    constant `tau > 0` (so `0 < gamma < 1`), gain `alpha > 0`, baseline and noise
    std `s`, all through unconstrained fields.

    The calcium before the first bin, `c_{-1}`, is set to the steady state of
    the first bin's rate, `rate_0 dt / (1 - gamma)`. A trial cut from a longer
    recording then starts at a level consistent with its activity instead of
    rising from zero.
    """

    readout: eqx.nn.Linear
    log_decay_time: Float[Array, " n"]
    log_gain: Float[Array, " n"]
    baseline: Float[Array, " n"]
    log_std: Float[Array, " n"]
    bin_width: float = eqx.field(static=True)

    def __init__(
        self,
        latent_size: int,
        n_channels: int,
        bin_width: float,
        decay_time: float = 0.5,
        *,
        key: PRNGKeyArray,
    ):
        if not bin_width > 0:
            raise ConfigError(f"calcium bin_width is {bin_width} s; expected a value > 0")
        if not decay_time > 0:
            raise ConfigError(f"calcium decay_time is {decay_time} s; expected a value > 0")
        self.readout = eqx.nn.Linear(latent_size, n_channels, key=key)
        self.log_decay_time = jnp.full((n_channels,), jnp.log(decay_time), jnp.float32)
        self.log_gain = jnp.zeros((n_channels,), jnp.float32)
        self.baseline = jnp.zeros((n_channels,), jnp.float32)
        self.log_std = jnp.zeros((n_channels,), jnp.float32)
        self.bin_width = float(bin_width)

    @property
    def decay(self) -> Float[Array, " n"]:
        """Per-bin decay factor gamma = exp(-dt / tau)."""
        return jnp.exp(-self.bin_width / jnp.exp(self.log_decay_time))

    def rate(self, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        """Spiking rate in spikes per second."""
        return jax.nn.softplus(jax.vmap(self.readout)(x))

    def calcium(self, rate: Float[Array, "T n"]) -> Float[Array, "T n"]:
        """Run `c_t = gamma c_{t-1} + rate_t dt` from the steady state of the first bin's rate."""
        _, trace = self.run_calcium(self.steady_calcium(rate[0]), rate)
        return trace

    def steady_calcium(self, rate: Float[Array, " n"]) -> Float[Array, " n"]:
        """Return the steady-state calcium `rate dt / (1 - gamma)` of a constant `rate`."""
        return rate * self.bin_width / (1.0 - self.decay)

    def run_calcium(
        self, previous: Float[Array, " n"], rate: Float[Array, "T n"]
    ) -> tuple[Float[Array, " n"], Float[Array, "T n"]]:
        """Run `c_t = gamma c_{t-1} + rate_t dt` from `c_{-1} = previous`. Return the last calcium and the trace."""
        gamma = self.decay

        def step(previous, increment):
            current = gamma * previous + increment
            return current, current

        return jax.lax.scan(step, previous, rate * self.bin_width)

    def fluorescence(self, rate: Float[Array, "T n"]) -> Float[Array, "T n"]:
        """Expected fluorescence for a given spiking rate."""
        return jnp.exp(self.log_gain) * self.calcium(rate) + self.baseline

    def mean(self, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return self.fluorescence(self.rate(x))

    def log_prob_given_rate(
        self, y: Float[Array, "T n"], rate: Float[Array, "T n"], mask: Float[Array, "T n"]
    ) -> Float[Array, ""]:
        """Gaussian log-likelihood of fluorescence `y` around the fluorescence of `rate`."""
        return self._log_prob_given_calcium(y, self.calcium(rate), mask)

    def _log_prob_given_calcium(
        self, y: Float[Array, "T n"], calcium: Float[Array, "T n"], mask: Float[Array, "T n"]
    ) -> Float[Array, ""]:
        expected = jnp.exp(self.log_gain) * calcium + self.baseline
        residual = (y - expected) / jnp.exp(self.log_std)
        terms = -0.5 * residual**2 - self.log_std - 0.5 * jnp.log(2.0 * jnp.pi)
        return jnp.sum(jnp.where(mask > 0, terms, 0.0))

    def log_prob(self, y: Float[Array, "T n"], x: Float[Array, "T d"], mask: Float[Array, "T n"]) -> Float[Array, ""]:
        return self.log_prob_given_rate(y, self.rate(x), mask)

    def start_state(self, x_first: Float[Array, " d"]) -> Float[Array, " n"]:
        """Return the calcium before the first bin, `c_{-1}`, the steady state of the rate at latent state `x_first`."""
        return self.steady_calcium(self.rate(x_first[None])[0])

    def window_log_prob(
        self, previous: Float[Array, " n"], y: Float[Array, "L n"], x: Float[Array, "L d"], mask: Float[Array, "L n"]
    ) -> tuple[Float[Array, " n"], Float[Array, ""]]:
        """Return the calcium after a window of bins and the window's log likelihood, from calcium `previous`.

        The log likelihoods of consecutive windows, run from `start_state(x[0])`, sum to `log_prob` over the trial.
        """
        last, trace = self.run_calcium(previous, self.rate(x))
        return last, self._log_prob_given_calcium(y, trace, mask)

    def sample(self, key: PRNGKeyArray, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return self.sample_around(key, self.mean(x))

    def sample_around(self, key: PRNGKeyArray, mean: Float[Array, "... n"]) -> Float[Array, "... n"]:
        """Add the Gaussian measurement noise to expected fluorescence `mean`."""
        return mean + jnp.exp(self.log_std) * jax.random.normal(key, mean.shape, mean.dtype)
