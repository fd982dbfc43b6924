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

    The network's output is in standard units. With `state_location` and
    `state_scale`, `initial_state` maps it to `x0 = location + scale * z`, and
    the prior of `x0` is `N(location, diag(scale^2))` instead of `N(0, I)`.
    Models whose states have physical units (membrane potential in mV, gates
    in [0, 1]) then start near a physiological state.
    """

    cell: eqx.nn.GRUCell
    to_context: eqx.nn.Linear
    to_initial: eqx.nn.Linear
    hidden_size: int = eqx.field(static=True)
    latent_size: int = eqx.field(static=True)
    n_init_bins: int = eqx.field(static=True)
    state_location: tuple[float, ...] | None = eqx.field(static=True)
    state_scale: tuple[float, ...] | None = eqx.field(static=True)

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
        state_location: tuple[float, ...] | None = None,
        state_scale: tuple[float, ...] | None = None,
    ):
        if n_init_bins < 1:
            raise ConfigError(f"n_init_bins is {n_init_bins}; expected an integer >= 1")
        self.state_location, self.state_scale = _check_state_prior(state_location, state_scale, latent_size)
        k_cell, k_context, k_initial = jax.random.split(key, 3)
        self.cell = eqx.nn.GRUCell(observation_size + input_size, hidden_size, key=k_cell)
        self.to_context = eqx.nn.Linear(hidden_size, context_size, key=k_context)
        self.to_initial = _initial_layer(hidden_size, latent_size, k_initial)
        self.hidden_size = hidden_size
        self.latent_size = latent_size
        self.n_init_bins = n_init_bins

    def _run_backwards(self, features: Float[Array, "T f"], checkpoint_bins: int = 0) -> Float[Array, "T h"]:
        def step(hidden, feature):
            hidden = self.cell(feature, hidden)
            return hidden, hidden

        # float32 data read by a float64 model (training.precision) give a float64 hidden state.
        hidden0 = jnp.zeros(self.hidden_size, jnp.result_type(features, self.cell.weight_hh))
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
        return _initial_from_output(self.to_initial(hidden), self.state_location, self.state_scale)

    def initial_kl(self, mean: Float[Array, " d"], std: Float[Array, " d"]) -> Float[Array, ""]:
        """Return KL(N(mean, std^2) || prior of x0), the prior being N(location, scale^2) or N(0, I)."""
        return _initial_kl(mean, std, self.state_location, self.state_scale)

    def context(
        self, y: Float[Array, "T n"], drive: Float[Array, "T m"], checkpoint_bins: int = 0
    ) -> Float[Array, "T c"]:
        """Return the context sequence, aligned to forward time.

        `checkpoint_bins > 0` recomputes the GRU in segments of that many bins
        in the backward pass (see `neuroude.segments`).
        """
        hiddens = self._run_backwards(jnp.concatenate([y, drive], axis=-1), checkpoint_bins)
        return jax.vmap(self.to_context)(hiddens)


class WindowRecognition(eqx.Module):
    """Recognition model whose context at bin `k` reads only the bins `k` to `k + window_bins - 1`.

    One hidden layer, `tanh`, over the window's observations and encoded
    inputs flattened; bins past the trial's end read as zeros. The initial
    state is read the same way from the first `n_init_bins` bins, by layers
    of its own.

    Because no state runs across the trial, the context of any bin can be
    computed from the data alone, at the moment the solver needs it. With
    `solver.method: reversible_heun` this lets the whole training step run
    without storing anything per bin (`neuroude.fused`). The price is that
    the posterior drift at bin `k` reads no data beyond the window. The GRU
    of `GRURecognition` summarises every later bin.
    """

    to_hidden: eqx.nn.Linear
    to_context: eqx.nn.Linear
    first_to_hidden: eqx.nn.Linear
    to_initial: eqx.nn.Linear
    hidden_size: int = eqx.field(static=True)
    latent_size: int = eqx.field(static=True)
    feature_size: int = eqx.field(static=True)
    window_bins: int = eqx.field(static=True)
    n_init_bins: int = eqx.field(static=True)
    state_location: tuple[float, ...] | None = eqx.field(static=True)
    state_scale: tuple[float, ...] | None = eqx.field(static=True)

    def __init__(
        self,
        observation_size: int,
        input_size: int,
        latent_size: int,
        hidden_size: int = 64,
        context_size: int = 16,
        n_init_bins: int = 10,
        window_bins: int = 10,
        *,
        key: PRNGKeyArray,
        state_location: tuple[float, ...] | None = None,
        state_scale: tuple[float, ...] | None = None,
    ):
        if n_init_bins < 1:
            raise ConfigError(f"n_init_bins is {n_init_bins}; expected an integer >= 1")
        if window_bins < 1:
            raise ConfigError(f"window_bins is {window_bins}; expected an integer >= 1")
        self.state_location, self.state_scale = _check_state_prior(state_location, state_scale, latent_size)
        k_hidden, k_context, k_first, k_initial = jax.random.split(key, 4)
        feature_size = observation_size + input_size
        self.to_hidden = eqx.nn.Linear(window_bins * feature_size, hidden_size, key=k_hidden)
        self.to_context = eqx.nn.Linear(hidden_size, context_size, key=k_context)
        self.first_to_hidden = eqx.nn.Linear(n_init_bins * feature_size, hidden_size, key=k_first)
        self.to_initial = _initial_layer(hidden_size, latent_size, k_initial)
        self.hidden_size = hidden_size
        self.latent_size = latent_size
        self.feature_size = feature_size
        self.window_bins = window_bins
        self.n_init_bins = n_init_bins

    def initial_state(
        self, y: Float[Array, "T n"], drive: Float[Array, "T m"]
    ) -> tuple[Float[Array, " d"], Float[Array, " d"]]:
        """Return mean and standard deviation of `q(x0 | y[:n_init_bins])`."""
        features = _pad_rows(jnp.concatenate([y, drive], axis=-1)[: self.n_init_bins], self.n_init_bins)
        hidden = jnp.tanh(self.first_to_hidden(features.reshape(-1)))
        return _initial_from_output(self.to_initial(hidden), self.state_location, self.state_scale)

    def initial_kl(self, mean: Float[Array, " d"], std: Float[Array, " d"]) -> Float[Array, ""]:
        """Return KL(N(mean, std^2) || prior of x0), the prior being N(location, scale^2) or N(0, I)."""
        return _initial_kl(mean, std, self.state_location, self.state_scale)

    def context_at(self, window: Float[Array, "W f"]) -> Float[Array, " c"]:
        """Return the context of the window's first bin from its `window_bins` rows of features (zeros past the end)."""
        return self.to_context(jnp.tanh(self.to_hidden(window.reshape(-1))))

    def context(
        self, y: Float[Array, "T n"], drive: Float[Array, "T m"], checkpoint_bins: int = 0
    ) -> Float[Array, "T c"]:
        """Return the context at every bin, aligned to forward time.

        `checkpoint_bins` is accepted for the interface of `GRURecognition`. The
        window network stores no state across bins, so it has nothing to recompute.
        """
        features = jnp.concatenate([y, drive], axis=-1)
        n_bins = features.shape[0]
        padded = jnp.concatenate([features, jnp.zeros((self.window_bins - 1, self.feature_size), features.dtype)])
        # The first layer is a convolution in time: a sum over window offsets of one matrix product each.
        weight = self.to_hidden.weight.reshape(self.hidden_size, self.window_bins, self.feature_size)
        hidden = self.to_hidden.bias + sum(
            padded[offset : offset + n_bins] @ weight[:, offset].T for offset in range(self.window_bins)
        )
        return jax.vmap(self.to_context)(jnp.tanh(hidden))


