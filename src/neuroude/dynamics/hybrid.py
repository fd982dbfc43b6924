"""Grey-box drifts: a mechanistic model plus what a network learns it misses."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..errors import ConfigError


class ResidualDrift(eqx.Module):
    """Additive residual: `f(x, u) = f_mech(x, u) + MLP([x, u])`.

    The network's last layer starts at zero, so fitting begins from the
    mechanistic model exactly. `residual_penalty` weighs the mean squared size of
    the residual along the posterior path in the loss, so the network does not
    absorb what the mechanistic part can explain.
    """

    mechanistic: eqx.Module
    residual: eqx.nn.MLP
    residual_penalty: float = eqx.field(static=True)
    state_size: int = eqx.field(static=True)

    def __init__(
        self,
        mechanistic: eqx.Module,
        input_size: int,
        width: int = 32,
        depth: int = 2,
        residual_penalty: float = 0.0,
        *,
        key: PRNGKeyArray,
    ):
        if residual_penalty < 0:
            raise ConfigError(f"residual_penalty is {residual_penalty}; expected a value >= 0")
        state_size = mechanistic.state_size
        mlp = eqx.nn.MLP(state_size + input_size, state_size, width, depth, activation=jax.nn.softplus, key=key)
        last = mlp.layers[-1]
        self.residual = eqx.tree_at(
            lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp, (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias))
        )
        self.mechanistic = mechanistic
        self.residual_penalty = float(residual_penalty)
        self.state_size = state_size

    def residual_term(self, t, x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, " d"]:
        return self.residual(jnp.concatenate([x, u]))

    def __call__(self, t, x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, " d"]:
        return self.mechanistic(t, x, u) + self.residual_term(t, x, u)
