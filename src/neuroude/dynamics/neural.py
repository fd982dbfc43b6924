"""Network drifts and diffusions (black box).

Every vector field here is called as `f(t, x, u)` with `x` of shape
(state_size,) and `u` of shape (input_size,), and returns an array shaped like
`x`. Diffusions are diagonal: they return the per-state noise scale `sigma(x, u)`.

Euler-Maruyama converges to the Ito solution and Heun to the Stratonovich one.
The two differ exactly when some `sigma_i` depends on `x_i`, by the drift
correction `0.5 * sigma_i * d sigma_i / d x_i` (see `noise.py`):

- `AdditiveDiffusion`, `InputScaledDiffusion`: sigma does not depend on x, so
  both methods solve the same SDE.
- `NetworkDiffusion`, `MultiplicativeDiffusion`: sigma_i depends on x_i, so the
  choice of method is a choice of SDE. Use `ito_to_stratonovich_drift` to
  integrate an Ito model with Heun.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..errors import ConfigError


def _check_sizes(**sizes: int) -> None:
    for name, size in sizes.items():
        if not isinstance(size, int) or size < 0:
            raise ConfigError(f"{name} is {size!r}; expected a non-negative integer")


class NeuralDrift(eqx.Module):
    """Black-box drift in leaky form: `f(x, u) = (-x + MLP([x, u])) / tau`.

    `tau` (seconds) sets the time scale the network starts from, so the fit does
    not have to grow weights by orders of magnitude to reach the dynamics of a
    neuron or circuit. The leak keeps an untrained model stable. With
    `leak=False` the drift is `MLP([x, u]) / tau`.
    """

    mlp: eqx.nn.MLP
    state_size: int = eqx.field(static=True)
    input_size: int = eqx.field(static=True)
    time_constant: float = eqx.field(static=True)
    leak: bool = eqx.field(static=True)

    def __init__(
        self,
        state_size: int,
        input_size: int,
        width: int = 64,
        depth: int = 2,
        time_constant: float = 1.0,
        leak: bool = True,
        *,
        key: PRNGKeyArray,
    ):
        _check_sizes(state_size=state_size, input_size=input_size, width=width, depth=depth)
        if not time_constant > 0:
            raise ConfigError(f"time_constant is {time_constant}; expected a duration in seconds > 0")
        self.mlp = eqx.nn.MLP(state_size + input_size, state_size, width, depth, activation=jax.nn.softplus, key=key)
        self.state_size = state_size
        self.input_size = input_size
        self.time_constant = float(time_constant)
        self.leak = bool(leak)

    def __call__(self, t: Float[Array, ""], x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, " d"]:
        flow = self.mlp(jnp.concatenate([x, u]))
        if self.leak:
            flow = flow - x
        return flow / self.time_constant


class AdditiveDiffusion(eqx.Module):
    """Additive diagonal noise: one learnable scale per state, `sigma_i = softplus(s_i)`."""

    raw_scale: Float[Array, " d"]

    def __init__(self, state_size: int, scale: float = 0.1):
        _check_sizes(state_size=state_size)
        if not scale > 0:
            raise ConfigError(f"diffusion scale is {scale}; expected a value > 0")
        self.raw_scale = jnp.full((state_size,), jnp.log(jnp.expm1(scale)), dtype=jnp.float32)

    def __call__(self, t, x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, " d"]:
        return jax.nn.softplus(self.raw_scale)


class NetworkDiffusion(eqx.Module):
    """State-dependent diagonal noise from one small network per state.

    `sigma_i(x_i, u) = max_scale * sigmoid(w2_i . softplus(W1_i [x_i, u] + b1_i) + b2_i) + floor`.
    Each state's scale depends on its own coordinate (and on the input when
    `uses_input`), which keeps the noise diagonal. The networks of all states are
    evaluated as one batched contraction instead of a Python loop.
    The floor keeps sigma away from 0, where the path KL would diverge.
    """

    weight_in: Float[Array, "d h k"]
    bias_in: Float[Array, "d h"]
    weight_out: Float[Array, "d h"]
    bias_out: Float[Array, " d"]
    uses_input: bool = eqx.field(static=True)
    max_scale: float = eqx.field(static=True)
    floor: float = eqx.field(static=True)

    def __init__(
        self,
        state_size: int,
        input_size: int = 0,
        width: int = 16,
        uses_input: bool = False,
        max_scale: float = 1.0,
        floor: float = 1e-3,
        *,
        key: PRNGKeyArray,
    ):
        _check_sizes(state_size=state_size, input_size=input_size, width=width)
        if not max_scale > 0:
            raise ConfigError(f"max_scale is {max_scale}; expected a value > 0")
        fan_in = 1 + (input_size if uses_input else 0)
        k_in, k_out = jax.random.split(key)
        self.weight_in = jax.random.normal(k_in, (state_size, width, fan_in)) / jnp.sqrt(fan_in)
        self.bias_in = jnp.zeros((state_size, width))
        self.weight_out = jax.random.normal(k_out, (state_size, width)) / jnp.sqrt(width)
        self.bias_out = jnp.full((state_size,), -1.0, dtype=jnp.float32)
        self.uses_input = uses_input
        self.max_scale = float(max_scale)
        self.floor = float(floor)

    def __call__(self, t, x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, " d"]:
        features = x[:, None]
        if self.uses_input:
            features = jnp.concatenate([features, jnp.broadcast_to(u, (x.shape[0], u.shape[0]))], axis=1)
        hidden = jax.nn.softplus(jnp.einsum("dhk,dk->dh", self.weight_in, features) + self.bias_in)
        logits = jnp.sum(self.weight_out * hidden, axis=1) + self.bias_out
        return self.max_scale * jax.nn.sigmoid(logits) + self.floor


class InputScaledDiffusion(eqx.Module):
    """Additive noise modulated by the input: `sigma_i = softplus(s_i + v_i . u)`."""

    raw_scale: Float[Array, " d"]
    input_weight: Float[Array, "d m"]

    def __init__(self, state_size: int, input_size: int, scale: float = 0.1):
        _check_sizes(state_size=state_size, input_size=input_size)
        if not scale > 0:
            raise ConfigError(f"diffusion scale is {scale}; expected a value > 0")
        self.raw_scale = jnp.full((state_size,), jnp.log(jnp.expm1(scale)), dtype=jnp.float32)
        self.input_weight = jnp.zeros((state_size, input_size))

    def __call__(self, t, x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, " d"]:
        return jax.nn.softplus(self.raw_scale + self.input_weight @ u)


class MultiplicativeDiffusion(eqx.Module):
    """Multiplicative diagonal noise: `sigma_i(x) = s_i * |x_i| + floor`, with `s_i = softplus(r_i) > 0` learnable.

    With `floor = 0` and `x_i > 0` this is the noise of geometric Brownian
    motion. The floor (default 1e-3, in the units of x per sqrt(second)) keeps
    sigma above 0 at `x_i = 0`, where the path KL, which divides by sigma, would
    diverge. Because sigma_i depends on x_i, Euler-Maruyama (Ito) and Heun
    (Stratonovich) solve different SDEs. The Ito-to-Stratonovich drift
    correction is `-0.5 * s_i * sign(x_i) * sigma_i(x)`.
    """

    raw_scale: Float[Array, " d"]
    floor: float = eqx.field(static=True)

    def __init__(self, state_size: int, scale: float = 0.1, floor: float = 1e-3):
        _check_sizes(state_size=state_size)
        if not scale > 0:
            raise ConfigError(f"diffusion scale is {scale}; expected a value > 0")
        if not floor > 0:
            raise ConfigError(f"diffusion floor is {floor}; expected a value > 0, because the path KL divides by sigma")
        self.raw_scale = jnp.full((state_size,), jnp.log(jnp.expm1(scale)), dtype=jnp.float32)
        self.floor = float(floor)

    def __call__(self, t, x: Float[Array, " d"], u: Float[Array, " m"]) -> Float[Array, " d"]:
        return jax.nn.softplus(self.raw_scale) * jnp.abs(x) + self.floor
