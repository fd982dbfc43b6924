"""Recognition model: the amortised posterior over the initial state and a context sequence."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .errors import ConfigError
from .segments import checkpointed_scan


class GRURecognition(eqx.Module):
    """Backward GRU over observations and encoded inputs.

    Run from the last bin to the first, the GRU's hidden state at bin `k`
    summarises `y[k:]`. A linear map of it is the context that steers the
    posterior drift at bin `k`. The Gaussian `q(x0 | y)` is read from a second
    pass of the same GRU over only the first `n_init_bins` bins. The initial
    state is thus inferred the same way in training and on held-out trials,
    where the model may read only those bins.
    """

    cell: eqx.nn.GRUCell
    to_context: eqx.nn.Linear
    to_initial: eqx.nn.Linear
    hidden_size: int = eqx.field(static=True)
    latent_size: int = eqx.field(static=True)
    n_init_bins: int = eqx.field(static=True)

    def __init__(
        self,
        observation_size: int,
        input_size: int,
        latent_size: int,
        hidden_size: int = 64,
        context_size: int = 16,
        n_init_bins: int = 10,
        *,
        key: PRNGKeyArray,
    ):
        if n_init_bins < 1:
            raise ConfigError(f"n_init_bins is {n_init_bins}; expected an integer >= 1")
        k_cell, k_context, k_initial = jax.random.split(key, 3)
        self.cell = eqx.nn.GRUCell(observation_size + input_size, hidden_size, key=k_cell)
        self.to_context = eqx.nn.Linear(hidden_size, context_size, key=k_context)
        to_initial = eqx.nn.Linear(hidden_size, 2 * latent_size, key=k_initial)
        self.to_initial = eqx.tree_at(lambda lin: lin.weight, to_initial, to_initial.weight * 0.1)
        self.hidden_size = hidden_size
        self.latent_size = latent_size
        self.n_init_bins = n_init_bins

    def _run_backwards(self, features: Float[Array, "T f"], checkpoint_bins: int = 0) -> Float[Array, "T h"]:
        def step(hidden, feature):
            hidden = self.cell(feature, hidden)
            return hidden, hidden

        hidden0 = jnp.zeros(self.hidden_size, features.dtype)
        _, hiddens = checkpointed_scan(step, hidden0, features[::-1], checkpoint_bins)
        return hiddens[::-1]

    def run_window(
        self, hidden: Float[Array, " h"], features: Float[Array, "L f"], valid: Float[Array, " L"]
    ) -> tuple[Float[Array, " h"], Float[Array, "L h"]]:
        """Run the GRU backwards over one window of bins, starting from the state `hidden` right of it.

        `hidden` summarises the bins after the window. Returns the state at the
        window's first bin and the states at every bin, in forward order. Bins
        with `valid` False (padding past the end of a trial) leave the state unchanged.
        """

        def step(hidden, inputs):
            feature, keep = inputs
            hidden = jnp.where(keep, self.cell(feature, hidden), hidden)
            return hidden, hidden

        first, hiddens = jax.lax.scan(step, hidden, (features, valid), reverse=True)
        return first, hiddens

    def initial_state(
        self, y: Float[Array, "T n"], drive: Float[Array, "T m"]
    ) -> tuple[Float[Array, " d"], Float[Array, " d"]]:
        """Return mean and standard deviation of `q(x0 | y[:n_init_bins])`."""
        features = jnp.concatenate([y, drive], axis=-1)[: self.n_init_bins]
        hidden = self._run_backwards(features)[0]
        mean, log_std = jnp.split(self.to_initial(hidden), 2)
        return mean, jnp.exp(jnp.clip(log_std, -7.0, 3.0))

    def context(
        self, y: Float[Array, "T n"], drive: Float[Array, "T m"], checkpoint_bins: int = 0
    ) -> Float[Array, "T c"]:
        """Return the context sequence, aligned to forward time.

        `checkpoint_bins > 0` recomputes the GRU in segments of that many bins
        in the backward pass (see `neuroude.segments`).
        """
        hiddens = self._run_backwards(jnp.concatenate([y, drive], axis=-1), checkpoint_bins)
        return jax.vmap(self.to_context)(hiddens)
