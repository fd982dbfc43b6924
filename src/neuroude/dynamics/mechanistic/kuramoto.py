"""Kuramoto model of coupled phase oscillators."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ...errors import ConfigError
from ..parameters import Constant
from .base import ConstantSpec, init_constants

# 10 rad/s is close to the critical coupling sqrt(8/pi) * spread = 10.0 rad/s
# of the default normal frequency distribution (spread 2 pi rad/s).
CONSTANTS = {
    "coupling": ConstantSpec(10.0, unit="rad/s"),
}

# Initial weight (rad/s per unit of encoded input) of the input added to every phase velocity.
INPUT_SCALE = 0.5

# Terms that `Kuramoto.drift_with` can replace by a closure.
TERMS = {
    "coupling": "coupling function H(theta_j - theta_i), sin in the Kuramoto model, a phase difference in rad -> scalar",
}

# Input and output size of each term, in the convention of eqx.nn.MLP ("scalar" is a 0-d array).
TERM_SIZES = {"coupling": ("scalar", "scalar")}

# Terms that are 2 pi-periodic in their input. A network that replaces one should read (sin z, cos z), not z,
# because the phases are not wrapped and their differences leave any range seen in training.
PERIODIC_TERMS = ("coupling",)


class Kuramoto(eqx.Module):
    """Kuramoto drift in seconds.

        dtheta_i/dt = omega_i + (K / N) sum_j sin(theta_j - theta_i) + (B u)_i

    `theta` (N) are the phases (rad), `omega` (N, rad/s) the learnable natural
    frequencies, `K` (`coupling`, rad/s, positive) the global coupling and `B`
    (N x inputs, starting at 0.5 rad/s per unit for every oscillator) the
    input weights. The coupling term is computed through the mean field
    `R e^{i psi} = (1/N) sum_j e^{i theta_j}` as `K R sin(psi - theta_i)`, which
    costs O(N) instead of O(N^2).

    For large N with natural frequencies drawn from a density g that is
    unimodal and symmetric about its centre Omega, the incoherent state loses
    stability at `K_c = 2 / (pi g(Omega))` (Kuramoto 1984, Chemical
    Oscillations, Waves, and Turbulence). For a Lorentzian of half-width gamma,
    `K_c = 2 gamma` and the stationary order parameter is `R = sqrt(1 - K_c / K)`
    above it.

    `frequencies` (rad/s) sets omega directly. Otherwise omega is drawn with
    `key` from a normal distribution with mean `mean_frequency` (default
    2 pi 10 rad/s, a 10 Hz rhythm) and standard deviation `frequency_spread`
    (default 2 pi rad/s). All phases are observable, but a phase is defined
    only modulo 2 pi, so an observation model should read `sin(theta)` and
    `cos(theta)` rather than theta itself.

    `coupling` is a `Constant`: pass `frozen=("coupling",)` to keep it fixed.

    `drift_with` replaces the coupling function sin by another function H
    (a neural closure), evaluated pairwise at O(N^2) cost.
    """

    coupling: Constant
    omega: Float[Array, " n"]
    B: Float[Array, "n m"]
    observable: tuple[int, ...] = eqx.field(static=True)
    state_size: int = eqx.field(static=True)

    def __init__(
        self,
        input_size: int = 0,
        size: int | None = None,
        key: PRNGKeyArray | None = None,
        frequencies: ArrayLike | None = None,
        mean_frequency: float = 2.0 * math.pi * 10.0,
        frequency_spread: float = 2.0 * math.pi,
        frozen: tuple[str, ...] = (),
        **values: float,
    ):
        if frequencies is not None:
            omega = np.asarray(frequencies, dtype=np.float32)
            if omega.ndim != 1 or omega.size == 0 or not np.all(np.isfinite(omega)):
                raise ConfigError(
                    f"Kuramoto frequencies have shape {omega.shape}; expected a non-empty 1-D array of finite rad/s"
                )
            if size is not None and size != omega.size:
                raise ConfigError(f"Kuramoto size is {size} but {omega.size} frequencies were given; expected equal")
            size = omega.size
            self.omega = jnp.asarray(omega, dtype=jnp.float32)
        else:
            if not isinstance(size, int) or size < 1:
                raise ConfigError(f"Kuramoto size is {size!r}; expected a positive integer number of oscillators")
            if key is None:
                raise ConfigError("Kuramoto key is None and no frequencies were given; expected one of the two")
            if not math.isfinite(mean_frequency):
                raise ConfigError(f"Kuramoto mean_frequency is {mean_frequency}; expected a finite value in rad/s")
            if not (math.isfinite(frequency_spread) and frequency_spread >= 0):
                raise ConfigError(f"Kuramoto frequency_spread is {frequency_spread}; expected a finite value >= 0")
            draws = jax.random.normal(key, (size,), dtype=jnp.float32)
            self.omega = mean_frequency + frequency_spread * draws
        init_constants(self, "Kuramoto", CONSTANTS, frozen, values)

        self.B = jnp.full((size, input_size), INPUT_SCALE, dtype=jnp.float32)
        self.observable = tuple(range(size))
        self.state_size = int(size)

    def order_parameter(self, theta: Float[Array, "... n"]) -> Float[Array, "..."]:
        """Return the order parameter `R = |(1/N) sum_j e^{i theta_j}|`, 0 for incoherent and 1 for locked phases."""
        return jnp.hypot(jnp.mean(jnp.cos(theta), axis=-1), jnp.mean(jnp.sin(theta), axis=-1))

    def __call__(self, t, x: Float[Array, " n"], u: Float[Array, " m"]) -> Float[Array, " n"]:
        return self.drift_with(t, x, u, {})

    def drift_with(
        self, t, x: Float[Array, " n"], u: Float[Array, " m"], closures: Mapping[str, Callable]
    ) -> Float[Array, " n"]:
        """Evaluate the drift with the coupling function replaced when `closures` names it.

            dtheta_i/dt = omega_i + (K / N) sum_j H(theta_j - theta_i) + (B u)_i

        `closures["coupling"]` is H. It is called on one phase difference
        (a 0-d array, rad) at a time for all N^2 ordered pairs, the diagonal
        `j = i` included, so the cost is O(N^2). The mean-field form of the
        mechanistic model relies on H = sin and does not apply. A constant part
        of H, such as H(0) != 0, adds `K H(0)` to every natural frequency, and
        K scales H, so only the product K H is identifiable from data.
        Without a closure the drift is the mechanistic O(N) form, and
        `drift_with(t, x, u, {})` returns `self(t, x, u)` bit for bit.
        Raises ConfigError for a name that is not in `TERMS`.
        """
        unknown = sorted(set(closures) - set(TERMS))
        if unknown:
            raise ConfigError(f"unknown Kuramoto closure terms {unknown}; expected some of {sorted(TERMS)}")

        if "coupling" in closures:
            # differences[i, j] = theta_j - theta_i, averaged over j for oscillator i.
            differences = x[None, :] - x[:, None]
            pairwise = jax.vmap(jax.vmap(closures["coupling"]))(differences)
            coupling_term = jnp.mean(pairwise, axis=1)
        else:
            mean_cos = jnp.mean(jnp.cos(x))
            mean_sin = jnp.mean(jnp.sin(x))
            # (1/N) sum_j sin(theta_j - theta_i) = mean_sin cos(theta_i) - mean_cos sin(theta_i).
            coupling_term = mean_sin * jnp.cos(x) - mean_cos * jnp.sin(x)
        return self.omega + self.coupling.value * coupling_term + self.B @ u
