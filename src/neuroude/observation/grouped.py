"""Several modalities at once: channel groups, each with its own observation model."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..errors import ConfigError
from .windows import can_run_windows, start_state, window_log_prob


def check_channel_groups(channels: tuple[tuple[int, ...], ...], n_channels: int) -> None:
    """Raise ConfigError unless the groups split the channels 0 .. n_channels - 1, each channel in exactly one group."""
    listed = [index for group in channels for index in group]
    out_of_range = sorted({index for index in listed if not 0 <= index < n_channels})
    if out_of_range:
        raise ConfigError(
            f"model.channel_groups lists channels {out_of_range}; the recording has channels 0 to {n_channels - 1}"
        )
    repeated = sorted({index for index in listed if listed.count(index) > 1})
    if repeated:
        raise ConfigError(f"model.channel_groups lists channels {repeated} in more than one group; expected each once")
    missing = sorted(set(range(n_channels)) - set(listed))
    if missing:
        raise ConfigError(
            f"model.channel_groups leaves channels {missing} without an observation model; add them to a group"
        )


class GroupedObservation(eqx.Module):
    """`log p(y | x) = sum_g log p_g(y[:, channels_g] | x)`: independent likelihoods on disjoint channel groups.

    For example spike counts of some channels and fluorescence or behaviour-like traces of others,
    all read from the same latent path.
    """

    groups: tuple[eqx.Module, ...]
    channels: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    n_channels: int = eqx.field(static=True)

    def __init__(self, groups, channels, n_channels: int):
        channels = tuple(tuple(int(index) for index in group) for group in channels)
        if len(groups) != len(channels):
            raise ConfigError(f"{len(groups)} observation models were given for {len(channels)} channel groups")
        check_channel_groups(channels, n_channels)
        self.groups = tuple(groups)
        self.channels = channels
        self.n_channels = n_channels

    def _scatter(self, parts) -> Float[Array, "... n"]:
        shape = parts[0].shape[:-1] + (self.n_channels,)
        out = jnp.zeros(shape, parts[0].dtype)
        for index, part in zip(self.channels, parts):
            out = out.at[..., jnp.asarray(index)].set(part)
        return out

    def mean(self, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        return self._scatter([group.mean(x) for group in self.groups])

    def log_prob(self, y: Float[Array, "T n"], x: Float[Array, "T d"], mask: Float[Array, "T n"]) -> Float[Array, ""]:
        total = jnp.zeros((), y.dtype)
        for group, index in zip(self.groups, self.channels):
            columns = jnp.asarray(index)
            total = total + group.log_prob(y[:, columns], x, mask[:, columns])
        return total

    @property
    def time_separable(self) -> bool:
        """Whether every group's log likelihood is a sum over bins."""
        return all(getattr(group, "time_separable", False) for group in self.groups)

    @property
    def windowed(self) -> bool:
        """Whether every group's log likelihood can be computed window by window (see `observation.windows`)."""
        return all(can_run_windows(group) for group in self.groups)

    def start_state(self, x_first: Float[Array, " d"]) -> tuple:
        """Return each group's state before the first bin, which is `()` for a time-separable group."""
        return tuple(start_state(group, x_first) for group in self.groups)

    def window_log_prob(
        self, states: tuple, y: Float[Array, "L n"], x: Float[Array, "L d"], mask: Float[Array, "L n"]
    ) -> tuple[tuple, Float[Array, ""]]:
        """Return each group's state after a window of bins and the window's summed log likelihood."""
        total = jnp.zeros((), y.dtype)
        new_states = []
        for group, index, state in zip(self.groups, self.channels, states):
            columns = jnp.asarray(index)
            state, value = window_log_prob(group, state, y[:, columns], x, mask[:, columns])
            new_states.append(state)
            total = total + value
        return tuple(new_states), total

    def sample(self, key: PRNGKeyArray, x: Float[Array, "T d"]) -> Float[Array, "T n"]:
        keys = jax.random.split(key, len(self.groups))
        return self._scatter([group.sample(k, x) for group, k in zip(self.groups, keys)])

    def sample_around(self, key: PRNGKeyArray, mean: Float[Array, "... n"]) -> Float[Array, "... n"]:
        """Draw observations around expected values `mean`, each group with its own noise."""
        keys = jax.random.split(key, len(self.groups))
        parts = [
            group.sample_around(k, mean[..., jnp.asarray(index)])
            for group, k, index in zip(self.groups, keys, self.channels)
        ]
        return self._scatter(parts)