def _initial_layer(hidden_size: int, latent_size: int, key) -> eqx.nn.Linear:
    """Return the layer from hidden units to the mean and log standard deviation of q(x0), with small weights."""
    layer = eqx.nn.Linear(hidden_size, 2 * latent_size, key=key)
    return eqx.tree_at(lambda lin: lin.weight, layer, layer.weight * 0.1)


def _pad_rows(rows: Float[Array, "L f"], count: int) -> Float[Array, "count f"]:
    """Return `rows` with zero rows appended up to `count` rows."""
    missing = count - rows.shape[0]
    if missing <= 0:
        return rows
    return jnp.concatenate([rows, jnp.zeros((missing, rows.shape[1]), rows.dtype)])


def _initial_from_output(output: Float[Array, " 2d"], location, scale):
    """Split a network output into the mean and standard deviation of q(x0), mapped to the state prior's units."""
    mean, log_std = jnp.split(output, 2)
    std = jnp.exp(jnp.clip(log_std, -7.0, 3.0))
    if location is None:
        return mean, std
    scale = jnp.asarray(scale, mean.dtype)
    return jnp.asarray(location, mean.dtype) + scale * mean, scale * std


def _initial_kl(mean, std, location, scale) -> Float[Array, ""]:
    if location is not None:
        scale = jnp.asarray(scale, mean.dtype)
        mean = (mean - jnp.asarray(location, mean.dtype)) / scale
        std = std / scale
    return standard_normal_kl(mean, std)


def _check_state_prior(location, scale, latent_size: int):
    if location is None and scale is None:
        return None, None
    if location is None or scale is None:
        raise ConfigError("state_location and state_scale must be given together; one of them is None")
    location, scale = tuple(float(v) for v in location), tuple(float(v) for v in scale)
    if len(location) != latent_size or len(scale) != latent_size:
        raise ConfigError(
            f"state_location has {len(location)} and state_scale {len(scale)} entries; expected {latent_size} each, "
            "one per latent state"
        )
    if not all(value > 0 for value in scale):
        raise ConfigError(f"state_scale is {scale}; expected positive numbers")
    return location, scale


def standard_normal_kl(mean: Float[Array, " d"], std: Float[Array, " d"]) -> Float[Array, ""]:
    """Return KL(N(mean, std^2) || N(0, I)) summed over states."""
    return jnp.sum(0.5 * (mean**2 + std**2 - 1.0) - jnp.log(std))


def initial_state_kl(recognition, mean: Float[Array, " d"], std: Float[Array, " d"]) -> Float[Array, ""]:
    """Return the KL of q(x0 | y) from the recognition model's prior of x0.

    A recognition model without an `initial_kl` method (a user's own, or a test
    stand-in) has the standard normal prior.
    """
    if hasattr(recognition, "initial_kl"):
        return recognition.initial_kl(mean, std)
    return standard_normal_kl(mean, std)

